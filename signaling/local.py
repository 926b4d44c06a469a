"""The endpoints this server holds (connected, or away within their reconnect grace)."""

from __future__ import annotations

from signaling.endpoint import Endpoint


class LocalEndpoints:
    def __init__(self) -> None:
        # session -> endpoint id -> endpoint, both in join order
        self._sessions: dict[str, dict[str, Endpoint]] = {}
        # session -> endpoint id bytes -> endpoint: the relay's per-frame lookup
        self._routes: dict[str, dict[bytes, Endpoint]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def get(self, session: str, endpoint_id: str) -> Endpoint | None:
        return self._sessions.get(session, {}).get(endpoint_id)

    def add(self, ep: Endpoint) -> None:
        eps = self._sessions.setdefault(ep.session, {})
        if ep.id not in eps:
            self._count += 1
        eps[ep.id] = ep
        self._routes.setdefault(ep.session, {})[ep.id_bytes] = ep

    def discard(self, ep: Endpoint) -> None:
        eps = self._sessions.get(ep.session)
        if eps is None or eps.get(ep.id) is not ep:
            return
        del eps[ep.id]
        self._count -= 1
        del self._routes[ep.session][ep.id_bytes]
        if not eps:
            del self._sessions[ep.session]
            del self._routes[ep.session]

    def routes(self, session: str) -> dict[bytes, Endpoint]:
        """Endpoint id bytes -> endpoint of the session, for reading only; the dict lives as
        long as the session has an endpoint here."""
        return self._routes.get(session, {})

    def in_session(self, session: str) -> list[Endpoint]:
        return list(self._sessions.get(session, {}).values())

    def all(self) -> list[Endpoint]:
        return [e for eps in self._sessions.values() for e in eps.values()]
