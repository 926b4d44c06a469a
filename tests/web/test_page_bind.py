"""Direct-path binding in the page (docs/protocol.md, PATH_BIND): strict SDP checks, binding to
the certificates the browser's DTLS verified, media only after binding, a mismatch ends the session.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiortc import RTCPeerConnection
from playwright.async_api import Browser, Page, expect

from signaling.testing import RunningServer, running_server
from tests.web.node_proc import NodeProc

pytestmark = pytest.mark.asyncio(loop_scope="module")

ATTACKER = ":".join(["AB"] * 32)


async def aiortc_offer() -> str:
    pc = RTCPeerConnection()
    pc.createDataChannel("control", negotiated=True, id=0)
    pc.addTransceiver("video")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


CHECK = (
    "async ([sdp]) => { const m = await import('/static/js/sdp.js');"
    " try { return {ok: Array.from(m.checkSdp(sdp))}; }"
    " catch (e) { return {reason: e.reason || String(e)}; } }"
)


def _fp_lines(sdp: str) -> list[str]:
    return [ln for ln in sdp.split("\r\n") if ln.startswith("a=fingerprint:sha-256")]


async def test_honest_sdp_from_aiortc_and_chromium_is_accepted(blank_page: Page) -> None:
    offer = await aiortc_offer()
    res = await blank_page.evaluate(CHECK, [offer])
    want = bytes.fromhex(_fp_lines(offer)[0].split()[1].replace(":", ""))
    assert bytes(res["ok"]) == want
    # the same with LF line ends and the hex in lower case
    res = await blank_page.evaluate(CHECK, [offer.replace("\r\n", "\n").lower()])
    assert bytes(res["ok"]) == want
    chrome = await blank_page.evaluate(
        "async () => { const pc = new RTCPeerConnection(); pc.createDataChannel('x');"
        " const o = await pc.createOffer(); pc.close(); return o.sdp; }"
    )
    assert "ok" in await blank_page.evaluate(CHECK, [chrome])


async def test_lone_cr_and_disagreeing_fingerprints_are_refused(blank_page: Page) -> None:
    offer = await aiortc_offer()
    honest = _fp_lines(offer)[0]
    # the attack: an attacker line joined to the previous line with a lone CR
    lone_cr = offer.replace(honest, f"a=fingerprint:sha-256 {ATTACKER}\r{honest}", 1)
    assert (await blank_page.evaluate(CHECK, [lone_cr]))["reason"] == "line-break"
    for brk in ("\u2028", "\x0b", "\x85"):
        odd = offer.replace(honest, f"{honest}{brk}a=fingerprint:sha-256 {ATTACKER}", 1)
        assert (await blank_page.evaluate(CHECK, [odd]))["reason"] == "line-break"
    # two media sections that disagree
    second = offer.replace(honest, f"a=fingerprint:sha-256 {ATTACKER}", 1)
    both = offer + second[second.index("m=") :]
    assert (await blank_page.evaluate(CHECK, [both]))["reason"] == "fingerprint-disagree"
    # session level against the media sections
    sess = offer.replace("m=", f"a=fingerprint:sha-256 {ATTACKER}\r\nm=", 1)
    assert (await blank_page.evaluate(CHECK, [sess]))["reason"] == "fingerprint-disagree"
    # two fingerprints in one section
    two = offer.replace(honest, f"{honest}\r\na=fingerprint:sha-256 {ATTACKER}", 1)
    assert (await blank_page.evaluate(CHECK, [two]))["reason"] == "fingerprint-disagree"
    # none at all
    none = "\r\n".join(ln for ln in offer.split("\r\n") if not ln.startswith("a=fingerprint:"))
    assert (await blank_page.evaluate(CHECK, [none]))["reason"] == "fingerprint-missing"


@dataclass
class Live:
    server: RunningServer
    page: Page
    node: NodeProc


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def live(browser: Browser) -> AsyncIterator[Live]:
    with tempfile.TemporaryDirectory(prefix="p2pmed-web-bind-") as d:
        async with running_server(Path(d) / "server") as srv:
            purl = srv.join_url(srv.mint("s-bind", "patient"))
            args = ("--scenario", "alarm", "--media", "testpattern")
            async with NodeProc(purl, str(Path(d) / "patient"), *args) as node:
                await node.wait_for(lambda e: e.get("event") == "joined")
                ctx = await browser.new_context()
                page = await ctx.new_page()
                await page.goto(srv.join_url(srv.mint("s-bind", "clinician")))
                # keep the offers exactly as the server delivered them (Chromium re-serializes
                # remoteDescription with one fingerprint only)
                for _ in range(100):  # the page's CSP forbids wait_for_function's eval
                    if await page.evaluate("!!(window.p2pmed && window.p2pmed.app)"):
                        break
                    await asyncio.sleep(0.05)
                await page.evaluate(
                    "() => { const a = window.p2pmed.app; const on = a.onSignal.bind(a);"
                    " window.__offers = [];"
                    " a.onSignal = (m) => { if (m.type === 'offer') window.__offers.push(m.sdp);"
                    " return on(m); }; }"
                )
                await page.get_by_role("button", name="Admit patient").click(timeout=10_000)
                await node.wait_for(lambda e: e.get("event") == "handshake")
                yield Live(srv, page, node)
                await ctx.close()


async def test_honest_binding_shows_vitals_and_video(live: Live) -> None:
    page = live.page
    await expect(page.locator("#st-path")).to_have_text("direct", timeout=15_000)
    await expect(page.locator("#tile-hr")).to_have_attribute("data-state", "live", timeout=10_000)
    video = page.locator("#remote-video")
    await expect(video).to_have_js_property("readyState", 4, timeout=10_000)
    binds = await page.evaluate("window.p2pmed.metrics.binds")
    assert binds["bound"] >= 1 and binds["mismatch"] == 0
    # bound to the certificate DTLS used: the node's, as its own (honest) offer names it
    same = await page.evaluate(
        "async () => { const a = window.p2pmed.app; const m = await import('/static/js/sdp.js');"
        " const f = await import('/static/js/frame.js');"
        " const named = m.checkSdp(window.__offers[window.__offers.length - 1]);"
        " return f.toHex(a.binder.fps.remote) === f.toHex(named); }"
    )
    assert same is True


async def test_offer_with_lone_cr_is_refused_without_answer(live: Live) -> None:
    page = live.page
    refused = await page.evaluate(
        "async ([attacker]) => { const a = window.p2pmed.app; const answers = [];"
        " const orig = a.sig.sendJson.bind(a.sig);"
        " a.sig.sendJson = (m) => { if (m.type === 'answer') answers.push(m); return orig(m); };"
        " const sdp = window.__offers[window.__offers.length - 1];"
        " const honest = sdp.split('\\r\\n').find((l) => l.startsWith('a=fingerprint:sha-256'));"
        " const bad = sdp.replace(honest, `a=fingerprint:sha-256 ${attacker}\\r${honest}`);"
        " const pc = a.pc;"
        " await a.onOffer({type: 'offer', from: a.patientId, sdp: bad});"
        " a.sig.sendJson = orig;"
        " const m = window.p2pmed.metrics.sdpRejectedReasons;"
        " return {answers: answers.length, samePc: a.pc === pc, m}; }",
        [ATTACKER],
    )
    assert refused == {"answers": 0, "samePc": True, "m": {"line-break": 1}}
    await expect(page.locator("#rejected-note")).to_contain_text("Refused a connection offer")
    await expect(page.locator("#st-path")).to_have_text("direct")


async def test_bind_naming_other_certificates_closes_the_session(live: Live) -> None:
    page = live.page
    # what a PATH_BIND from a peer whose DTLS talked to someone else would say
    await page.evaluate(
        "async () => { const a = window.p2pmed.app; const b = await import('/static/js/bind.js');"
        " const pt = b.encodePathBind('direct', new Uint8Array(32).fill(7), a.binder.fps.local);"
        " try { a.onPeerBind(a.session, pt); } catch (e) { window.__bindError = e.reason; } }"
    )
    assert await page.evaluate("window.__bindError") == "fingerprint"
    tech = page.locator('#alarm-list li[data-key="tech:fingerprint"]')
    await expect(tech).to_have_attribute("data-priority", "high")
    await expect(page.locator("#conn-state")).to_have_text("Session closed: security check failed")
    assert await page.evaluate("document.getElementById('remote-video').srcObject") is None
    assert await page.evaluate("window.p2pmed.app.pc") is None
    close = await live.node.wait_for(lambda e: e.get("event") in ("closed", "session-closed"))
    assert "fingerprint" in str(close)


BINDER = """async () => {
  const { Binder } = await import('/static/js/bind.js');
  const fp = (n) => new Uint8Array(32).fill(n);
  const b = new Binder();
  const out = [];
  const pc1 = {}, pc2 = {};
  b.negotiate(pc1);
  // the peer's bind arrives before our DTLS connected: held, checked when it connects
  out.push(b.check({ peerCert: fp(2), myCert: fp(1) }));
  out.push(b.connected(pc1, { local: fp(1), remote: fp(2) }));
  out.push(b.bound);
  // renegotiation: a bind for the previous connection crosses it
  b.negotiate(pc2);
  out.push(b.bound);
  out.push(b.check({ peerCert: fp(2), myCert: fp(1) }));
  out.push(b.connected(pc2, { local: fp(3), remote: fp(4) }));
  // a connection that is not ours any more changes nothing
  out.push(b.connected(pc1, { local: fp(9), remote: fp(9) }));
  out.push(b.check({ peerCert: fp(4), myCert: fp(3) }));
  // certificates neither side negotiated: someone in the middle
  out.push(b.check({ peerCert: fp(7), myCert: fp(3) }));
  return { out, stats: b.stats };
}"""


async def test_binder_holds_early_binds_ignores_stale_ones_and_flags_others(
    blank_page: Page,
) -> None:
    got = await blank_page.evaluate(BINDER)
    assert got["out"] == ["held", "bound", True, False, "held", "stale", None, "bound", "mismatch"]
    assert got["stats"] == {"held": 2, "bound": 2, "stale": 1, "mismatch": 1}
