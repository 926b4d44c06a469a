"""The in-memory SessionStore: one server, state lost on restart (nodes resume and rejoin)."""

from __future__ import annotations

import dataclasses

from signaling.state.store import Member, Refused


class MemorySessionStore:
    def __init__(self) -> None:
        # session -> endpoint id -> record, both in join order
        self._sessions: dict[str, dict[str, Member]] = {}
        self._owners: dict[str, tuple[str, str]] = {}  # jti -> (session, endpoint) present now

    def session_count(self) -> int:
        return len(self._sessions)

    def has_session(self, session: str) -> bool:
        return session in self._sessions

    def members(self, session: str) -> list[Member]:
        return list(self._sessions.get(session, {}).values())

    def member(self, session: str, endpoint_id: str) -> Member | None:
        return self._sessions.get(session, {}).get(endpoint_id)

    def owner(self, jti: str) -> tuple[str, str] | None:
        return self._owners.get(jti)

    def add(
        self, member: Member, *, max_sessions: int, max_endpoints: int
    ) -> tuple[Refused | None, bool]:
        eps = self._sessions.get(member.session)
        if eps is None:
            if len(self._sessions) >= max_sessions:
                return Refused.SERVER_FULL, False
        else:
            if member.endpoint_id in eps:
                raise ValueError(f"endpoint {member.endpoint_id!r} is already in the session")
            if len(eps) >= max_endpoints:
                return Refused.SESSION_FULL, False
            if member.role == "patient" and any(m.role == "patient" for m in eps.values()):
                return Refused.PATIENT_PRESENT, False
        started = eps is None
        if eps is None:
            eps = self._sessions[member.session] = {}
        eps[member.endpoint_id] = member
        self._owners[member.jti] = (member.session, member.endpoint_id)
        return None, started

    def remove(self, session: str, endpoint_id: str) -> bool:
        eps = self._sessions.get(session)
        if eps is None:
            return False
        m = eps.pop(endpoint_id, None)
        if m is not None and self._owners.get(m.jti) == (session, endpoint_id):
            del self._owners[m.jti]
        if eps:
            return False
        del self._sessions[session]
        return True

    def admit(self, session: str, endpoint_id: str) -> Member | None:
        m = self.member(session, endpoint_id)
        if m is None or m.admitted:
            return None
        m = self._sessions[session][endpoint_id] = dataclasses.replace(m, admitted=True)
        return m

    def rebind(self, session: str, endpoint_id: str, jti: str) -> Member:
        m = self._sessions[session][endpoint_id]
        if m.jti != jti:
            self._owners.pop(m.jti, None)
            m = self._sessions[session][endpoint_id] = dataclasses.replace(m, jti=jti)
            self._owners[jti] = (session, endpoint_id)
        return m
