"""What a server does with a message from another server of its cluster (state/redis.py)."""

from __future__ import annotations

from typing import Any

from signaling import logs
from signaling.hub import Hub


async def on_bus(hub: Hub, msg: dict[str, Any]) -> None:
    op = msg.get("op")
    session, to = str(msg.get("session", "")), str(msg.get("to", ""))
    if op == "post":
        ep = hub.local.get(session, to)
        if ep is None or ep.gone:
            # its holder changed while the message was in flight: the sender's E2E core or
            # signaling retries; counted, never silent
            hub.metrics.errors.labels("bus-undeliverable").inc()
            logs.event("bus-undeliverable", session=session, endpoint_id=to)
            return
        hub.relay.post(ep, msg["msg"])
    elif op == "admitted":
        m = await hub.store.member(session, to)
        if m is not None:
            await hub.joins.admitted(m, str(msg.get("by", "")))
    elif op == "credit":
        if hub.remote is not None:
            hub.remote.on_credit(session, to, int(msg["n"]))
    elif op == "drop":
        if hub.remote is not None:
            hub.remote.forget(session, to)
        await hub.joins.dropped(session, to)
    elif op == "revoked":
        if hub.revoked.revoke(str(msg["jti"])):  # the sweep closes it if held here
            hub.sweep_now.set()
    else:
        hub.metrics.errors.labels("bus-unknown").inc()


async def on_frames(hub: Hub, payload: bytes) -> None:
    if hub.remote is not None:
        await hub.remote.on_frames(payload)
