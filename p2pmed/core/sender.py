"""Send side of a Session: control frames, ACKs and DATA frames (new and resent), sealed.

Per call: the handshake frame if due, queued control frames, an ACK if one is
owed, then DATA class by class (retransmits first) within the flight window.
CRITICAL frames go out on every live path, other classes on the preferred one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2pmed.core.config import FIRST_PN, NUM_CLASSES, SessionState
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass
from p2pmed.core.persist import FrameAdded, KeysChanged, PnReserved
from p2pmed.core.reliability import SentFrame, encode_ack

if TYPE_CHECKING:
    from p2pmed.core.session import Session

_FLAGS = [Flags(i) for i in range(8)]
_CLASSES = list(MessageClass)
_DATA = FrameType.DATA


class Sender:
    __slots__ = (
        "_s",
        "chunk",
        "limit_critical",
        "limit_other",
        "next_pn",
        "pn_ceiling",
        "recovery",
        "retx",
        "rx",
        "stats",
        "tx",
    )

    def __init__(self, session: Session) -> None:
        cfg = session.config
        self._s = session
        self.tx = session._tx
        self.rx = session._rx
        self.retx = session._retx
        self.stats = session.stats
        self.recovery = session._recovery
        self.next_pn = FIRST_PN
        self.pn_ceiling = FIRST_PN  # pns below it are reserved (durable when persisting)
        self.chunk = cfg.chunk_bytes
        # non-critical classes leave an eighth of the window to CRITICAL
        reserve_f = max(1, cfg.window_frames // 8)
        reserve_b = max(1024, cfg.window_bytes // 8)
        self.limit_critical = (cfg.window_frames, cfg.window_bytes)
        self.limit_other = (
            max(1, cfg.window_frames - reserve_f),
            max(1024, cfg.window_bytes - reserve_b),
        )

    def datagrams(self, now: float, max_datagrams: int | None) -> list[tuple[str, bytes]]:
        s = self._s
        out: list[tuple[str, bytes]] = []
        live = s._heartbeat.live()
        s._handshake.emit(now, live, out)
        if s._send is None or not s._confirmed:
            return self._count(out)
        if s._ctrl:
            self._send_ctrl(now, live, out)
        if s.state is SessionState.CLOSED:
            return self._count(out)
        if s._ack.immediate and live:
            self._send_ack(now, live, out)
        if s.state is SessionState.CLOSING or not live:
            return self._count(out)
        preferred = [live[0]]
        budget = -1 if max_datagrams is None else max_datagrams
        sched = s._sched
        for c in range(NUM_CLASSES):
            if budget == 0:
                break
            targets = live if c == 0 else preferred
            lim_f, lim_b = self.limit_critical if c == 0 else self.limit_other
            retx = self.retx[c]
            tx = self.tx[c]
            while retx and budget != 0:
                f = retx[0]
                if f.seq not in tx.unacked:
                    retx.popleft()
                    f.queued = False
                    continue
                if not f.in_flight and (
                    self.inflight_frames() >= lim_f
                    or self.inflight_bytes() + len(f.payload) > lim_b
                ):
                    break
                retx.popleft()
                f.queued = False
                self.stats["retransmits"] += 1
                self._transmit(f, now, targets, out)
                budget -= 1
            if not sched.queues[c]:
                continue
            while budget != 0:
                if self.inflight_frames() >= lim_f:
                    break
                room = lim_b - self.inflight_bytes()
                if room <= 0:
                    break
                plan = sched.build(c, min(room, self.chunk))
                if plan is None:
                    break
                seq = tx.next_seq
                tx.next_seq = seq + 1
                f = SentFrame(c, seq, plan.flags, plan.payload, plan.ts_us, plan.done)
                tx.unacked[seq] = f
                if s._persist:
                    s._changes.append(
                        FrameAdded(
                            c, seq, plan.flags, plan.payload, plan.ts_us, plan.done, plan.progress
                        )
                    )
                self._transmit(f, now, targets, out)
                budget -= 1
                if not sched.queues[c]:
                    break
        return self._count(out)

    def _count(self, out: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        if out:
            st = self.stats
            st["frames_sent"] += len(out)
            st["bytes_sent"] += sum(len(b) for _, b in out)
        return out

    def inflight_frames(self) -> int:
        t = self.tx
        return (
            t[0].inflight_frames
            + t[1].inflight_frames
            + t[2].inflight_frames
            + t[3].inflight_frames
            + t[4].inflight_frames
        )

    def inflight_bytes(self) -> int:
        t = self.tx
        return (
            t[0].inflight_bytes
            + t[1].inflight_bytes
            + t[2].inflight_bytes
            + t[3].inflight_bytes
            + t[4].inflight_bytes
        )

    def _transmit(
        self, f: SentFrame, now: float, targets: list[str], out: list[tuple[str, bytes]]
    ) -> None:
        c = f.cls
        pn = self.take_pn()
        send = self._s._send
        assert send is not None
        wire = send.seal(
            Header(
                _DATA,
                _FLAGS[f.flags],
                _CLASSES[c],
                0,
                pn,
                f.seq,
                self.rx[c].ack_point,
                f.ts_us,
                0,
            ),
            f.payload,
        )
        f.pn = pn
        f.sent_at = now
        f.sends += 1
        f.paths = tuple(targets)
        self.tx[c].mark_sent(f)
        rec = self.recovery
        rec.sent_pn[pn] = now
        for pid in targets:
            out.append((pid, wire))
        st = self.stats
        st["data_frames_sent"] += 1
        if len(targets) > 1:
            st["critical_copies"] += len(targets) - 1
        if rec.rto_deadline is None:
            rec.rto_deadline = now + rec.rtt.timeout()

    def take_pn(self) -> int:
        pn = self.next_pn
        if pn >= self.pn_ceiling:
            s = self._s
            self.pn_ceiling = pn + s.config.pn_block
            if s._persist:
                assert s._send is not None
                s._changes.append(PnReserved(self.pn_ceiling))
                s._changes.append(KeysChanged(s._send.export_state(), None))
        self.next_pn = pn + 1
        return pn

    def _seal_ctrl(self, ftype: FrameType, payload: bytes, now: float) -> bytes:
        s = self._s
        assert s._send is not None
        pn = self.take_pn()
        ts = int((now + s._ts_offset) * 1e6)
        return s._send.seal(
            Header(ftype, Flags.NONE, MessageClass.CRITICAL, 0, pn, 0, 0, ts, 0), payload
        )

    def _send_ctrl(self, now: float, live: list[str], out: list[tuple[str, bytes]]) -> None:
        s = self._s
        paths = s._heartbeat.paths
        ctrl, s._ctrl = s._ctrl, []
        for path_id, ftype, payload in ctrl:
            if path_id is None:
                targets = live or list(paths)
            elif path_id in paths:
                targets = [path_id]
            else:
                continue
            if not targets:
                continue
            wire = self._seal_ctrl(ftype, payload, now)
            for pid in targets:
                out.append((pid, wire))
            if ftype is FrameType.PING:
                self.stats["pings_sent"] += 1

    def _send_ack(self, now: float, live: list[str], out: list[tuple[str, bytes]]) -> None:
        s = self._s
        ack = s._ack
        entries = [
            (c, rx.ack_point, rx.ranges())
            for c, rx in enumerate(self.rx)
            if rx.next_seq or rx.buffer
        ]
        delay = int((now - ack.largest_at) * 1e6) if ack.largest_at is not None else 0
        payload = encode_ack(max(ack.largest_pn, 0), max(delay, 0), entries)
        wire = self._seal_ctrl(FrameType.ACK, payload, now)
        if ack.critical:
            targets = live
        elif s._heartbeat.is_alive(ack.path):
            targets = [ack.path]  # it just worked in one direction at least
        else:
            targets = live[:1]
        for pid in targets:
            out.append((pid, wire))
        ack.immediate = False
        ack.critical = False
        ack.deadline = None
        ack.unacked_frames = 0
        ack.unacked_bytes = 0
        self.stats["acks_sent"] += 1
