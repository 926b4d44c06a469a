"""Frame protection of an established session: keys, packet numbers and the replay window.

Owns the send and receive keys, the pn allocator (with the reserved block a store must
make durable first), the replay window, and the recent frames that tell a copy sent on
another path from a replay. Given frames, returns frames: no events, no session.
"""

from __future__ import annotations

from p2pmed.core.crypto import RecvKeys, ReplayWindow, SendKeys
from p2pmed.core.errors import CryptoError
from p2pmed.core.frame import Header

FIRST_PN = 4  # pn 0..3 belong to the plaintext handshake frames
# (pn, crc, paths it came in on) of recently accepted frames, to tell copies from replays: a
# sender sends a given frame at most once per path (CRITICAL DATA, ACKs and control frames go
# out on several paths), so the same bytes again on a path that delivered them are a replay.
RECENT = 1024


class FrameProtection:
    __slots__ = (
        "next_pn",
        "pn_block",
        "pn_ceiling",
        "recent",
        "recv",
        "recv_epoch_saved",
        "replay",
        "replay_saved",
        "reserved",
        "send",
    )

    def __init__(self, pn_block: int) -> None:
        self.send: SendKeys | None = None
        self.recv: RecvKeys | None = None
        self.pn_block = pn_block
        self.next_pn = FIRST_PN
        self.pn_ceiling = FIRST_PN  # pns below it are reserved (durable when persisting)
        self.reserved = False  # a new block was reserved since take_reserved()
        self.replay = ReplayWindow()
        self.replay_saved = -1  # highest pn reported by take_replay_high()
        self.recv_epoch_saved = 0  # receive epoch reported by take_recv_epoch()
        self.recent: list[tuple[int, bytes, tuple[str, ...]] | None] = [None] * RECENT

    @property
    def ready(self) -> bool:
        return self.send is not None

    def install(self, send: SendKeys, recv: RecvKeys) -> None:
        self.send = send
        self.recv = recv
        self.recv_epoch_saved = recv.epoch

    # -- sending -------------------------------------------------------------------------

    def take_pn(self) -> int:
        pn = self.next_pn
        if pn >= self.pn_ceiling:
            self.pn_ceiling = pn + self.pn_block
            self.reserved = True
        self.next_pn = pn + 1
        return pn

    def seal(self, header: Header, payload: bytes) -> bytes:
        """`header.pn` from take_pn()."""
        send = self.send
        assert send is not None
        return send.seal(header, payload)

    def take_reserved(self) -> int | None:
        """The new pn ceiling if a block was reserved since the last call."""
        if not self.reserved:
            return None
        self.reserved = False
        return self.pn_ceiling

    @property
    def send_epoch(self) -> int:
        assert self.send is not None
        return self.send.epoch

    def needs_ratchet(self, now: float, *, max_frames: int, max_age: float) -> bool:
        assert self.send is not None
        return self.send.needs_ratchet(now, max_frames=max_frames, max_age=max_age)

    def ratchet(self, now: float) -> None:
        assert self.send is not None
        self.send.ratchet(now)

    def send_state(self) -> dict[str, object]:
        assert self.send is not None
        return self.send.export_state()

    # -- receiving -----------------------------------------------------------------------

    def open(self, header: Header, data: bytes, path_id: str, now: float) -> bytes | None:
        """The plaintext, or None for the copy of an accepted frame sent on another path.
        Raises CryptoError on a replay, a frame that does not authenticate or an unknown epoch."""
        recv = self.recv
        assert recv is not None
        pn = header.pn
        crc = data[-4:]
        try:
            self.replay.check(pn)
        except CryptoError:
            slot = pn & (RECENT - 1)
            seen = self.recent[slot]
            if seen is not None and seen[0] == pn and seen[1] == crc:
                if path_id in seen[2]:
                    raise CryptoError("replay", "a frame already received on this path") from None
                self.recent[slot] = (pn, crc, (*seen[2], path_id))
                return None
            raise
        plaintext = recv.open(header, data, now)
        self.replay.accept(pn)
        self.recent[pn & (RECENT - 1)] = (pn, crc, (path_id,))
        return plaintext

    def take_recv_epoch(self) -> dict[str, object] | None:
        """The receive keys' state if their epoch moved since the last call."""
        recv = self.recv
        if recv is None or recv.epoch == self.recv_epoch_saved:
            return None
        self.recv_epoch_saved = recv.epoch
        return recv.export_state()

    def take_replay_high(self) -> int | None:
        """The highest accepted pn if it moved since the last call."""
        high = self.replay.highest
        if high <= self.replay_saved:
            return None
        self.replay_saved = high
        return high

    def expire(self, now: float) -> None:
        if self.recv is not None:
            self.recv.expire(now)

    # -- durable state -------------------------------------------------------------------

    def export(self) -> tuple[dict[str, object], dict[str, object], int, int]:
        """(send keys, receive keys, pn ceiling, highest accepted pn)."""
        assert self.send is not None and self.recv is not None
        return (
            self.send.export_state(),
            self.recv.export_state(),
            self.pn_ceiling,
            self.replay.highest,
        )

    def restore(
        self,
        send_keys: dict[str, object],
        recv_keys: dict[str, object],
        pn_ceiling: int,
        replay_high: int,
    ) -> None:
        self.install(SendKeys.from_state(send_keys), RecvKeys.from_state(recv_keys))
        self.next_pn = self.pn_ceiling = max(pn_ceiling, FIRST_PN)
        if replay_high >= 0:
            # everything at or below the saved high counts as seen: the peer resends
            # anything we lost with a fresh pn anyway
            self.replay = ReplayWindow.from_state({"highest": replay_high, "bits": "f" * 1024})
            self.replay_saved = replay_high
