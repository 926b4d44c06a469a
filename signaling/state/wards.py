"""The ward registry: the beds of each ward, in the order they first joined, and which ward
each bed session belongs to (docs/wards.md).

Two implementations: `MemoryWardRegistry` here (one server; its methods never wait, so a
single server answers its stations in the same step as the change) and, with --redis,
`RedisWardRegistry` (wards_redis.py) shared by every server of the cluster, whose writes
that check something (the bed limit, a bed session in one ward only) are one Lua script.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

WAITING, LIVE, LINK_LOST, ENDED = "waiting", "live", "link-lost", "ended"


@dataclass(frozen=True)
class Bed:
    session: str
    state: str
    patient: str  # the patient's endpoint id
    since: float  # time.time() of the last state change
    # increases with every change of any bed (cluster-wide with Redis): a server posts a
    # change to a station only if it is newer than what that station was last sent
    version: int = 0

    def wire(self) -> dict[str, Any]:
        return {"session": self.session, "state": self.state, "patient": self.patient,
                "since": self.since, "version": self.version}  # fmt: skip

    @staticmethod
    def from_wire(d: dict[str, Any]) -> Bed:
        return Bed(
            str(d["session"]),
            str(d["state"]),
            str(d["patient"]),
            float(d["since"]),
            int(d["version"]),
        )


class MemoryWardRegistry:
    """One server's wards. Ended beds are kept for the stations, up to `keep` per ward."""

    def __init__(self) -> None:
        self._beds: dict[str, dict[str, Bed]] = {}  # ward -> bed session -> bed
        self._ward_of: dict[str, str] = {}  # bed session -> ward
        self._version = 0

    def ward_of(self, session: str) -> str | None:
        return self._ward_of.get(session)

    def beds(self, ward: str) -> list[Bed]:
        return list(self._beds.get(ward, {}).values())

    def occupied(self, ward: str) -> int:
        """Beds of the ward that are not ended."""
        return sum(1 for b in self._beds.get(ward, {}).values() if b.state != ENDED)

    def set(self, ward: str, session: str, patient: str, state: str, keep: int) -> Bed | None:
        """Record the bed's state (the session becomes a bed of `ward`); the bed if it changed."""
        self._ward_of[session] = ward
        beds = self._beds.setdefault(ward, {})
        bed = beds.get(session)
        if bed is not None and bed.state == state and bed.patient == patient:
            return None
        self._version += 1
        if bed is None:
            bed = beds[session] = Bed(session, state, patient, time.time(), self._version)
            self._prune(ward, keep)
        else:
            bed = beds[session] = replace(
                bed, state=state, patient=patient, since=time.time(), version=self._version
            )
        return bed

    def _prune(self, ward: str, keep: int) -> None:
        beds = self._beds[ward]
        ended = [b for b in beds.values() if b.state == ENDED]
        while len(beds) > keep and ended:
            gone = ended.pop(0)
            del beds[gone.session]
            self._ward_of.pop(gone.session, None)
