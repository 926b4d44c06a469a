"""METRIC (0x06) and DEVICE (0x07) through the page's one vitals decoder (web/js/vitals.js, as
every other message) against the shared vectors' 'devices' section: the same message, or the
same rejection reason in the same order of checks as p2pmed/vitals/codec.py."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page

from tests.vectors.wire import VECTORS
from tests.web.conftest import js

pytestmark = pytest.mark.asyncio(loop_scope="module")

RUN = """
const out = [];
for (const v of arg.vectors) {
  try { out.push(M.vitals.decode(unhex(v.hex))); }
  catch (e) { out.push({error: [e.kind, e.reason]}); }
}
return out;
"""


async def test_devices_vectors(blank_page: Page) -> None:
    vectors: list[dict[str, Any]] = VECTORS["devices"]
    assert len(vectors) >= 20
    got = await js(blank_page, RUN, {"vectors": vectors})
    assert isinstance(got, list)
    bad = []
    for v, g in zip(vectors, got, strict=True):
        want = {"error": v["error"]} if "error" in v else v["message"]
        if g != want:
            bad.append((v["name"], want, g))
    assert not bad, bad
