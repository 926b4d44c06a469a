"""Which Origins may open the WebSocket.

Never derived from the request's Host header: a DNS-rebinding page (evil.example resolving
to this server) sends a matching Host and Origin. The allowed set is the configured public
origin(s), else a default from the bind address and port, which only names IP literals and
localhost (names no attacker can point at this server from a page of their own).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def normalize(origin: str) -> str:
    """`scheme://host[:port]`, lowercase, default port dropped; ValueError if not an origin."""
    u = urlsplit(origin.strip().rstrip("/"))
    if u.scheme not in DEFAULT_PORTS or not u.hostname:
        raise ValueError(f"not an http(s) origin: {origin!r}")
    if u.path or u.query or u.fragment or u.username or u.password:
        raise ValueError(f"an origin is scheme://host[:port] only: {origin!r}")
    try:
        port = u.port
    except ValueError:
        raise ValueError(f"bad port in origin: {origin!r}") from None
    host = u.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == DEFAULT_PORTS[u.scheme]:
        return f"{u.scheme}://{host}"
    return f"{u.scheme}://{host}:{port}"


def _is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_origins(host: str, port: int, tls: bool) -> list[str]:
    """Origins of the server as reached directly: loopback names for a loopback or wildcard
    bind, the address itself for a specific one."""
    scheme = "https" if tls else "http"
    names: list[str] = []
    if _is_loopback(host) or _is_wildcard(host):
        names += LOOPBACK_NAMES
    if not _is_wildcard(host) and host != "localhost":
        try:
            ip = ipaddress.ip_address(host)
            names.append(f"[{ip}]" if ip.version == 6 else str(ip))
        except ValueError:
            names.append(host)  # a host name given as bind address: the operator named it
    return sorted({normalize(f"{scheme}://{n}:{port}") for n in names})


def allowed_origins(
    public: list[str], extra: list[str], host: str, port: int, tls: bool
) -> frozenset[str]:
    base = [normalize(o) for o in public] or default_origins(host, port, tls)
    return frozenset(base + [normalize(o) for o in extra])
