"""Server configuration: one dataclass, filled from CLI flags, env vars or tests."""

from __future__ import annotations

import re
import resource
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from signaling.origins import allowed_origins, normalize
from signaling.proxies import parse_cidr

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


MIN_TURN_SECRET = 24
_TURN_URL = re.compile(
    r"(?P<scheme>turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(?P<port>\d{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?"
)


def check_turn_url(url: str) -> None:
    """RFC 7065 `turn:` / `turns:` URI (host[:port][?transport=udp|tcp]); ValueError if not."""
    m = _TURN_URL.fullmatch(url)
    if m is None or (m["port"] is not None and not 1 <= int(m["port"]) <= 65535):
        raise ValueError(
            f"not a TURN URL: {url!r} (want turn:HOST[:PORT][?transport=udp|tcp] or turns:...)"
        )


@dataclass
class Limits:
    max_msg_size: int = 64 * 1024  # bytes per WebSocket message (text or binary)
    msg_rate: float = 50.0  # JSON messages per second per endpoint (token bucket)
    msg_burst: float = 200.0
    relay_rate: float = 20_000.0  # relay frames per second per endpoint
    relay_burst: float = 40_000.0
    max_endpoints_per_session: int = 8
    max_sessions: int = 1000
    max_beds_per_ward: int = 64  # beds (not ended) per ward (docs/wards.md)
    max_stations_per_ward: int = 4  # central stations per ward (each also counts per bed)
    join_rate: float = 2.0  # join attempts per second per client IP
    join_burst: float = 30.0
    max_errors: int = 20  # bad messages tolerated per connection before closing it
    queue_frames: int = 512  # relay queue per destination endpoint (frames)
    queue_bytes: int = 4 * 1024 * 1024  # ... and bytes
    join_timeout: float = 5.0  # seconds to send "join" after the upgrade
    # connections from one client IP not yet joined (counted from accept, before HTTP)
    pending_per_ip: int = 100
    handshake_timeout: float = 5.0  # seconds from accept (or the last response) to a request
    # unjoined connections from all addresses; 0: half the file descriptor limit (ulimit -n)
    max_unjoined: int = 0


