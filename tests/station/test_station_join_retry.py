"""The terminal station joins a bed again when the server refused the join for a limit of the
moment (too many joins from this address: a station joins every bed at once, as the 16-bed
benchmark does), instead of leaving that bed out for good."""

from __future__ import annotations

from pathlib import Path

from signaling.config import Limits
from signaling.testing import running_server
from tests.node.conftest import start_proc


async def test_refused_bed_join_is_tried_again(tmp_path: Path) -> None:
    # two joins at once, then one every 2 s: the patient's and the station's own join pass,
    # the station's join of the bed is refused at first
    limits = Limits(join_rate=0.5, join_burst=2.0)
    async with running_server(tmp_path / "srv", limits=limits) as srv:
        bed_url = srv.join_url(srv.mint("b1", "patient", ward="A"))
        b1 = await start_proc(bed_url, "b1", "--data-dir", str(tmp_path / "b1"))
        st = None
        try:
            await b1.w.wait_for("joined")
            token = srv.mint("ward.A", "station", ward="A")
            st = await start_proc(
                srv.join_url(token), "station", "--data-dir", str(tmp_path / "st")
            )
            refused = await st.w.wait_for("error", code="bed-join", bed="b1")
            assert "too-many-joins" in refused["message"] and refused["retry_s"] == 1.0
            await st.w.wait_for("message", bed="b1", kind="numerics")
        finally:
            for p in (st, b1):
                if p is not None:
                    await p.stop()
