"""Shared crypto test vectors (tests/vectors/crypto_v1.json) and the worked example in
docs/protocol.md section 6.

The JSON file is regenerated here from fixed inputs and compared byte for byte, so it
cannot drift from the code. To rewrite it after an intended change:

    .venv/bin/python -m tests.core.test_vectors --write
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from p2pmed.core import frame
from p2pmed.core.crypto import RecvKeys, SendKeys, epoch_key_iv, next_chain
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass
from p2pmed.core.handshake import HANDSHAKE_PN, Handshake
from p2pmed.core.identity import Identity, fingerprint_of

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "crypto_v1.json"
PROTOCOL = ROOT / "docs" / "protocol.md"

SESSION_ID = "sess-2026-vector-01"
ID_I_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
ID_R_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
EPH_I = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
EPH_R = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
FP_I = hashlib.sha256(b"p2pmed vector: DTLS certificate of the initiator").digest()
FP_R = hashlib.sha256(b"p2pmed vector: DTLS certificate of the responder").digest()
HS_TIMESTAMP_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z

DATA_FRAMES: list[dict[str, Any]] = [
    {
        "name": "i2r_epoch1",
        "direction": "i2r",
        "epoch": 1,
        "type": "DATA",
        "flags": ["FIRST", "LAST"],
        "class": "HIGH",
        "pn": 4,
        "seq": 0,
        "ack": 0,
        "timestamp_us": 1_767_225_600_250_000,
        "plaintext_utf8": "p2pmed worked example: HR 72",
    },
    {
        "name": "r2i_epoch2",
        "direction": "r2i",
        "epoch": 2,
        "type": "DATA",
        "flags": ["BATCH"],
        "class": "CRITICAL",
        "pn": 16_777_300,
        "seq": 41,
        "ack": 7,
        "timestamp_us": 1_767_229_200_000_000,
        "plaintext_utf8": "\u0000\u0000\u0000\u0005alarm",
    },
]

DESCRIPTION = (
    "p2pmed wire protocol v1 crypto test vectors (docs/protocol.md sections 2, 3 and 6). "
    "All byte strings are lowercase hex; integers are decimal. Inputs: Ed25519 identity "
    "seeds (RFC 8032 private keys), X25519 ephemeral private keys (RFC 7748 scalars, "
    "clamped by X25519 itself), the UTF-8 session id and the raw 32-byte SHA-256 DTLS "
    "certificate fingerprints each side owns. 'handshake' holds the four payloads "
    "(HS_COMMIT I->R, HS_REPLY R->I, HS_REVEAL I->R, HS_CONFIRM R->I) and each one as a full "
    "plaintext frame (epoch 0, pn = step 0..3, class CRITICAL, flags 0, seq 0, ack 0, "
    "timestamp_us as given). Ed25519 signatures are deterministic, so every value is "
    "reproducible. 'keys' holds chain/key/iv per direction (i2r = initiator to responder) "
    "for epochs 1 and 2 (HKDF-SHA256, full extract+expand, empty salt for the per-epoch "
    "derivations). 'data_frames' are encrypted frames: nonce = iv || u64be(pn), AAD = the "
    "44 header bytes as sent, payload = AES-256-GCM ciphertext || 16-byte tag, followed by "
    "the CRC-32 (zlib) of everything before it. The ephemeral keys (and so the shared "
    "secret) are those of RFC 7748 section 6.1; the identity seeds are RFC 8032 section 7.1 "
    "tests 1 and 2. A receiver of r2i_epoch2 holds chain r2i epoch 1 and derives epoch 2 on "
    "demand (at most 2 epochs ahead)."
)


def _pub_x25519(private: bytes) -> bytes:
    return (
        X25519PrivateKey.from_private_bytes(private)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


def _fixed(value: bytes) -> Any:
    return lambda n: value[:n]


def _hs_frame(ftype: FrameType, payload: bytes) -> bytes:
    header = Header(
        ftype,
        Flags.NONE,
        MessageClass.CRITICAL,
        0,
        HANDSHAKE_PN[ftype],
        0,
        0,
        HS_TIMESTAMP_US,
        len(payload),
    )
    return frame.encode(header, payload)


def _data_frame(spec: dict[str, Any], chain1: bytes) -> dict[str, Any]:
    flags = Flags.NONE
    for name in spec["flags"]:
        flags |= Flags[name]
    plaintext = spec["plaintext_utf8"].encode("utf-8")
    send = SendKeys(chain1, now=0.0)
    for _ in range(spec["epoch"] - 1):
        send.ratchet(0.0)
    header = Header(
        FrameType[spec["type"]],
        flags,
        MessageClass[spec["class"]],
        0,
        spec["pn"],
        spec["seq"],
        spec["ack"],
        spec["timestamp_us"],
        0,
    )
    wire = send.seal(header, plaintext)
    chain = chain1
    for _ in range(spec["epoch"] - 1):
        chain = next_chain(chain)
    key, iv = epoch_key_iv(chain)
    return {
        **spec,
        "flags_byte": int(flags),
        "plaintext": plaintext.hex(),
        "key": key.hex(),
        "iv": iv.hex(),
        "nonce": (iv + spec["pn"].to_bytes(8, "big")).hex(),
        "header": wire[:44].hex(),
        "ciphertext_and_tag": wire[44:-4].hex(),
        "crc": wire[-4:].hex(),
        "wire": wire.hex(),
    }


def generate() -> dict[str, Any]:
    id_i = Identity.from_private_bytes(ID_I_SEED)
    id_r = Identity.from_private_bytes(ID_R_SEED)
    hs_i = Handshake(
        id_i,
        initiator=True,
        session_id=SESSION_ID,
        local_fp=FP_I,
        remote_fp=FP_R,
        random=_fixed(EPH_I),
    )
    hs_r = Handshake(
        id_r,
        initiator=False,
        session_id=SESSION_ID,
        local_fp=FP_R,
        remote_fp=FP_I,
        random=_fixed(EPH_R),
    )
    commit = hs_i.start()
    assert commit is not None
    reply = hs_r.receive(*commit)
    assert reply is not None
    reveal = hs_i.receive(*reply)
    assert reveal is not None
    confirm = hs_r.receive(*reveal)
    assert confirm is not None
    assert hs_i.receive(*confirm) is None
    ri, rr = hs_i.result, hs_r.result
    assert ri is not None and rr is not None and ri.sas == rr.sas
    shared = X25519PrivateKey.from_private_bytes(EPH_I).exchange(
        X25519PrivateKey.from_private_bytes(EPH_R).public_key()
    )
    chains1 = {"i2r": ri.send_chain, "r2i": ri.recv_chain}
    keys: dict[str, Any] = {}
    for direction, chain1 in chains1.items():
        epochs = []
        chain = chain1
        for epoch in (1, 2):
            key, iv = epoch_key_iv(chain)
            epochs.append({"epoch": epoch, "chain": chain.hex(), "key": key.hex(), "iv": iv.hex()})
            chain = next_chain(chain)
        keys[direction] = epochs
    steps = {"HS_COMMIT": commit, "HS_REPLY": reply, "HS_REVEAL": reveal, "HS_CONFIRM": confirm}
    return {
        "description": DESCRIPTION,
        "version": 1,
        "inputs": {
            "session_id": SESSION_ID,
            "initiator_identity_seed": ID_I_SEED.hex(),
            "responder_identity_seed": ID_R_SEED.hex(),
            "initiator_ephemeral_private": EPH_I.hex(),
            "responder_ephemeral_private": EPH_R.hex(),
            "initiator_dtls_fp": FP_I.hex(),
            "responder_dtls_fp": FP_R.hex(),
            "handshake_timestamp_us": HS_TIMESTAMP_US,
        },
        "derived": {
            "initiator_identity_public": id_i.public_bytes.hex(),
            "responder_identity_public": id_r.public_bytes.hex(),
            "initiator_fingerprint": fingerprint_of(id_i.public_bytes),
            "responder_fingerprint": fingerprint_of(id_r.public_bytes),
            "initiator_ephemeral_public": _pub_x25519(EPH_I).hex(),
            "responder_ephemeral_public": _pub_x25519(EPH_R).hex(),
            "shared_secret": shared.hex(),
        },
        "handshake": {
            name: {
                "type": int(step[0]),
                "pn": HANDSHAKE_PN[step[0]],
                "payload": step[1].hex(),
                "frame": _hs_frame(*step).hex(),
            }
            for name, step in steps.items()
        },
        "transcript_hash": ri.transcript_hash.hex(),
        "sas": ri.sas,
        "keys": keys,
        "data_frames": [_data_frame(s, chains1[s["direction"]]) for s in DATA_FRAMES],
    }


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=True) + "\n"


def _load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())
    return data


def _hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out with HMAC, independent of p2pmed.core.crypto."""

    def hmac(key: bytes, msg: bytes) -> bytes:
        h = HMAC(key, SHA256())
        h.update(msg)
        return h.finalize()

    prk = hmac(salt, ikm)
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac(prk, block + info + bytes([i]))
        out += block
        i += 1
    return out[:length]


