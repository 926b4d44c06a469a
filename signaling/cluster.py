"""What a server does with a message from another server of its cluster (state/redis.py)."""

from __future__ import annotations

import time
from typing import Any

from signaling import logs
from signaling.hub import Hub
from signaling.wards import ClusterWards


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
    elif op == "peer-revoked":
        # a revocation on another server: tell the peer held here; its confirmation goes back
        ep = hub.local.get(session, to)
        revoked = str(msg["revoked"])
        hub.revocations.confirm_to[(session, revoked)] = (
            str(msg["confirm_to"]),
            time.monotonic(),
        )
        if ep is not None and not ep.gone:
            hub.relay.post(ep, {"type": "peer-revoked", "endpoint_id": revoked})
    elif op == "revocation-done":
        hub.revocations.done_by(session, str(msg["by"]), str(msg["revoked"]))
    elif op == "admitted":
        m = await hub.store.member(session, to)
        if m is not None:
            await hub.joins.admitted(m, str(msg.get("by", "")))
    elif op == "credit":
        if hub.remote is not None:
            hub.remote.on_credits(msg["items"])
    elif op == "drop":
        if hub.remote is not None:
            hub.remote.forget(session, to)
        await hub.joins.dropped(session, to)
    elif op == "ward-bed":
        # a bed changed on another server: post it to the ward's stations held here
        if isinstance(hub.joins.wards, ClusterWards):
            hub.joins.wards.on_bus(msg)
    elif op == "revoked":
        if hub.revoked.revoke(str(msg["jti"])):  # the sweep closes it if held here
            hub.sweep_now.set()
    else:
        hub.metrics.errors.labels("bus-unknown").inc()


async def on_frames(hub: Hub, payload: bytes) -> None:
    if hub.remote is not None:
        await hub.remote.on_frames(payload)
