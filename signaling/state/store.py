"""The session state shared by everything that serves a session, behind one interface.

A store holds the sessions, their endpoints (role, join token, admitted or in the waiting
room) and which endpoint holds which join token now. It knows nothing of sockets: the
connection side of an endpoint (WebSocket, queues) belongs to the server that holds it
(signaling/local.py). Every method takes and returns plain values or frozen records, never
a reference to the store's own state, so the in-memory store here and a shared one (issue
#15: Redis) are interchangeable. Each write is one step: its checks and its change cannot
be split by another writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol


@dataclass(frozen=True)
class Member:
    """One endpoint of a session as the store records it."""

    session: str
    endpoint_id: str
    role: str
    jti: str  # the join token this endpoint descends from
    admitted: bool  # False while a patient waits in the waiting room

    def info(self) -> dict[str, Any]:
        return {"endpoint_id": self.endpoint_id, "role": self.role, "admitted": self.admitted}


class Refused(Enum):
    """Why `SessionStore.add` refused a new endpoint (the value is the reject reason)."""

    SERVER_FULL = "server-full"
    SESSION_FULL = "session-full"
    PATIENT_PRESENT = "patient-present"


class SessionStore(Protocol):
    def session_count(self) -> int: ...

    def has_session(self, session: str) -> bool: ...

    def members(self, session: str) -> list[Member]:
        """The session's endpoints in the order they joined ([] for no such session)."""
        ...

    def member(self, session: str, endpoint_id: str) -> Member | None: ...

    def owner(self, jti: str) -> tuple[str, str] | None:
        """(session, endpoint) of the endpoint present now that descends from jti."""
        ...

    def add(
        self, member: Member, *, max_sessions: int, max_endpoints: int
    ) -> tuple[Refused | None, bool]:
        """Add a new endpoint unless the server or the session is full or a second patient
        would join: (why refused or None, whether this started the session)."""
        ...

    def remove(self, session: str, endpoint_id: str) -> bool:
        """Remove the endpoint; True when the session ended with it."""
        ...

    def admit(self, session: str, endpoint_id: str) -> Member | None:
        """Admit a waiting endpoint; None when it is not in the waiting room."""
        ...

    def rebind(self, session: str, endpoint_id: str, jti: str) -> Member:
        """The endpoint came back with another join token: it descends from jti now."""
        ...