def test_vectors_file_matches_code() -> None:
    assert VECTORS.read_text() == _dump(generate()), (
        "tests/vectors/crypto_v1.json drifted from the code; see this module's docstring"
    )


def test_vectors_follow_the_spec_independently() -> None:
    """Recompute the vectors from their inputs with raw primitives, not p2pmed code."""
    v = _load()
    inp, hs = v["inputs"], v["handshake"]
    h = bytes.fromhex
    e_i, e_r = (
        _pub_x25519(h(inp[k]))
        for k in ("initiator_ephemeral_private", "responder_ephemeral_private")
    )
    id_i, id_r = (
        h(v["derived"]["initiator_identity_public"]),
        h(v["derived"]["responder_identity_public"]),
    )
    fp_i, fp_r = h(inp["initiator_dtls_fp"]), h(inp["responder_dtls_fp"])
    commit = hashlib.sha256(b"p2pmed v1 commit" + e_i + id_i).digest()
    reply = e_r + id_r + fp_r + fp_i
    reveal_head = e_i + id_i + fp_i + fp_r
    assert h(hs["HS_COMMIT"]["payload"]) == commit
    assert h(hs["HS_REPLY"]["payload"]) == reply
    assert h(hs["HS_REVEAL"]["payload"])[:128] == reveal_head
    sid = inp["session_id"].encode()
    t = hashlib.sha256(
        b"p2pmed v1 transcript" + len(sid).to_bytes(2, "big") + sid + commit + reply + reveal_head
    ).digest()
    assert h(v["transcript_hash"]) == t
    Ed25519PublicKey.from_public_bytes(id_i).verify(
        h(hs["HS_REVEAL"]["payload"])[128:], b"p2pmed v1 initiator" + t
    )
    Ed25519PublicKey.from_public_bytes(id_r).verify(
        h(hs["HS_CONFIRM"]["payload"]), b"p2pmed v1 responder" + t
    )
    n = int.from_bytes(hashlib.sha256(b"p2pmed v1 sas" + t).digest()[:4], "big") % 1_000_000
    assert v["sas"] == f"{n // 1000:03d} {n % 1000:03d}"
    shared = h(v["derived"]["shared_secret"])
    for direction in ("i2r", "r2i"):
        chain = _hkdf(shared, t, f"p2pmed v1 {direction}".encode(), 32)
        for entry in v["keys"][direction]:
            assert h(entry["chain"]) == chain
            assert h(entry["key"]) == _hkdf(chain, b"", b"p2pmed v1 key", 32)
            assert h(entry["iv"]) == _hkdf(chain, b"", b"p2pmed v1 iv", 4)
            chain = _hkdf(chain, b"", b"p2pmed v1 next", 32)
    for name, step in hs.items():
        header, payload = frame.decode(h(step["frame"]))
        assert header.type == FrameType[name] and header.epoch == 0
        assert header.pn == step["pn"] and payload == h(step["payload"])
    for df in v["data_frames"]:
        entry = v["keys"][df["direction"]][df["epoch"] - 1]
        wire = h(df["wire"])
        assert wire[-4:] == (frame.crc32(wire[:-4])).to_bytes(4, "big")
        nonce = h(entry["iv"]) + df["pn"].to_bytes(8, "big")
        assert nonce == h(df["nonce"])
        plain = AESGCM(h(entry["key"])).decrypt(nonce, wire[44:-4], wire[:44])
        assert plain == h(df["plaintext"]) == df["plaintext_utf8"].encode()


