"""Key schedule, AEAD sealing/opening of frames, replay window and SAS (protocol.md 2-3).

Python cannot wipe memory: "erasing" a key here means dropping every reference to it
so it is never used again and can be garbage collected. See docs/security.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2pmed.core.errors import CryptoError
from p2pmed.core.frame import (
    CRC_SIZE,
    HANDSHAKE_TYPES,
    HEADER,
    HEADER_SIZE,
    MAX_CHUNK,
    MAX_FRAME,
    TAG_SIZE,
    U64,
    VERSION,
    Header,
    crc32,
)

KEY_SIZE = 32
IV_SIZE = 4
CHAIN_SIZE = 32
REKEY_FRAMES = 2**24
REKEY_SECONDS = 3600.0
HARD_FRAME_LIMIT = 2**32  # seal refuses beyond this many frames in one epoch
PREVIOUS_EPOCH_GRACE = 10.0
MAX_EPOCH_AHEAD = 2
REPLAY_WINDOW = 4096

_OPEN_MIN = HEADER_SIZE + TAG_SIZE + CRC_SIZE


def hkdf(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256, full extract-and-expand (same as WebCrypto's HKDF)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def derive_chains(shared: bytes, transcript_hash: bytes) -> tuple[bytes, bytes]:
    """(chain[i2r, 1], chain[r2i, 1]) from the X25519 secret and the transcript hash T."""
    i2r = hkdf(shared, salt=transcript_hash, info=b"p2pmed v1 i2r", length=CHAIN_SIZE)
    r2i = hkdf(shared, salt=transcript_hash, info=b"p2pmed v1 r2i", length=CHAIN_SIZE)
    return i2r, r2i


def epoch_key_iv(chain: bytes) -> tuple[bytes, bytes]:
    """(key[d, e], iv[d, e]) from chain[d, e]."""
    key = hkdf(chain, salt=b"", info=b"p2pmed v1 key", length=KEY_SIZE)
    iv = hkdf(chain, salt=b"", info=b"p2pmed v1 iv", length=IV_SIZE)
    return key, iv


def next_chain(chain: bytes) -> bytes:
    """chain[d, e+1] from chain[d, e]."""
    return hkdf(chain, salt=b"", info=b"p2pmed v1 next", length=CHAIN_SIZE)


def derive_sas(transcript_hash: bytes) -> str:
    """Six decimal digits shown as "123 456"; both endpoints must show the same."""
    digest = hashlib.sha256(b"p2pmed v1 sas" + transcript_hash).digest()
    digits = f"{int.from_bytes(digest[:4], 'big') % 1_000_000:06d}"
    return f"{digits[:3]} {digits[3:]}"


class _EpochKey:
    """The AEAD of one direction and epoch, built once and reused for every frame."""

    __slots__ = ("aead", "epoch", "iv", "key")

    def __init__(self, epoch: int, key: bytes, iv: bytes) -> None:
        self.epoch = epoch
        self.key = key
        self.iv = iv
        self.aead = AESGCM(key)

    @classmethod
    def from_chain(cls, epoch: int, chain: bytes) -> _EpochKey:
        key, iv = epoch_key_iv(chain)
        return cls(epoch, key, iv)


def _bad_state(detail: str) -> CryptoError:
    return CryptoError("bad_state", detail)


def _get_int(state: Mapping[str, object], name: str, lo: int, hi: int) -> int:
    value = state.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise _bad_state(f"{name} must be an integer in [{lo}, {hi}]")
    return value


def _get_float(state: Mapping[str, object], name: str) -> float:
    value = state.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _bad_state(f"{name} must be a number")
    return float(value)


def _get_hex(state: Mapping[str, object], name: str, size: int) -> bytes:
    value = state.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise _bad_state(f"{name} must be {size} bytes as hex")
    return raw


def _check_chain(chain: bytes, epoch: int) -> None:
    if not isinstance(chain, bytes) or len(chain) != CHAIN_SIZE:
        raise ValueError("chain must be 32 bytes")
    if not 1 <= epoch <= 0xFFFFFFFF:
        raise ValueError("epoch must be in [1, 2**32-1]")


class SendKeys:
    """Sender side of one direction: seals frames with key[d, epoch]."""

    __slots__ = ("_chain", "_frames", "_key", "_last_pn", "_started", "epoch")

    def __init__(self, chain: bytes, *, epoch: int = 1, now: float) -> None:
        _check_chain(chain, epoch)
        self.epoch = epoch
        self._chain = chain
        self._key = _EpochKey.from_chain(epoch, chain)
        self._frames = 0
        self._started = now
        self._last_pn = -1

    @property
    def frames_in_epoch(self) -> int:
        return self._frames

    def seal(self, header: Header, plaintext: bytes) -> bytes:
        """Encrypt and frame. Returns header || ciphertext || tag || crc.

        `header.length` is recomputed and `header.epoch` replaced by `self.epoch`.
        `header.pn` must be larger than every pn sealed before by this object:
        a nonce is never reused (CryptoError("nonce") otherwise).
        """
        if header.type in HANDSHAKE_TYPES:
            raise ValueError("handshake frames are not encrypted")
        if len(plaintext) > MAX_CHUNK:
            raise ValueError(f"plaintext of {len(plaintext)} bytes exceeds {MAX_CHUNK}")
        pn = header.pn
        if not 0 <= pn <= U64:
            raise ValueError("pn out of range")
        if pn <= self._last_pn:
            raise CryptoError("nonce", f"pn {pn} not above last sealed pn {self._last_pn}")
        if self._frames >= HARD_FRAME_LIMIT:
            raise CryptoError("exhausted", "too many frames in this epoch; ratchet first")
        head = HEADER.pack(
            VERSION,
            header.type,
            header.flags,
            header.cls,
            self.epoch,
            pn,
            header.seq,
            header.ack,
            header.timestamp_us,
            len(plaintext) + TAG_SIZE,
        )
        key = self._key
        body = head + key.aead.encrypt(key.iv + pn.to_bytes(8, "big"), plaintext, head)
        self._last_pn = pn
        self._frames += 1
        return body + crc32(body).to_bytes(4, "big")

    def needs_ratchet(
        self, now: float, *, max_frames: int = REKEY_FRAMES, max_age: float = REKEY_SECONDS
    ) -> bool:
        return self._frames >= max_frames or now - self._started >= max_age

    def ratchet(self, now: float) -> None:
        """Move to epoch+1; the old chain and key are dropped."""
        if self.epoch >= 0xFFFFFFFF:
            raise CryptoError("exhausted", "epoch counter exhausted")
        chain = next_chain(self._chain)
        self._key = _EpochKey.from_chain(self.epoch + 1, chain)
        self._chain = chain
        self.epoch += 1
        self._frames = 0
        self._started = now

    def export_state(self) -> dict[str, object]:
        """JSON-able state for the durable store (contains secret key material)."""
        return {
            "epoch": self.epoch,
            "chain": self._chain.hex(),
            "frames": self._frames,
            "started": self._started,
            "last_pn": self._last_pn,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, object]) -> SendKeys:
        """Restore from export_state(); raises CryptoError("bad_state") on malformed input."""
        epoch = _get_int(state, "epoch", 1, 0xFFFFFFFF)
        keys = cls(_get_hex(state, "chain", CHAIN_SIZE), epoch=epoch, now=0.0)
        keys._frames = _get_int(state, "frames", 0, HARD_FRAME_LIMIT)
        keys._started = _get_float(state, "started")
        keys._last_pn = _get_int(state, "last_pn", -1, U64)
        return keys


class RecvKeys:
    """Receiver side of one direction: opens frames of the current, previous or next epochs."""

    __slots__ = ("_ahead", "_chain", "_cur", "_prev", "_prev_until", "epoch")

    def __init__(self, chain: bytes, *, epoch: int = 1) -> None:
        _check_chain(chain, epoch)
        self.epoch = epoch
        self._chain = chain
        self._cur = _EpochKey.from_chain(epoch, chain)
        self._prev: _EpochKey | None = None
        self._prev_until = 0.0
        # (chain, key) of epoch+1, epoch+2, derived on demand; used only once a frame opens
        self._ahead: list[tuple[bytes, _EpochKey]] = []

    def open(self, header: Header, frame: bytes, now: float) -> bytes:
        """Verify and decrypt a whole wire frame; returns the plaintext.

        Raises CryptoError("auth") if the frame does not authenticate (or is malformed or
        disagrees with `header`), CryptoError("epoch") if no key for its epoch is held.
        Raises nothing else, for any input.
        """
        try:
            return self._open(header, frame, now)
        except CryptoError:
            raise
        except Exception as exc:  # hostile input must only ever give CryptoError
            raise CryptoError("auth", f"malformed input: {type(exc).__name__}") from None

    def _open(self, header: Header, frame: bytes, now: float) -> bytes:
        n = len(frame)
        if n < _OPEN_MIN or n > MAX_FRAME:
            raise CryptoError("auth", f"frame of {n} bytes cannot hold a tag")
        epoch = int.from_bytes(frame[4:8], "big")
        pn = int.from_bytes(frame[8:16], "big")
        length = int.from_bytes(frame[40:44], "big")
        if header.epoch != epoch or header.pn != pn or length != n - HEADER_SIZE - CRC_SIZE:
            raise CryptoError("auth", "header does not match the frame bytes")
        if self._prev is not None and now >= self._prev_until:
            self._prev = None
        step = epoch - self.epoch
        if step == 0:
            key = self._cur
        elif self._prev is not None and epoch == self._prev.epoch:
            key = self._prev
        elif 0 < step <= MAX_EPOCH_AHEAD:
            while len(self._ahead) < step:
                base = self._ahead[-1][0] if self._ahead else self._chain
                chain = next_chain(base)
                self._ahead.append(
                    (chain, _EpochKey.from_chain(self.epoch + len(self._ahead) + 1, chain))
                )
            key = self._ahead[step - 1][1]
        else:
            raise CryptoError("epoch", f"no key for epoch {epoch} (holding {self.epoch})")
        aad = frame[:HEADER_SIZE]
        try:
            plaintext = key.aead.decrypt(
                key.iv + pn.to_bytes(8, "big"), frame[HEADER_SIZE:-CRC_SIZE], aad
            )
        except InvalidTag:
            raise CryptoError("auth", "AEAD tag does not verify") from None
        if step < 0:
            self._prev_until = now + PREVIOUS_EPOCH_GRACE
        elif step > 0:
            self._advance(step, now)
        return plaintext

    def _advance(self, step: int, now: float) -> None:
        ahead = self._ahead
        # epoch e+step becomes current; e+step-1 stays as previous for the grace period.
        # When step == 2, epoch e is dropped at once (the sender is two epochs on).
        self._prev = self._cur if step == 1 else ahead[step - 2][1]
        self._prev_until = now + PREVIOUS_EPOCH_GRACE
        self._chain, self._cur = ahead[step - 1]
        self.epoch = self._cur.epoch
        self._ahead = ahead[step:]

    def expire(self, now: float) -> None:
        """Drop the previous epoch's key if its grace period is over (call from a timer)."""
        if self._prev is not None and now >= self._prev_until:
            self._prev = None

    @property
    def previous_epoch(self) -> int | None:
        return None if self._prev is None else self._prev.epoch

    def export_state(self) -> dict[str, object]:
        """JSON-able state for the durable store (contains secret key material)."""
        state: dict[str, object] = {"epoch": self.epoch, "chain": self._chain.hex()}
        if self._prev is not None:
            state["prev"] = {
                "epoch": self._prev.epoch,
                "key": self._prev.key.hex(),
                "iv": self._prev.iv.hex(),
                "until": self._prev_until,
            }
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, object]) -> RecvKeys:
        """Restore from export_state(); raises CryptoError("bad_state") on malformed input."""
        epoch = _get_int(state, "epoch", 1, 0xFFFFFFFF)
        keys = cls(_get_hex(state, "chain", CHAIN_SIZE), epoch=epoch)
        prev = state.get("prev")
        if prev is not None:
            if not isinstance(prev, Mapping):
                raise _bad_state("prev must be a mapping")
            prev_epoch = _get_int(prev, "epoch", 1, 0xFFFFFFFF)
            if prev_epoch >= epoch:
                raise _bad_state("prev epoch must be older than epoch")
            keys._prev = _EpochKey(
                prev_epoch, _get_hex(prev, "key", KEY_SIZE), _get_hex(prev, "iv", IV_SIZE)
            )
            keys._prev_until = _get_float(prev, "until")
        return keys


