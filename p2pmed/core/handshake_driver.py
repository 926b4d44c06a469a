"""Drives the plaintext handshake of a Session: frames out, resends, frames in, keys set."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from p2pmed.core import frame as _frame
from p2pmed.core.config import SessionState
from p2pmed.core.crypto import RecvKeys, SendKeys
from p2pmed.core.errors import CryptoError, FrameError, StateError
from p2pmed.core.events import HandshakeCompleted
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass
from p2pmed.core.handshake import HANDSHAKE_PN, NO_FINGERPRINT, Handshake
from p2pmed.core.persist import Established, KeysChanged, MessageQueued

if TYPE_CHECKING:
    from p2pmed.core.session import Session

MAX_INTERVAL = 4.0


class HandshakeDriver:
    __slots__ = ("_s", "deadline", "hs", "interval", "out", "seen", "seen_on", "send_now")

    def __init__(self, session: Session) -> None:
        self._s = session
        self.hs: Handshake | None = None
        self.out: bytes | None = None  # the frame to (re)send until the peer answers
        self.send_now = False
        self.deadline: float | None = None
        self.interval = session.config.handshake_rto
        self.seen: dict[int, bytes] = {}
        self.seen_on: dict[int, set[str]] = {}  # paths each accepted frame came in on

    def start(self, now: float) -> None:
        step = self._new().start()
        assert step is not None
        self._set_out(step[0], step[1], now)

    def stop(self) -> None:
        self.out = None
        self.deadline = None

    def emit(self, now: float, live: list[str], out: list[tuple[str, bytes]]) -> None:
        if not self.send_now or self.out is None:
            return
        targets = live or list(self._s._heartbeat.paths)
        if targets:
            self.send_now = False
            self.deadline = now + self.interval
            for pid in targets:
                out.append((pid, self.out))

    def timer(self) -> float | None:
        return self.deadline if self.out is not None else None

    def on_timer(self, now: float) -> None:
        if self.out is not None and self.deadline is not None and now >= self.deadline:
            self.send_now = True
            self.deadline = None
            self.interval = min(self.interval * 2, MAX_INTERVAL)
            self._s.stats["handshake_retransmits"] += 1

    def on_frame(
        self, header: Header, payload: bytes, data: bytes, path_id: str, now: float
    ) -> None:
        s = self._s
        ftype = header.type
        seen = self.seen.get(ftype)
        if seen is not None and s.state is not SessionState.CLOSED:
            if seen != data:
                raise StateError("handshake", f"a different {ftype.name} after one was accepted")
            s.stats["duplicate_handshake"] += 1
            paths = self.seen_on.setdefault(ftype, set())
            if path_id not in paths:
                paths.add(path_id)  # the copy the peer sent on another path
                return
            if s.state is not SessionState.HANDSHAKING:
                # unauthenticated and of no use now: counted as rejected, never acted on
                raise CryptoError("handshake_replay", f"{ftype.name} again after establishment")
            return  # a resend while handshaking; our own resend timer answers resends
        if s.state is not SessionState.HANDSHAKING:
            raise StateError("state", f"{ftype.name} in state {s.state.value}")
        if ftype != self._expected():
            raise StateError("handshake", f"unexpected {ftype.name}")
        if header.pn != HANDSHAKE_PN[ftype]:
            raise FrameError("pn", "handshake frame with a wrong pn")
        hs = self.hs if self.hs is not None else self._new()
        try:
            step = hs.receive(ftype, payload)
        except CryptoError as e:
            s._reject(e.reason, "crypto", path_id)
            if hs.failed:
                s._closed(1, f"handshake refused: {e.reason}")
            return
        self.seen[ftype] = data
        self.seen_on[ftype] = {path_id}
        if step is not None:
            self._set_out(step[0], step[1], now)
        if hs.complete:
            self._established(hs, now)

    def _new(self) -> Handshake:
        s = self._s
        cfg = s.config
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
        cfg = self._s.config
        ts = int((now + cfg.timestamp_offset) * 1e6)
        header = Header(
            ftype, Flags.NONE, MessageClass.CRITICAL, 0, HANDSHAKE_PN[ftype], 0, 0, ts, len(payload)
        )
        self.out = _frame.encode(header, payload)
        self.send_now = True
        self.interval = cfg.handshake_rto

    def _expected(self) -> FrameType | None:
        hs = self.hs
        if self._s.config.initiator:
            if hs is None:
                return None
            return {"wait_reply": FrameType.HS_REPLY, "wait_confirm": FrameType.HS_CONFIRM}.get(
                hs.state
            )
        if hs is None or hs.state == "wait_commit":
            return FrameType.HS_COMMIT
        return FrameType.HS_REVEAL if hs.state == "wait_reveal" else None

    def _established(self, hs: Handshake, now: float) -> None:
        s = self._s
        r = hs.result
        assert r is not None
        s._send = SendKeys(r.send_chain, now=now)
        s._recv = RecvKeys(r.recv_chain)
        s._receiver.recv_epoch_saved = s._recv.epoch
        s.state = SessionState.ESTABLISHED
        s.sas, s.peer_fingerprint, s.peer_public = r.sas, r.peer_fingerprint, r.peer_public
        s._events.append(HandshakeCompleted(r.sas, r.peer_fingerprint))
        if s._persist:
            cfg = s.config
            ch = s._changes
            ch.append(
                Established(cfg.session_id, cfg.initiator, r.sas, r.peer_fingerprint, r.peer_public)
            )
            ch.append(KeysChanged(s._send.export_state(), s._recv.export_state()))
            for q in s._sched.queues:
                ch.extend(MessageQueued(m.msg_id, m.cls, m.data, m.ts_us) for m in q)
        s._queue_bind()  # a direct path connected before the handshake completed
        if s.config.initiator:
            s._confirm(now)  # pings go out at once and confirm the keys to the responder