def test_data_frames_open_with_recv_keys() -> None:
    v = _load()
    for df in v["data_frames"]:
        chain1 = bytes.fromhex(v["keys"][df["direction"]][0]["chain"])
        recv = RecvKeys(chain1)
        wire = bytes.fromhex(df["wire"])
        header, _ = frame.decode(wire)
        assert (header.epoch, header.pn, header.seq, header.ack) == (
            df["epoch"],
            df["pn"],
            df["seq"],
            df["ack"],
        )
        assert header.cls == MessageClass[df["class"]] and int(header.flags) == df["flags_byte"]
        assert recv.open(header, wire, 0.0) == bytes.fromhex(df["plaintext"])


# --- docs/protocol.md section 6 -------------------------------------------------------

_BLOCK = re.compile(r"<!-- worked-example:(\w+):begin -->(.*?)<!-- worked-example:\1:end -->", re.S)
_LINE = re.compile(r"^\s*\d{4}\s+((?:[0-9a-f]{2} ?)+?)\s*\|(.*)$")


def _doc_blocks() -> dict[str, list[tuple[bytes, str, str]]]:
    """{block name: [(bytes, field, stated value)]} from the annotated hex dumps."""
    blocks: dict[str, list[tuple[bytes, str, str]]] = {}
    for name, body in _BLOCK.findall(PROTOCOL.read_text()):
        rows = []
        for line in body.splitlines():
            m = _LINE.match(line)
            if m:
                words, _, stated = m.group(2).partition("=")
                field = words.split()[0] if words.split() else ""
                rows.append((bytes.fromhex(m.group(1)), field, stated.strip()))
        blocks[name] = rows
    return blocks


