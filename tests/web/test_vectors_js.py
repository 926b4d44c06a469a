"""The page's handshake (responder) and AEAD against tests/vectors/crypto_v1.json, in Chromium."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page

from p2pmed.core.handshake import transcript_hash
from p2pmed.core.identity import Identity
from tests.web.conftest import js

pytestmark = pytest.mark.asyncio(loop_scope="module")

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "crypto_v1.json").read_text()
)


def _b64(h: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(h)).rstrip(b"=").decode()


# Imports the vector's responder identity and ephemeral key, then runs the responder handshake.
SETUP = """
const v = arg.v, inp = v.inputs, der = v.derived;
const subtle = crypto.subtle;
const idKey = await subtle.importKey('jwk', {kty: 'OKP', crv: 'Ed25519', d: arg.idD, x: arg.idX},
  {name: 'Ed25519'}, false, ['sign']);
const identity = new M.identity.Identity({privateKey: idKey}, unhex(der.responder_identity_public));
const eKey = await subtle.importKey('jwk', {kty: 'OKP', crv: 'X25519', d: arg.eD, x: arg.eX},
  {name: 'X25519'}, false, ['deriveBits']);
const hs = new M.handshake.Handshake(identity, {sessionId: inp.session_id,
  localFp: unhex(inp.responder_dtls_fp), remoteFp: unhex(inp.initiator_dtls_fp),
  x25519: {privateKey: eKey, publicBytes: unhex(der.responder_ephemeral_public)}});
const H = v.handshake;
const frameOf = ([type, payload], pn) => hex(M.frame.encode({type, flags: 0, cls: 0, epoch: 0, pn,
  seq: 0, ack: 0, timestamp_us: inp.handshake_timestamp_us, length: payload.length}, payload));
"""


def _arg(**extra: Any) -> dict[str, Any]:
    d = VECTORS["derived"]
    inp = VECTORS["inputs"]
    return {
        "v": VECTORS,
        "idD": _b64(inp["responder_identity_seed"]),
        "idX": _b64(d["responder_identity_public"]),
        "eD": _b64(inp["responder_ephemeral_private"]),
        "eX": _b64(d["responder_ephemeral_public"]),
        **extra,
    }


async def test_responder_handshake_reproduces_vectors(blank_page: Page) -> None:
    got = await js(
        blank_page,
        SETUP
        + """
const commit = M.frame.decode(unhex(H.HS_COMMIT.frame));
const reply = await hs.receive(commit.header.type, commit.payload);
const reveal = M.frame.decode(unhex(H.HS_REVEAL.frame));
const confirm = await hs.receive(reveal.header.type, reveal.payload);
const r = hs.result;
return {reply: frameOf(reply, 1), confirm: frameOf(confirm, 3), T: hex(r.transcript_hash),
  sas: r.sas, send: hex(r.send_chain), recv: hex(r.recv_chain), peer: r.peer_fingerprint,
  peerPub: hex(r.peer_public), myFp: await identity.fingerprint()};
""",
        _arg(),
    )
    v = VECTORS
    keys = v["keys"]
    assert got == {
        "reply": v["handshake"]["HS_REPLY"]["frame"],
        "confirm": v["handshake"]["HS_CONFIRM"]["frame"],
        "T": v["transcript_hash"],
        "sas": v["sas"],
        "send": keys["r2i"][0]["chain"],
        "recv": keys["i2r"][0]["chain"],
        "peer": v["derived"]["initiator_fingerprint"],
        "peerPub": v["derived"]["initiator_identity_public"],
        "myFp": v["derived"]["responder_fingerprint"],
    }


async def test_epoch_keys_match_vectors(blank_page: Page) -> None:
    got = await js(
        blank_page,
        """
const out = {};
for (const d of ['i2r', 'r2i']) {
  const e1 = arg.keys[d][0];
  const e = new Uint8Array(0);
  out[d] = [hex(await M.crypto.hkdf(unhex(e1.chain), e, 'p2pmed v1 key', 32)),
            hex(await M.crypto.hkdf(unhex(e1.chain), e, 'p2pmed v1 iv', 4)),
            hex(await M.crypto.hkdf(unhex(e1.chain), e, 'p2pmed v1 next', 32))];
}
return out;
""",
        {"keys": VECTORS["keys"]},
    )
    for d in ("i2r", "r2i"):
        e1, e2 = VECTORS["keys"][d]
        assert got[d] == [e1["key"], e1["iv"], e2["chain"]]  # type: ignore[index]


async def test_data_frames_open_and_seal_byte_exact(blank_page: Page) -> None:
    got = await js(
        blank_page,
        """
const out = [];
for (const f of arg.frames) {
  const chain = unhex(arg.keys[f.direction][0].chain);
  const wire = unhex(f.wire);
  const {header} = M.frame.decode(wire);
  const recv = await M.crypto.RecvKeys.create(chain);
  const plain = hex(await recv.open(header, wire, 0));
  const send = await M.crypto.SendKeys.create(chain, {now: 0});
  while (send.epoch < f.epoch) await send.ratchet(0);
  const sealed = hex(await send.seal({...header, epoch: 0, length: 0}, unhex(f.plaintext)));
  out.push({name: f.name, plain, sealed, epoch: recv.epoch});
}
return out;
""",
        {"frames": VECTORS["data_frames"], "keys": VECTORS["keys"]},
    )
    want = [
        {"name": f["name"], "plain": f["plaintext"], "sealed": f["wire"], "epoch": f["epoch"]}
        for f in VECTORS["data_frames"]
    ]
    assert got == want


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        ("reveal[5] ^= 1", "commit"),  # eI no longer matches the commitment
        ("reveal[150] ^= 1", "signature"),  # sigI broken
        ("reveal.set(unhex(arg.forged))", "fingerprint"),  # signed, but for another DTLS fp
    ],
)
async def test_responder_refuses_tampered_handshake(
    blank_page: Page, mutate: str, reason: str
) -> None:
    got = await js(
        blank_page,
        SETUP
        + """
const reveal = new Uint8Array(M.frame.decode(unhex(H.HS_REVEAL.frame)).payload);
"""
        + mutate
        + """;
await hs.receive(0x10, unhex(H.HS_COMMIT.payload));
try { await hs.receive(0x12, reveal); return 'accepted'; }
catch (e) { return e.kind + '/' + e.reason + (hs.complete ? ' complete' : ''); }
""",
        _arg(forged=_forged_reveal().hex()),
    )
    assert got == f"crypto/{reason}"


def _forged_reveal() -> bytes:
    """A correctly signed HS_REVEAL whose fpI_local is not the fingerprint the responder sees."""
    inp, h = VECTORS["inputs"], VECTORS["handshake"]
    reveal = bytes.fromhex(h["HS_REVEAL"]["payload"])
    head = reveal[:64] + bytes([7]) * 32 + reveal[96:128]
    t = transcript_hash(
        inp["session_id"],
        bytes.fromhex(h["HS_COMMIT"]["payload"]),
        bytes.fromhex(h["HS_REPLY"]["payload"]),
        head,
    )
    ident = Identity.from_private_bytes(bytes.fromhex(inp["initiator_identity_seed"]))
    return head + ident.sign(b"p2pmed v1 initiator" + t)
