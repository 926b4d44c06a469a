"""The station's ward connection sends no relay frames: it pings, so idle logoff spares it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from p2pmed.node import Events, NodeConfig
from p2pmed.node import station as station_mod
from p2pmed.node.station import Station
from signaling.testing import running_server


async def test_station_is_not_logged_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(station_mod, "PING_EVERY", 0.2)
    async with running_server(tmp_path / "srv", idle_timeout=1.0) as srv:
        url = srv.join_url(srv.mint("ward.A", "station", ward="A"))
        seen: list[dict[str, object]] = []
        events = Events(json_out=False)
        events.listeners.append(seen.append)
        st = Station(NodeConfig.build(url, data_dir=str(tmp_path / "st"), media="none"), events)
        try:
            await st.start()
            await asyncio.sleep(3.0)  # three idle timeouts
            assert not [e for e in seen if e["event"] == "signaling" and e["state"] == "down"]
        finally:
            await st.close()
        audit = [json.loads(x) for x in (tmp_path / "srv" / "audit.jsonl").read_text().splitlines()]
        assert not [e for e in audit if e["event"] == "logoff"]
