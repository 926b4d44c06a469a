"""docs/protocol.md section 6.0 recomputed from the values printed there, so a third party can
check T and the SAS from the document alone and the document cannot drift.

Only hashlib and the `cryptography` primitives are used for the recomputation; the last test
also holds p2pmed's own handshake code and the vectors to the same values."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from p2pmed.core.handshake import Handshake, transcript_hash
from p2pmed.core.identity import Identity

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "protocol.md").read_text()
BLOCK = re.search(
    r"<!-- worked-example:inputs:begin -->\n```\n(.*?)```\n<!-- worked-example:inputs:end -->",
    DOC,
    re.S,
)
assert BLOCK is not None, "section 6.0 value block not found in docs/protocol.md"
V = dict(line.split(": ", 1) for line in BLOCK.group(1).splitlines())


def h(name: str) -> bytes:
    return bytes.fromhex(V[name])


def raw(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sas(t: bytes) -> str:
    n = int.from_bytes(hashlib.sha256(b"p2pmed v1 sas" + t).digest()[:4], "big") % 1_000_000
    return f"{n:06d}"[:3] + " " + f"{n:06d}"[3:]


def transcript(fp_i: bytes, fp_r: bytes) -> bytes:
    sid = V["session_id"].encode()
    reply = h("R.ephemeral_public") + h("R.identity_public") + fp_r + fp_i
    reveal = h("I.ephemeral_public") + h("I.identity_public") + fp_i + fp_r
    return hashlib.sha256(
        b"p2pmed v1 transcript" + len(sid).to_bytes(2, "big") + sid + h("commit") + reply + reveal
    ).digest()


def test_public_keys_and_fingerprints_follow_from_the_private_keys() -> None:
    for side in ("I", "R"):
        ident = Ed25519PrivateKey.from_private_bytes(h(f"{side}.identity_seed"))
        assert raw(ident) == h(f"{side}.identity_public")
        eph = X25519PrivateKey.from_private_bytes(h(f"{side}.ephemeral_private"))
        assert raw(eph) == h(f"{side}.ephemeral_public")
        digest = hashlib.sha256(h(f"{side}.identity_public")).hexdigest()[:32]
        groups = " ".join(digest[i : i + 4] for i in range(0, 32, 4))
        assert V[f"{side}.fingerprint"] == f"p2pmed:{groups}"


def test_shared_secret_and_commitment() -> None:
    i_eph = X25519PrivateKey.from_private_bytes(h("I.ephemeral_private"))
    r_eph = X25519PrivateKey.from_private_bytes(h("R.ephemeral_private"))
    shared = i_eph.exchange(r_eph.public_key())
    assert shared == h("shared") == r_eph.exchange(i_eph.public_key())
    commit = hashlib.sha256(
        b"p2pmed v1 commit" + h("I.ephemeral_public") + h("I.identity_public")
    ).digest()
    assert commit == h("commit")
    assert "cf 11 ce 13 cf 7e cb b3" in DOC  # the HS_COMMIT dump of 6.1 carries it


def test_transcript_and_sas_with_the_vectors_fingerprint_fields() -> None:
    t = transcript(h("I.dtls_fp"), h("R.dtls_fp"))
    assert t == h("T")
    assert sas(t) == V["SAS"]
    assert f"T = `{V['T']}`, SAS `{V['SAS']}`" in DOC  # what 6.2 says it builds on


def test_transcript_and_sas_with_zero_fingerprint_fields() -> None:
    t = transcript(bytes(32), bytes(32))
    assert t == h("T_zero_fp")
    assert sas(t) == V["SAS_zero_fp"]


def test_signatures_verify_over_the_printed_transcript() -> None:
    vec = json.loads((ROOT / "tests" / "vectors" / "crypto_v1.json").read_text())
    sig_i = bytes.fromhex(vec["handshake"]["HS_REVEAL"]["payload"])[128:]
    sig_r = bytes.fromhex(vec["handshake"]["HS_CONFIRM"]["payload"])
    Ed25519PublicKey.from_public_bytes(h("I.identity_public")).verify(
        sig_i, b"p2pmed v1 initiator" + h("T")
    )
    Ed25519PublicKey.from_public_bytes(h("R.identity_public")).verify(
        sig_r, b"p2pmed v1 responder" + h("T")
    )


def test_p2pmed_handshake_gives_the_documented_zero_fp_transcript() -> None:
    """The core's own handshake (zero fingerprint fields) run on the printed inputs."""
    keys = {
        "I": h("I.ephemeral_private"),
        "R": h("R.ephemeral_private"),
    }
    i = Handshake(
        Identity.from_private_bytes(h("I.identity_seed")),
        initiator=True,
        session_id=V["session_id"],
        random=lambda n: keys["I"][:n],
    )
    r = Handshake(
        Identity.from_private_bytes(h("R.identity_seed")),
        initiator=False,
        session_id=V["session_id"],
        random=lambda n: keys["R"][:n],
    )
    step = i.start()
    while step is not None:
        step = (r if step[0] in (0x10, 0x12) else i).receive(*step)
    assert i.complete and r.complete
    assert i.result.transcript_hash == r.result.transcript_hash == h("T_zero_fp")
    assert i.result.sas == V["SAS_zero_fp"]
    vec = json.loads((ROOT / "tests" / "vectors" / "crypto_v1.json").read_text())
    assert vec["transcript_hash"] == V["T"]
    commit = bytes.fromhex(vec["handshake"]["HS_COMMIT"]["payload"])
    reply = bytes.fromhex(vec["handshake"]["HS_REPLY"]["payload"])
    reveal = bytes.fromhex(vec["handshake"]["HS_REVEAL"]["payload"])[:128]
    assert transcript_hash(V["session_id"], commit, reply, reveal) == h("T")
