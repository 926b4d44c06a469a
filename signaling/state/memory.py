"""The in-memory SessionStore: one server, state lost on restart (nodes resume and rejoin).

Join-token bindings are the exception: they live in the data dir's SQLite (bindings.py)
when one is given, so a leaked token stays bound across a restart.
"""

from __future__ import annotations

import dataclasses
import sqlite3

from signaling.bindings import BindingStore
from signaling.state.store import Member, Prejoin, Refused, StoreUnavailable


class MemorySessionStore:
    def __init__(self, bindings: BindingStore | None = None) -> None:
        # session -> endpoint id -> record, both in join order
        self._sessions: dict[str, dict[str, Member]] = {}
        self._owners: dict[str, tuple[str, str]] = {}  # jti -> (session, endpoint) present now
        self._bindings = bindings
        self._bound: dict[str, tuple[str, str]] = {}  # without a BindingStore

    def session_count(self) -> int:
        return len(self._sessions)

    def available(self) -> bool:
        return True

    async def has_session(self, session: str) -> bool:
        return session in self._sessions

    async def members(self, session: str) -> list[Member]:
        return list(self._sessions.get(session, {}).values())

    async def member(self, session: str, endpoint_id: str) -> Member | None:
        return self._sessions.get(session, {}).get(endpoint_id)

    async def owner(self, jti: str) -> tuple[str, str] | None:
        return self._owners.get(jti)

    async def add(
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

    async def add_join(
        self, member: Member, *, max_sessions: int, max_endpoints: int, bind_exp: float | None
    ) -> tuple[Refused | None, bool, list[Member]]:
        me = (member.session, member.endpoint_id)
        if bind_exp is not None and (await self.bound(member.jti)) not in (None, me):
            return Refused.TOKEN_IN_USE, False, []
        refused, started = await self.add(
            member, max_sessions=max_sessions, max_endpoints=max_endpoints
        )
        if refused is not None:
            return refused, False, []
        if bind_exp is not None:
            try:
                await self.bind(member.jti, member.session, member.endpoint_id, bind_exp)
            except BaseException:
                await self.remove(member.session, member.endpoint_id)
                raise
        return None, started, await self.members(member.session)

    async def remove(self, session: str, endpoint_id: str, server: str = "") -> bool:
        eps = self._sessions.get(session)
        if eps is None:
            return False
        m = eps.get(endpoint_id)
        if m is not None and server and m.server != server:
            return False
        eps.pop(endpoint_id, None)
        if m is not None and self._owners.get(m.jti) == (session, endpoint_id):
            del self._owners[m.jti]
        if eps:
            return False
        del self._sessions[session]
        return True

    async def admit(self, session: str, endpoint_id: str) -> Member | None:
        m = self._sessions.get(session, {}).get(endpoint_id)
        if m is None or m.admitted:
            return None
        m = self._sessions[session][endpoint_id] = dataclasses.replace(m, admitted=True)
        return m

    async def rebind(self, session: str, endpoint_id: str, jti: str) -> Member:
        m = self._sessions[session][endpoint_id]
        if m.jti != jti:
            self._owners.pop(m.jti, None)
            m = self._sessions[session][endpoint_id] = dataclasses.replace(m, jti=jti)
            self._owners[jti] = (session, endpoint_id)
        return m

    async def claim(self, session: str, endpoint_id: str, server: str) -> Member | None:
        m = self._sessions.get(session, {}).get(endpoint_id)
        if m is None:
            return None
        m = self._sessions[session][endpoint_id] = dataclasses.replace(m, server=server)
        return m

    async def bound(self, jti: str) -> tuple[str, str] | None:
        if self._bindings is not None:
            return self._bindings.owner(jti)
        return self._bound.get(jti)

    async def bind(self, jti: str, session: str, endpoint_id: str, exp: float) -> tuple[str, str]:
        if self._bindings is not None:
            # one writer: the data dir is locked, so the check-then-insert cannot race
            try:
                self._bindings.bind(jti, session, endpoint_id, exp)
            except sqlite3.OperationalError as exc:  # disk full, I/O error: joins refused
                raise StoreUnavailable(f"token bindings: {exc}") from exc
            return self._bindings.owner(jti) or (session, endpoint_id)
        return self._bound.setdefault(jti, (session, endpoint_id))

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
        present = self._sessions.get(session, {}).get(eid)
        return Prejoin(True, False, present, self._owners.get(root), await self.bound(root))

    async def join_allowed(self, ip: str, rate: float, burst: float) -> bool:
        return True  # Joins' own per-IP limiter is the whole limit on a single server

    async def is_revoked(self, *jtis: str) -> bool:
        return False  # the Verifier reads this server's revocation store

    async def announce_revoked(self, jti: str, ttl: float) -> None:
        return None