def _doc_values(name: str) -> dict[str, str]:
    """`name: value` lines given next to a worked example (key, iv, plaintext, ...)."""
    text = PROTOCOL.read_text()
    m = re.search(rf"<!-- worked-example:{name}:values -->(.*?)<!-- /values -->", text, re.S)
    assert m, f"values for {name} missing in docs/protocol.md"
    return dict(re.findall(r"^\s*(\w+)\s*:\s*(\S+)\s*$", m.group(1), re.M))


def _check_fields(rows: list[tuple[bytes, str, str]]) -> tuple[bytes, Header]:
    data = b"".join(r[0] for r in rows)
    header, _ = frame.decode(data)
    offset = 0
    for raw, field, stated in rows:
        if field and stated:
            value = stated.split()[0]
            number = int(value, 0)
            assert int.from_bytes(raw, "big") == number, (field, stated)
            if field == "crc":
                assert offset == len(data) - 4 and frame.crc32(data[:offset]) == number
            elif field in ("version", "type", "flags", "class", "epoch", "pn", "seq", "ack"):
                decoded = {
                    "type": header.type,
                    "flags": header.flags,
                    "class": header.cls,
                    "version": frame.VERSION,
                    "epoch": header.epoch,
                    "pn": header.pn,
                    "seq": header.seq,
                    "ack": header.ack,
                }[field]
                assert int(decoded) == number, field
            elif field == "timestamp":
                assert header.timestamp_us == number
            elif field == "length":
                assert header.length == number == len(data) - 48
        offset += len(raw)
    return data, header


