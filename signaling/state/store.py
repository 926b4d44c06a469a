"""The session state shared by everything that serves a session, behind one interface.

A store holds the sessions, their endpoints (role, join token, admitted or in the waiting
room, which server holds each), which endpoint holds which join token now, the join-token
bindings, the cluster-wide revocations and join limits. It knows nothing of sockets: the
connection side of an endpoint (WebSocket, queues) belongs to the server that holds it
(signaling/local.py). Every method takes and returns plain values or frozen records, never
a reference to the store's own state, so the in-memory store (memory.py) and the shared one
(redis.py, issue #15) are interchangeable. Each write is one step: its checks and its change
cannot be split by another writer (a Lua script in Redis).

The methods are coroutines because a shared store answers over the network; the in-memory
one never suspends. `session_count` stays synchronous (metrics, /healthz): a shared store
may answer it from a value it refreshes in the background.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple, Protocol


@dataclass(frozen=True)
class Member:
    """One endpoint of a session as the store records it."""

    session: str
    endpoint_id: str
    role: str
    jti: str  # the join token this endpoint descends from
    admitted: bool  # False while a patient waits in the waiting room
    server: str = ""  # id of the server holding it ("" for a single server)

    def info(self) -> dict[str, Any]:
        return {"endpoint_id": self.endpoint_id, "role": self.role, "admitted": self.admitted}


class Refused(Enum):
    """Why `SessionStore.add` refused a new endpoint (the value is the reject reason)."""

    SERVER_FULL = "server-full"
    SESSION_FULL = "session-full"
    PATIENT_PRESENT = "patient-present"
    TOKEN_IN_USE = "token-in-use"  # add_join: the join token is bound to another endpoint


class Prejoin(NamedTuple):
    """What a join reads before it changes anything (`SessionStore.prejoin`)."""

    allowed: bool  # the cluster's per-IP join bucket had a token
    revoked: bool  # one of the jtis is revoked on some server of the cluster
    present: Member | None  # the endpoint's record, if the store has it
    owner: tuple[str, str] | None  # `owner(root)`: who descends from the join token now
    bound: tuple[str, str] | None  # `bound(root)`: the join token's binding


class StoreUnavailable(Exception):
    """The shared store cannot be reached: the server refuses new joins until it is back."""


class SessionStore(Protocol):
    def session_count(self) -> int: ...

    def available(self) -> bool:
        """False while a shared store is unreachable (the server refuses joins, /healthz 503)."""
        ...

    async def has_session(self, session: str) -> bool: ...

    async def members(self, session: str) -> list[Member]:
        """The session's endpoints in the order they joined ([] for no such session)."""
        ...

    async def member(self, session: str, endpoint_id: str) -> Member | None: ...

    async def owner(self, jti: str) -> tuple[str, str] | None:
        """(session, endpoint) of the endpoint present now that descends from jti."""
        ...

    async def add(
        self, member: Member, *, max_sessions: int, max_endpoints: int
    ) -> tuple[Refused | None, bool]:
        """Add a new endpoint unless the server or the session is full or a second patient
        would join: (why refused or None, whether this started the session)."""
        ...

    async def add_join(
        self, member: Member, *, max_sessions: int, max_endpoints: int, bind_exp: float | None
    ) -> tuple[Refused | None, bool, list[Member]]:
        """`add`, and with bind_exp also `bind` member.jti to it (refused TOKEN_IN_USE, and
        nothing added, if it is bound to another endpoint), then `members`: one step."""
        ...

    async def remove(self, session: str, endpoint_id: str, server: str = "") -> bool:
        """Remove the endpoint (only if `server` still holds it, when given); True when the
        session ended with it."""
        ...

    async def admit(self, session: str, endpoint_id: str) -> Member | None:
        """Admit a waiting endpoint; None when it is not in the waiting room."""
        ...

    async def rebind(self, session: str, endpoint_id: str, jti: str) -> Member:
        """The endpoint came back with another join token: it descends from jti now."""
        ...

    async def claim(self, session: str, endpoint_id: str, server: str) -> Member | None:
        """`server` holds the endpoint from now on (it resumed there); None if it is gone."""
        ...

    async def bound(self, jti: str) -> tuple[str, str] | None:
        """(session, endpoint) the join token is bound to for its lifetime, if any."""
        ...

    async def bind(self, jti: str, session: str, endpoint_id: str, exp: float) -> tuple[str, str]:
        """Bind jti to the endpoint unless it is bound already; the binding that holds."""
        ...

    async def prejoin(
        self,
        ip: str,
        rate: float,
        burst: float,
        jtis: tuple[str, ...],
        session: str,
        eid: str,
        root: str,
    ) -> Prejoin:
        """What a join reads first, in one round trip: join_allowed, is_revoked(*jtis),
        member(session, eid), owner(root) and bound(root)."""
        ...

    async def join_allowed(self, ip: str, rate: float, burst: float) -> bool:
        """The cluster-wide per-IP join bucket (a single server keeps its own limiter)."""
        ...

    async def is_revoked(self, *jtis: str) -> bool:
        """Revoked on any server of the cluster (a single server reads its own store)."""
        ...

    async def announce_revoked(self, jti: str, ttl: float) -> None:
        """Tell every server of the cluster that jti is revoked."""
        ...


class Bus(Protocol):
    """Messages between the servers of a cluster (Redis pub/sub): one channel per server."""

    server_id: str

    async def send(self, server: str, msg: dict[str, Any]) -> None:
        """Deliver msg to `server`'s handler (at most once; lost if that server is down)."""
        ...
