"""The client's address behind a load balancer (`--trusted-proxy CIDR`).

Behind HAProxy every connection comes from HAProxy's address, so the per-IP limits would
put every client in one bucket. HAProxy's `option forwardfor` appends the address it saw
to X-Forwarded-For. The server believes that header only from a peer in a trusted network,
and then takes the right-most entry that is not itself a trusted proxy: entries left of it
were written by the client and may be forged. Default: no proxy trusted, the header is
ignored. A header that cannot be read (an entry that is no address, where the walk needs
it) yields the peer's own address, and is counted by the caller.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HOPS = 16  # entries read from the right; a longer chain is not believed further


def parse_cidr(text: str) -> Network:
    """One --trusted-proxy value (a bare address is a /32 or /128); ValueError naming it."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        raise ValueError(f"--trusted-proxy {text!r} is not a network (CIDR): {e}") from None


def _address(text: str) -> Address | None:
    try:
        a = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


class TrustedProxies:
    def __init__(self, cidrs: Iterable[str]) -> None:
        self.nets = [parse_cidr(c) for c in cidrs]

    def __bool__(self) -> bool:
        return bool(self.nets)

    def trusted(self, addr: Address | None) -> bool:
        return addr is not None and any(addr in n for n in self.nets)

    def trusts(self, peer: str) -> bool:
        return self.trusted(_address(peer))

    def client(self, peer: str, forwarded: list[str]) -> tuple[str, bool]:
        """(client address, whether the header was unreadable) for a request from `peer`
        with these X-Forwarded-For header values (in the order received)."""
        p = _address(peer)
        if not self.trusted(p) or not forwarded:
            return peer, False
        entries = [e for h in forwarded for e in h.split(",")]
        last = str(p)
        for raw in reversed(entries[-MAX_HOPS:]):
            a = _address(raw)
            if a is None:
                return str(p), True
            last = str(a)
            if not self.trusted(a):
                return last, False
        return last, False  # every entry read is a trusted proxy: the farthest one