@dataclass
class Config:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
    # /metrics (and /healthz) on a listener of its own, so a firewall can restrict it; None:
    # no metrics listener (the public port never serves /metrics)
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    web_dir: Path = WEB_DIR
    # WebSocket Origins allowed: the public origins (default: the bind address's, see
    # signaling/origins.py) plus allowed_origins. Never the request's own Host header.
    public_origins: list[str] = field(default_factory=list)
    allowed_origins: list[str] = field(default_factory=list)
    idle_timeout: float = 900.0  # HIPAA automatic logoff (seconds without a message)
    reconnect_grace: float = 30.0  # a dropped endpoint keeps its place this long
    # peers confirm (revocation-done) that a revoked endpoint's paths are closed within this,
    # else the audit log gets revoke-timeout
    revoke_timeout: float = 10.0
    shutdown_reconnect_ms: int = 1000  # "after_ms" sent to clients on shutdown is this...
    shutdown_reconnect_spread_ms: int = (
        4000  # ...plus a random 0..spread, so they come back spread out
    )
    issuer: str = "p2pmed-signaling"
    audience: str = "p2pmed-join"
    max_token_ttl: float = 24 * 3600.0
    # during a token key rotation: the key file tokens were signed with before (verify only)
    token_key_previous: Path | None = None
    # A joined endpoint gets a resume token of this lifetime, renewed every third of it while
    # connected, so a node that outlives its join token can still reconnect (after a server
    # restart or a network drop). Revoking the join token's jti revokes its resume tokens.
    resume_ttl: float = 3600.0
    clock_leeway: float = 5.0
    turn_secret: str | None = None
    turn_urls: list[str] = field(default_factory=list)
    turn_ttl: int = 3600
    # issue #15: a cluster shares its sessions through this Redis; None: in memory (one server)
    redis_url: str | None = None
    server_id: str = ""  # this server's name in the cluster (default: host name and port)
    # the token signing key file; None: DATA_DIR/token-key (created). A cluster needs one key
    # on every server, so --redis requires it.
    token_key: Path | None = None
    # networks of load balancers whose X-Forwarded-For names the client (proxies.py);
    # empty: trust nobody, the TCP peer is the client
    trusted_proxies: list[str] = field(default_factory=list)
    audit_checkpoint_every: int = 100
    audit_checkpoint_interval: float = 60.0
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if self.token_key_previous is not None:
            self.token_key_previous = Path(self.token_key_previous)
        if self.token_key is not None:
            self.token_key = Path(self.token_key)
        if self.redis_url is not None and self.token_key is None:
            raise ValueError(
                "--redis needs the cluster's shared token key: give --token-key FILE (or"
                " P2PMED_TOKEN_KEY), the same file on every server; a key generated per server"
                " would refuse the other servers' tokens"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key must be given together")
        for o in [*self.public_origins, *self.allowed_origins]:
            normalize(o)  # ValueError names the bad one
        self._check_turn()
        for c in self.trusted_proxies:
            parse_cidr(c)  # ValueError names the bad one
        if self.resume_ttl > self.max_token_ttl:
            raise ValueError(
                f"--resume-ttl exceeds the token lifetime cap {self.max_token_ttl:.0f} s"
            )
        lim = self.limits
        if lim.max_unjoined == 0:
            lim.max_unjoined = max(64, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2)
        for name in (
            "max_msg_size",
            "msg_rate",
            "msg_burst",
            "relay_rate",
            "relay_burst",
            "max_endpoints_per_session",
            "max_sessions",
            "join_rate",
            "join_burst",
            "max_errors",
            "queue_frames",
            "queue_bytes",
            "join_timeout",
            "pending_per_ip",
            "handshake_timeout",
            "max_unjoined",
        ):
            v = getattr(lim, name)
            if not v > 0 or v != v or v == float("inf"):
                raise ValueError(f"limit {name} must be a positive number, not {v!r}")

    def _check_turn(self) -> None:
        if self.turn_urls and not self.turn_secret:
            raise ValueError(
                "--turn-urls is set but P2PMED_TURN_SECRET is not: TURN could not authenticate"
            )
        if self.turn_urls and self.turn_secret and len(self.turn_secret) < MIN_TURN_SECRET:
            raise ValueError(
                f"P2PMED_TURN_SECRET has {len(self.turn_secret)} characters; use"
                f" {MIN_TURN_SECRET} or more (turn/run-coturn.sh refuses shorter)"
            )
        for url in self.turn_urls:
            check_turn_url(url)
        if not 60 <= self.turn_ttl <= 86400:
            raise ValueError(f"--turn-ttl must be 60..86400 s, not {self.turn_ttl}")

    @property
    def turn_on(self) -> bool:
        return bool(self.turn_urls and self.turn_secret)

    def summary(self) -> dict[str, Any]:
        """The effective configuration for the start log: no secrets."""
        web = self.web_dir if (self.web_dir / "index.html").is_file() else None
        return {
            "host": self.host,
            "port": self.port,
            "tls": self.tls_cert is not None,
            "metrics": None
            if self.metrics_port is None
            else f"{self.metrics_host}:{self.metrics_port}",
            "origins": sorted(self.origins()),
            "turn": "on" if self.turn_on else "off",
            "turn_urls": self.turn_urls,
            "turn_ttl": self.turn_ttl if self.turn_on else None,
            "data_dir": str(self.data_dir),
            "web_dir": str(web) if web else None,
            "idle_timeout": self.idle_timeout,
            "reconnect_grace": self.reconnect_grace,
            "revoke_timeout": self.revoke_timeout,
            "resume_ttl": self.resume_ttl,
            "previous_key": self.token_key_previous is not None,  # no "token" in logs
            "cluster": self.redis_url is not None,
            "server_id": self.server_id or None,
            "trusted_proxies": self.trusted_proxies,
            "limits": asdict(self.limits),
        }

    def origins(self) -> frozenset[str]:
        return allowed_origins(
            self.public_origins,
            self.allowed_origins,
            self.host,
            self.port,
            self.tls_cert is not None,
        )