class ReplayWindow:
    """Packet numbers accepted so far: the highest one plus a 4096-bit window behind it."""

    __slots__ = ("_bits", "_highest")

    def __init__(self) -> None:
        self._highest = -1
        self._bits = 0  # bit i set: pn (highest - i) was accepted

    @property
    def highest(self) -> int:
        return self._highest

    def check(self, pn: int) -> None:
        """Raise CryptoError("replay") if pn was accepted before or is too old to tell."""
        if not 0 <= pn <= U64:
            raise CryptoError("replay", f"pn {pn} out of range")
        if pn > self._highest:
            return
        behind = self._highest - pn
        if behind >= REPLAY_WINDOW:
            raise CryptoError("replay", f"pn {pn} is older than the replay window")
        if (self._bits >> behind) & 1:
            raise CryptoError("replay", f"pn {pn} was already accepted")

    def accept(self, pn: int) -> None:
        """Record pn; call only after check() passed and the AEAD opened."""
        if not 0 <= pn <= U64:
            raise CryptoError("replay", f"pn {pn} out of range")
        if pn > self._highest:
            shift = pn - self._highest
            self._bits = 1 if shift >= REPLAY_WINDOW else ((self._bits << shift) | 1)
            self._bits &= (1 << REPLAY_WINDOW) - 1
            self._highest = pn
        else:
            behind = self._highest - pn
            if behind < REPLAY_WINDOW:
                self._bits |= 1 << behind

    def export_state(self) -> dict[str, object]:
        return {"highest": self._highest, "bits": format(self._bits, "x")}

    @classmethod
    def from_state(cls, state: Mapping[str, object]) -> ReplayWindow:
        window = cls()
        window._highest = _get_int(state, "highest", -1, U64)
        bits = state.get("bits")
        try:
            value = int(bits, 16) if isinstance(bits, str) and bits else -1
        except ValueError:
            value = -1
        if not 0 <= value < (1 << REPLAY_WINDOW):
            raise _bad_state("bits must be a hex bitmap of at most 4096 bits")
        window._bits = value
        return window
