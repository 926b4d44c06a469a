"""Server configuration: one dataclass, filled from CLI flags, env vars or tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from signaling.origins import allowed_origins, normalize

WEB_DIR = Path(__file__).resolve().parent.parent / "web"


@dataclass
class Limits:
    max_msg_size: int = 64 * 1024  # bytes per WebSocket message (text or binary)
    msg_rate: float = 50.0  # JSON messages per second per endpoint (token bucket)
    msg_burst: float = 200.0
    relay_rate: float = 20_000.0  # relay frames per second per endpoint
    relay_burst: float = 40_000.0
    max_endpoints_per_session: int = 8
    max_sessions: int = 1000
    join_rate: float = 2.0  # join attempts per second per client IP
    join_burst: float = 30.0
    max_errors: int = 20  # bad messages tolerated per connection before closing it
    queue_frames: int = 512  # relay queue per destination endpoint (frames)
    queue_bytes: int = 4 * 1024 * 1024  # ... and bytes
    join_timeout: float = 5.0  # seconds to send "join" after the upgrade
    # connections from one client IP not yet joined (counted from accept, before HTTP)
    pending_per_ip: int = 100
    handshake_timeout: float = 5.0  # seconds from accept (or the last response) to a request


@dataclass
class Config:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    web_dir: Path = WEB_DIR
    # WebSocket Origins allowed: the public origins (default: the bind address's, see
    # signaling/origins.py) plus allowed_origins. Never the request's own Host header.
    public_origins: list[str] = field(default_factory=list)
    allowed_origins: list[str] = field(default_factory=list)
    idle_timeout: float = 900.0  # HIPAA automatic logoff (seconds without a message)
    reconnect_grace: float = 30.0  # a dropped endpoint keeps its place this long
    shutdown_reconnect_ms: int = 1000  # "after_ms" sent to clients on shutdown is this...
    shutdown_reconnect_spread_ms: int = (
        4000  # ...plus a random 0..spread, so they come back spread out
    )
    issuer: str = "p2pmed-signaling"
    audience: str = "p2pmed-join"
    max_token_ttl: float = 24 * 3600.0
    # A joined endpoint gets a resume token of this lifetime, renewed every third of it while
    # connected, so a node that outlives its join token can still reconnect (after a server
    # restart or a network drop). Revoking the join token's jti revokes its resume tokens.
    resume_ttl: float = 3600.0
    clock_leeway: float = 5.0
    turn_secret: str | None = None
    turn_urls: list[str] = field(default_factory=list)
    turn_ttl: int = 3600
    audit_checkpoint_every: int = 100
    audit_checkpoint_interval: float = 60.0
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key must be given together")
        for o in [*self.public_origins, *self.allowed_origins]:
            normalize(o)  # ValueError names the bad one

    def origins(self) -> frozenset[str]:
        return allowed_origins(
            self.public_origins,
            self.allowed_origins,
            self.host,
            self.port,
            self.tls_cert is not None,
        )
