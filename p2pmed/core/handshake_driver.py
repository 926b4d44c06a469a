"""Drives the plaintext handshake: the frame to (re)send, resends, and frames in.

Owns the handshake state machine, the frame it resends until answered and the frames it
accepted. Returns a HandshakeStep; the session sets keys, state and events from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from p2pmed.core import frame as _frame
from p2pmed.core.config import SessionConfig, SessionState
from p2pmed.core.errors import CryptoError, FrameError, ProtocolError, StateError
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass
from p2pmed.core.handshake import HANDSHAKE_PN, NO_FINGERPRINT, Handshake, HandshakeResult

MAX_INTERVAL = 4.0


@dataclass(frozen=True, slots=True)
class HandshakeStep:
    """What one handshake frame did."""

    duplicate: bool = False  # a frame accepted before, again
    error: ProtocolError | None = None  # reject the frame with this
    refused: bool = False  # the handshake failed for good: close
    result: HandshakeResult | None = None  # the handshake completed


_NOTHING = HandshakeStep()
_DUPLICATE = HandshakeStep(duplicate=True)


class HandshakeDriver:
    __slots__ = ("config", "deadline", "hs", "interval", "out", "seen", "seen_on", "send_now")

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.hs: Handshake | None = None
        self.out: bytes | None = None  # the frame to (re)send until the peer answers
        self.send_now = False
        self.deadline: float | None = None
        self.interval = config.handshake_rto
        self.seen: dict[int, bytes] = {}
        self.seen_on: dict[int, set[str]] = {}  # paths each accepted frame came in on

    @property
    def started(self) -> bool:
        return self.hs is not None

    def start(self, now: float) -> None:
        step = self._new().start()
        assert step is not None
        self._set_out(step[0], step[1], now)

    def stop(self) -> None:
        self.out = None
        self.deadline = None

    def path_added(self) -> None:
        if self.out is not None:
            self.send_now = True

    def emit(self, now: float, targets: list[str]) -> bytes | None:
        """The handshake frame to send on `targets` now, if one is due."""
        if not self.send_now or self.out is None or not targets:
            return None
        self.send_now = False
        self.deadline = now + self.interval
        return self.out

    def timer(self) -> float | None:
        return self.deadline if self.out is not None else None

    def on_timer(self, now: float) -> bool:
        """True if the handshake frame is due again (a resend)."""
        if self.out is not None and self.deadline is not None and now >= self.deadline:
            self.send_now = True
            self.deadline = None
            self.interval = min(self.interval * 2, MAX_INTERVAL)
            return True
        return False

    def on_frame(
        self,
        header: Header,
        payload: bytes,
        data: bytes,
        path_id: str,
        now: float,
        state: SessionState,
    ) -> HandshakeStep:
        """A handshake frame, in session state `state`. Raises a ProtocolError for a frame
        that does not fit."""
        ftype = header.type
        seen = self.seen.get(ftype)
        if seen is not None and state is not SessionState.CLOSED:
            if seen != data:
                raise StateError("handshake", f"a different {ftype.name} after one was accepted")
            paths = self.seen_on.setdefault(ftype, set())
            if path_id not in paths:
                paths.add(path_id)  # the copy the peer sent on another path
                return _DUPLICATE
            if state is not SessionState.HANDSHAKING:
                # unauthenticated and of no use now: counted as rejected, never acted on
                error = CryptoError("handshake_replay", f"{ftype.name} again after establishment")
                return HandshakeStep(duplicate=True, error=error)
            return _DUPLICATE  # a resend while handshaking; our own resend timer answers resends
        if state is not SessionState.HANDSHAKING:
            raise StateError("state", f"{ftype.name} in state {state.value}")
        if ftype != self._expected():
            raise StateError("handshake", f"unexpected {ftype.name}")
        if header.pn != HANDSHAKE_PN[ftype]:
            raise FrameError("pn", "handshake frame with a wrong pn")
        hs = self.hs if self.hs is not None else self._new()
        try:
            step = hs.receive(ftype, payload)
        except CryptoError as e:
            return HandshakeStep(error=e, refused=hs.failed)
        self.seen[ftype] = data
        self.seen_on[ftype] = {path_id}
        if step is not None:
            self._set_out(step[0], step[1], now)
        if hs.complete:
            return HandshakeStep(result=hs.result)
        return _NOTHING

    def _new(self) -> Handshake:
        cfg = self.config
        self.hs = Handshake(
            cfg.identity,
            initiator=cfg.initiator,
            session_id=cfg.session_id,
            # always zero (docs/protocol.md): direct paths are bound by PATH_BIND to the
            # certificates DTLS verified, never to fingerprints read from SDP
            local_fp=NO_FINGERPRINT,
            remote_fp=NO_FINGERPRINT,
            peer_public=cfg.peer_public,
            random=os.urandom if cfg.random is None else cfg.random,
        )
        return self.hs

    def _set_out(self, ftype: FrameType, payload: bytes, now: float) -> None:
        cfg = self.config
        ts = int((now + cfg.timestamp_offset) * 1e6)
        header = Header(
            ftype, Flags.NONE, MessageClass.CRITICAL, 0, HANDSHAKE_PN[ftype], 0, 0, ts, len(payload)
        )
        self.out = _frame.encode(header, payload)
        self.send_now = True
        self.interval = cfg.handshake_rto

    def _expected(self) -> FrameType | None:
        if self.hs is None:
            return None if self.config.initiator else FrameType.HS_COMMIT
        return self.hs.expected()
