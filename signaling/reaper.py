"""Endpoints a dead server held (SIGKILL, power loss) that never came back elsewhere.

Their nodes normally reconnect through the load balancer and resume on another server
(joins.py takes them over). Those that do not are removed from the shared store once the
server has been dead for the reconnect grace, as its own sweep would have done: their peers
get `peer-left`, the session ends with its last endpoint. One server of the cluster does it
(a lock in Redis); the entries go into its audit chain with why "server-lost". A server
that restarts under the same id does the same, after the grace, for what its previous
process held.

Wards (wards.py): nobody is left to say that a dead server's bed lost its link, so when a
server is first seen dead its beds still held there become link-lost, and a bed reaped
becomes ended, as `disconnected` and a leave would have done; the stations hear of both.
"""

from __future__ import annotations

import contextlib
import time

from signaling import logs
from signaling.hub import Hub
from signaling.state.redis import RedisSessionStore
from signaling.state.store import StoreUnavailable
from signaling.wards import ENDED, LINK_LOST, ClusterWards


class Reaper:
    def __init__(self, hub: Hub, store: RedisSessionStore, grace: float) -> None:
        self.hub = hub
        self.store = store
        self.grace = grace
        self.started = time.time()
        self.own_done = False
        self.marked: set[str] = set()  # dead servers whose beds were marked link-lost

    async def run(self) -> None:
        with contextlib.suppress(StoreUnavailable):  # Redis away: next time
            await self._run()

    async def _run(self) -> None:
        now = time.time()
        me = self.store.server_id
        if not self.own_done and now - self.started > self.grace:
            self.own_done = True
            for session, eid in await self.store.held_by(me):
                if self.hub.local.get(session, eid) is None:
                    await self.reap_one(session, eid, me)
        dead = await self.store.dead_servers()
        self.marked &= set(dead)
        for server in dead:
            if server == me:
                continue
            if now - await self.store.dead_since(server, now) < self.grace:
                if server not in self.marked:
                    self.marked.add(server)
                    wards = self._wards()
                    if wards is not None:
                        wards.server_lost(await self.store.held_by(server), server, LINK_LOST)
                continue
            if not await self.store.lock(f"reap:{server}", 30):
                continue
            held = await self.store.held_by(server)
            for session, eid in held:
                await self.reap_one(session, eid, server)
            await self.store.forget_server(server)
            logs.event("server-reaped", server=server, endpoints=len(held))

    async def reap_one(self, session: str, eid: str, server: str) -> None:
        hub = self.hub
        m = await hub.store.member(session, eid)
        if m is None or m.server != server:
            return  # it left, or resumed elsewhere
        ended = await hub.store.remove(session, eid, server)
        hub.audit.append(
            "leave", session=session, endpoint_id=eid, role=m.role, why="server-lost", lost=server
        )
        for o in await hub.store.members(session):
            await hub.joins.tell(o, {"type": "peer-left", "endpoint_id": eid})
        if ended:
            hub.audit.append("session-end", session=session)
        wards = self._wards()
        if wards is not None and m.role == "patient":
            wards.server_lost([(session, eid)], server, ENDED)

    def _wards(self) -> ClusterWards | None:
        w = self.hub.joins.wards
        return w if isinstance(w, ClusterWards) else None
