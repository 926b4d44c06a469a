"""The page's WebCrypto key schedule, AEAD, identity and SAS against p2pmed.core (Chromium)."""

from __future__ import annotations

import hashlib

import pytest
from playwright.async_api import Page

from p2pmed.core import crypto, frame
from p2pmed.core.errors import CryptoError
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass
from p2pmed.core.identity import fingerprint_of, verify_signature
from tests.web.conftest import js

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHAIN = hashlib.sha256(b"p2pmed web test chain").digest()


def _header(pn: int, seq: int = 0) -> Header:
    return Header(
        FrameType.DATA, Flags.FIRST | Flags.LAST, MessageClass.MEDIUM, 0, pn, seq, 0, 1, 0
    )


async def test_hkdf_and_chain_match_python(blank_page: Page) -> None:
    got = await js(
        blank_page,
        "const c = unhex(arg); const e = new Uint8Array(0);"
        "return [hex(await M.crypto.hkdf(c, e, 'p2pmed v1 key', 32)),"
        " hex(await M.crypto.hkdf(c, e, 'p2pmed v1 iv', 4)),"
        " hex(await M.crypto.hkdf(c, e, 'p2pmed v1 next', 32))];",
        CHAIN.hex(),
    )
    key, iv = crypto.epoch_key_iv(CHAIN)
    assert got == [key.hex(), iv.hex(), crypto.next_chain(CHAIN).hex()]


async def test_python_frames_open_in_page_across_epochs(blank_page: Page) -> None:
    send = crypto.SendKeys(CHAIN, now=0.0)
    frames = []
    for pn in range(3):
        frames.append(send.seal(_header(pn, pn), f"epoch1 msg {pn}".encode()))
    send.ratchet(1.0)
    frames.append(send.seal(_header(3, 3), b"epoch2"))
    send.ratchet(2.0)
    send.ratchet(3.0)
    frames.append(send.seal(_header(4, 4), b"epoch4 skips one"))
    got = await js(
        blank_page,
        "const r = await M.crypto.RecvKeys.create(unhex(arg.chain)); const out = [];"
        "for (const f of arg.frames) { const b = unhex(f); const {header} = M.frame.decode(b);"
        " out.push([header.epoch, new TextDecoder().decode(await r.open(header, b, 0))]); }"
        "return out;",
        {"chain": CHAIN.hex(), "frames": [f.hex() for f in frames]},
    )
    assert got == [
        [1, "epoch1 msg 0"],
        [1, "epoch1 msg 1"],
        [1, "epoch1 msg 2"],
        [2, "epoch2"],
        [4, "epoch4 skips one"],
    ]


async def test_page_frames_open_in_python_across_epochs(blank_page: Page) -> None:
    got = await js(
        blank_page,
        "const s = await M.crypto.SendKeys.create(unhex(arg), {now: 0}); const out = [];"
        "const h = (pn) => ({type: 1, flags: 3, cls: 2, epoch: 0, pn, seq: pn, ack: 0,"
        " timestamp_us: 5, length: 0});"
        "out.push(hex(await s.seal(h(0), new TextEncoder().encode('from page 0'))));"
        "out.push(hex(await s.seal(h(1), new TextEncoder().encode('from page 1'))));"
        "await s.ratchet(1); out.push(hex(await s.seal(h(2), new TextEncoder().encode('e2'))));"
        "return out;",
        CHAIN.hex(),
    )
    recv = crypto.RecvKeys(CHAIN)
    plain = []
    for f in got:  # type: ignore[union-attr]
        data = bytes.fromhex(f)
        header, _ = frame.decode(data)
        plain.append((header.epoch, recv.open(header, data, 0.0)))
    assert plain == [(1, b"from page 0"), (1, b"from page 1"), (2, b"e2")]


async def test_tampered_ciphertext_with_fixed_crc_fails_auth_in_page(blank_page: Page) -> None:
    data = bytearray(crypto.SendKeys(CHAIN, now=0.0).seal(_header(0), b"vitals"))
    data[50] ^= 0x01
    body = bytes(data[:-4])
    tampered = body + frame.crc32(body).to_bytes(4, "big")
    got = await js(
        blank_page,
        "const r = await M.crypto.RecvKeys.create(unhex(arg.chain)); const b = unhex(arg.f);"
        "const {header} = M.frame.decode(b);"
        "try { await r.open(header, b, 0); return 'opened'; }"
        " catch (e) { return e.kind + '/' + e.reason; }",
        {"chain": CHAIN.hex(), "f": tampered.hex()},
    )
    assert got == "crypto/auth"


async def test_epoch_too_far_ahead_is_rejected(blank_page: Page) -> None:
    send = crypto.SendKeys(CHAIN, epoch=4, now=0.0)
    data = send.seal(_header(0), b"x")
    got = await js(
        blank_page,
        "const r = await M.crypto.RecvKeys.create(unhex(arg.chain)); const b = unhex(arg.f);"
        "const {header} = M.frame.decode(b);"
        "try { await r.open(header, b, 0); return 'opened'; } catch (e) { return e.reason; }",
        {"chain": CHAIN.hex(), "f": data.hex()},
    )
    assert got == "epoch"


async def test_replay_window_matches_python(blank_page: Page) -> None:
    pns = [0, 5, 3, 5, 4100, 4, 5000, 903, 904, 5000]

    def py() -> list[str]:
        w = crypto.ReplayWindow()
        out = []
        for pn in pns:
            try:
                w.check(pn)
                w.accept(pn)
                out.append("ok")
            except CryptoError as e:
                out.append(e.reason)
        return out

    got = await js(
        blank_page,
        "const w = new M.crypto.ReplayWindow(); return arg.map((pn) => {"
        " try { w.check(pn); w.accept(pn); return 'ok'; } catch (e) { return e.reason; } });",
        pns,
    )
    assert got == py()
    assert "replay" in got  # type: ignore[operator]


async def test_sas_matches_python(blank_page: Page) -> None:
    t = hashlib.sha256(b"transcript").digest()
    got = await js(blank_page, "return await M.crypto.deriveSas(unhex(arg));", t.hex())
    assert got == crypto.derive_sas(t)


async def test_identity_signature_and_fingerprint_in_python(blank_page: Page) -> None:
    got = await js(
        blank_page,
        "const id = await M.identity.Identity.loadOrCreate('test-sign');"
        "const again = await M.identity.Identity.loadOrCreate('test-sign');"
        "let extractable = true;"
        "try { await crypto.subtle.exportKey('pkcs8', id.keyPair.privateKey); }"
        " catch { extractable = false; }"
        "return {pub: hex(id.publicBytes), again: hex(again.publicBytes),"
        " fp: await id.fingerprint(),"
        " sig: hex(await again.sign(new TextEncoder().encode('signed by page'))), extractable};",
    )
    assert isinstance(got, dict)
    pub = bytes.fromhex(got["pub"])
    assert got["again"] == got["pub"]  # kept in IndexedDB
    assert got["extractable"] is False
    assert got["fp"] == fingerprint_of(pub)
    verify_signature(pub, bytes.fromhex(got["sig"]), b"signed by page")
    with pytest.raises(CryptoError):
        verify_signature(pub, bytes.fromhex(got["sig"]), b"something else")
