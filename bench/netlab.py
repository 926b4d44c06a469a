"""A small lab of network namespaces for fault tests.

Hosts hang off a router namespace through veth pairs and a bridge. Faults are
applied in the router: nftables for random loss, bursts and blocking, and
`tc tbf` for bandwidth caps. Every address lives inside namespaces this module
creates; nothing is routed off the machine. Needs root.

Rules live in two chains of the `bridge lab` table: `relay_filter` for the
standing faults of a scenario (loss, blocks) and `burst`, which the schedulers
fill and flush to switch short outages on and off without touching the rest.
The kernel here has no `netem`, so there is no delay or jitter emulation.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

SUBNET = "10.231.7"
PREFIX = "p2pl"  # namespaces "{prefix}-{host}", veths "{prefix}{n}r" / "{prefix}{n}h"


def sh(*args: str, ns: str | None = None, check: bool = True) -> str:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return out.stdout


def nft(script: str, ns: str) -> None:
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        input=script,
        text=True,
        capture_output=True,
        timeout=20,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"nft failed: {proc.stderr.strip()}\n{script}")


@dataclass
class Host:
    name: str
    ns: str
    addr: str
    index: int

    prefix: str = PREFIX

    @property
    def veth(self) -> str:
        """The host side of its veth pair (inside the host namespace)."""
        return f"{self.prefix}{self.index}h"


@dataclass
class NetLab:
    """One lab; labs with different prefixes can run side by side."""

    prefix: str = PREFIX
    hosts: dict[str, Host] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.prefix.isalnum() and len(self.prefix) <= 8):
            raise ValueError("lab prefix must be 1..8 letters or digits")
        self.router = f"{self.prefix}-router"

    def nft(self, script: str) -> None:
        nft(script, self.router)

    def add_host(self, name: str) -> Host:
        index = len(self.hosts) + 1
        ns = f"{self.prefix}-{name}"
        addr = f"{SUBNET}.{index + 1}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        outer, inner = f"{self.prefix}{index}r", f"{self.prefix}{index}h"
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", outer, "netns", self.router)
        sh("ip", "link", "set", inner, "netns", ns)
        sh("ip", "link", "set", outer, "master", "br0", ns=self.router)
        sh("ip", "link", "set", outer, "up", ns=self.router)
        sh("ip", "addr", "add", f"{addr}/24", "dev", inner, ns=ns)
        sh("ip", "link", "set", inner, "up", ns=ns)
        host = Host(name, ns, addr, index, self.prefix)
        self.hosts[name] = host
        return host

    def start(self) -> None:
        self.cleanup()
        sh("ip", "netns", "add", self.router)
        sh("ip", "link", "set", "lo", "up", ns=self.router)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=self.router)
        sh("ip", "link", "set", "br0", "up", ns=self.router)
        sh("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", ns=self.router, check=False)
        self.nft(
            "table bridge lab {\n"
            "  chain burst { }\n"
            "  chain outage { }\n"
            "  chain relay_filter { type filter hook forward priority 0; policy accept;\n"
            "    jump burst\n"
            "    jump outage\n"
            "  }\n"
            "}\n"
        )

    def namespaces(self) -> list[str]:
        names = []
        for line in sh("ip", "netns", "list", check=False).splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith(self.prefix + "-"):
                names.append(name)
        return names

    def cleanup(self) -> None:
        """Kill what still runs inside the lab's namespaces (by pid), then delete them."""
        names = self.namespaces()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = [p for ns in names for p in ns_pids(ns)]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 3.0
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if _alive(p)]
                time.sleep(0.05)
            if not pids:
                break
        for name in names:
            sh("ip", "netns", "del", name, check=False)

    def veth(self, host: str) -> str:
        """The router side of a host's veth pair."""
        return f"{self.prefix}{self.hosts[host].index}r"

    def _match(self, a: str, b: str | None, proto: str | None) -> str:
        parts = [f'iifname "{self.veth(a)}"']
        if b is not None:
            parts.append(f'oifname "{self.veth(b)}"')
        if proto:
            parts.append(f"meta l4proto {proto}")
        return " ".join(parts)

    def rule(self, text: str, chain: str = "relay_filter") -> None:
        self.nft(f"add rule bridge lab {chain} {text}\n")

    def clear_rules(self) -> None:
        self.nft(
            "flush chain bridge lab relay_filter\n"
            "add rule bridge lab relay_filter jump burst\n"
            "add rule bridge lab relay_filter jump outage\n"
        )
        self.burst_off("burst")
        self.burst_off("outage")

    def loss(self, a: str | None, b: str | None, percent: float, proto: str | None = None) -> None:
        """Drop `percent` of packets from a (to b), both directions when b is given; a=None:
        every packet crossing the router (each crosses it once)."""
        per_mille = int(percent * 10)
        if a is None:
            self.rule(f"numgen random mod 1000 < {per_mille} drop")
            return
        for src, dst in ((a, b), (b, a)) if b else ((a, None),):
            assert src is not None
            self.rule(f"{self._match(src, dst, proto)} numgen random mod 1000 < {per_mille} drop")
        if b is None:
            self.rule(f'oifname "{self.veth(a)}" numgen random mod 1000 < {per_mille} drop')

    def block(self, a: str, b: str | None = None, proto: str | None = None) -> None:
        for src, dst in ((a, b), (b, a)) if b else ((a, None),):
            if src is None:
                continue
            self.rule(f"{self._match(src, dst, proto)} drop")
        if b is None:
            suffix = f" meta l4proto {proto}" if proto else ""
            self.rule(f'oifname "{self.veth(a)}"{suffix} drop')

    def count(self, a: str, b: str, proto: str | None = None) -> None:
        """A counter (no verdict) on packets from a to b; read it with counters()."""
        self.rule(f"{self._match(a, b, proto)} counter")

    def counters(self) -> list[tuple[str, int, int]]:
        """(rule text, packets, bytes) of every counter rule in relay_filter."""
        text = sh("nft", "list", "chain", "bridge", "lab", "relay_filter", ns=self.router)
        out = []
        for line in text.splitlines():
            m = re.search(r"counter packets (\d+) bytes (\d+)", line)
            if m:
                out.append((line.strip(), int(m.group(1)), int(m.group(2))))
        return out

    def burst_on(self, hosts: Sequence[str] | None = None, chain: str = "burst") -> None:
        """Drop everything to and from `hosts` (all traffic when None) until burst_off().
        Two independent switches: chain "burst" and chain "outage"."""
        if hosts is None:
            script = f"add rule bridge lab {chain} drop\n"
        else:
            script = "".join(
                f'add rule bridge lab {chain} iifname "{self.veth(h)}" drop\n'
                f'add rule bridge lab {chain} oifname "{self.veth(h)}" drop\n'
                for h in hosts
            )
        self.nft(f"flush chain bridge lab {chain}\n" + script)

    def burst_off(self, chain: str = "burst") -> None:
        self.nft(f"flush chain bridge lab {chain}\n")

    def cap(self, host: str, rate: str) -> None:
        """Cap what the router sends towards `host` (its download) with tc tbf."""
        sh(
            "tc", "qdisc", "replace", "dev", self.veth(host), "root", "tbf",
            "rate", rate, "burst", "32kbit", "latency", "400ms", ns=self.router,
        )  # fmt: skip

    def cap_up(self, host: str, rate: str) -> None:
        """Cap what `host` sends (its upload) with tc tbf on its own veth."""
        h = self.hosts[host]
        sh(
            "tc", "qdisc", "replace", "dev", h.veth, "root", "tbf",
            "rate", rate, "burst", "32kbit", "latency", "400ms", ns=h.ns,
        )  # fmt: skip

    def argv(self, host: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[host].ns, *argv]

    def popen(self, host: str, argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            self.argv(host, argv), env=env, **kw
        )

    def wait_tcp(self, host: str, addr: str, port: int, timeout: float = 15.0) -> None:
        """Wait until a TCP connect from inside `host` to addr:port succeeds."""
        code = (
            "import socket,sys\n"
            f"s=socket.create_connection(({addr!r},{port}),timeout=0.5)\n"
            "s.close()\n"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = subprocess.run(
                self.argv(host, ["python3", "-c", code]), capture_output=True, timeout=10
            )
            if proc.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{addr}:{port} not reachable from {host} within {timeout:.0f} s")


def ns_pids(ns: str) -> list[int]:
    out = sh("ip", "netns", "pids", ns, check=False)
    return [int(x) for x in out.split() if x.isdigit()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][:1] != "Z"
    return True


@contextlib.contextmanager
def lab(*names: str, prefix: str = PREFIX) -> Iterator[NetLab]:
    net = NetLab(prefix)
    net.start()
    try:
        for name in names:
            net.add_host(name)
        yield net
    finally:
        net.cleanup()