def test_worked_example_plain_frame_in_protocol_md() -> None:
    blocks = _doc_blocks()
    data, header = _check_fields(blocks["commit"])
    hs = _load()["handshake"]["HS_COMMIT"]
    assert data.hex() == hs["frame"]
    assert header.type == FrameType.HS_COMMIT and header.epoch == 0


def test_worked_example_data_frame_in_protocol_md() -> None:
    blocks = _doc_blocks()
    data, header = _check_fields(blocks["data"])
    values = _doc_values("data")
    key, iv = bytes.fromhex(values["key"]), bytes.fromhex(values["iv"])
    assert epoch_key_iv(bytes.fromhex(values["chain"])) == (key, iv)
    nonce = iv + header.pn.to_bytes(8, "big")
    assert nonce.hex() == values["nonce"]
    plaintext = AESGCM(key).decrypt(nonce, data[44:-4], data[:44])
    assert plaintext.hex() == values["plaintext"]
    first = _load()["data_frames"][0]
    assert data.hex() == first["wire"] and key.hex() == first["key"]
    fields = {r[1] for r in blocks["data"] if r[1]}
    assert {
        "version",
        "type",
        "flags",
        "class",
        "epoch",
        "pn",
        "seq",
        "ack",
        "timestamp",
        "length",
        "ciphertext",
        "tag",
        "crc",
    } <= fields


def render_worked_example(name: str) -> str:
    """The annotated dump for docs/protocol.md (run with --render to print it)."""
    v = _load()
    wire = bytes.fromhex(
        v["handshake"]["HS_COMMIT"]["frame"] if name == "commit" else v["data_frames"][0]["wire"]
    )
    header, _ = frame.decode(wire)
    n = header.length
    fields = [
        (0, 1, "version", f"{frame.VERSION}"),
        (1, 1, "type", f"0x{int(header.type):02x} {header.type.name}"),
        (2, 1, "flags", f"0x{int(header.flags):02x} {_flag_names(header.flags)}"),
        (3, 1, "class", f"{int(header.cls)} {header.cls.name}"),
        (4, 4, "epoch", f"{header.epoch}"),
        (8, 8, "pn", f"{header.pn}"),
        (16, 8, "seq", f"{header.seq}"),
        (24, 8, "ack", f"{header.ack}"),
        (32, 8, "timestamp", f"{header.timestamp_us} (us)"),
        (40, 4, "length", f"{n}"),
    ]
    lines = [_row(off, wire[off : off + size], f, value) for off, size, f, value in fields]
    if name == "commit":
        parts = [("payload (commitment)", wire[44 : 44 + n])]
    else:
        parts = [("ciphertext", wire[44 : 44 + n - 16]), ("tag", wire[44 + n - 16 : 44 + n])]
    offset = 44
    for label, part in parts:
        for i in range(0, len(part), 16):
            lines.append(_row(offset + i, part[i : i + 16], label if i == 0 else "", ""))
        offset += len(part)
    crc = int.from_bytes(wire[-4:], "big")
    lines.append(_row(44 + n, wire[-4:], "crc", f"0x{crc:08x}"))
    return "\n".join(lines)


def _row(offset: int, raw: bytes, field: str, value: str) -> str:
    hexs = " ".join(f"{b:02x}" for b in raw)
    text = f"{field} = {value}" if value else field
    return f"{offset:04d}  {hexs:<47}  | {text}".rstrip()


def _flag_names(flags: Flags) -> str:
    names = [f.name for f in (Flags.FIRST, Flags.LAST, Flags.BATCH) if flags & f and f.name]
    return "|".join(names) if names else "none"


if __name__ == "__main__":
    if "--write" in sys.argv:
        VECTORS.write_text(_dump(generate()))
        print(f"wrote {VECTORS}")
    if "--render" in sys.argv:
        for block in ("commit", "data"):
            print(f"--- {block}\n{render_worked_example(block)}")
