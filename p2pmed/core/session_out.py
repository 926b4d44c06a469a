"""Frames out: what a Session hands to the transports (handshake, control frames, the ACK
owed, DATA by class within the flight window), sealed with fresh packet numbers."""

from __future__ import annotations

from p2pmed.core.config import NUM_CLASSES, SessionState
from p2pmed.core.frame import Flags, FrameType, Header, MessageClass
from p2pmed.core.persist import FrameAdded, KeysChanged, PnReserved
from p2pmed.core.reliability import SentFrame
from p2pmed.core.session_base import CLASSES, SessionBase

_FLAGS = [Flags(i) for i in range(8)]
_DATA = FrameType.DATA


class SessionOut(SessionBase):
    # -- frames out ----------------------------------------------------------------------

    def datagrams_to_send(
        self, now: float, max_datagrams: int | None = None
    ) -> list[tuple[str, bytes]]:
        """Frames to hand to the transports now, as (path_id, frame bytes).

        `max_datagrams` caps the DATA frames produced (what the transport can take);
        the rest waits, in priority order, for the next call.
        """
        out: list[tuple[str, bytes]] = []
        hb = self._heartbeat
        live = hb.live()
        if self._handshake.send_now:
            targets = live or list(hb.paths)
            hs_frame = self._handshake.emit(now, targets)
            if hs_frame is not None:
                out.extend((pid, hs_frame) for pid in targets)
        if not self._prot.ready or not self._confirmed:
            return self._count(out)
        if hb.outgoing:
            self._take_pings()
        if self._ctrl:
            self._send_ctrl(now, live, out)
        if self.state is SessionState.CLOSED:
            return self._count(out)
        if self._receiver.ack_due and live:
            self._send_ack(now, live, out)
        if self.state is SessionState.CLOSING or not live:
            return self._count(out)
        self._send_data(now, live, max_datagrams, out)
        return self._count(out)

    def _send_data(
        self, now: float, live: list[str], max_datagrams: int | None, out: list[tuple[str, bytes]]
    ) -> None:
        preferred = [live[0]]
        budget = -1 if max_datagrams is None else max_datagrams
        streams, sender = self._streams, self._sender
        st = self._stats
        persist = self._persist
        for c in range(NUM_CLASSES):
            targets = live if c == 0 else preferred
            while budget != 0:
                item = sender.next_frame(streams, c)
                if item is None:
                    break
                f, plan = item
                if plan is None:
                    st.retransmits += 1
                elif persist:
                    self._changes.append(
                        FrameAdded(
                            c, f.seq, plan.flags, plan.payload, plan.ts_us, plan.done, plan.progress
                        )
                    )
                self._transmit(f, now, targets, out)
                budget -= 1
            if budget == 0:
                break

    def _count(self, out: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        if out:
            st = self._stats
            st.frames_sent += len(out)
            st.bytes_sent += sum(len(b) for _, b in out)
        return out

    def _take_pn(self) -> int:
        prot = self._prot
        pn = prot.take_pn()
        if self._persist:
            ceiling = prot.take_reserved()
            if ceiling is not None:
                self._changes.append(PnReserved(ceiling))
                self._changes.append(KeysChanged(prot.send_state(), None))
        return pn

    def _transmit(
        self, f: SentFrame, now: float, targets: list[str], out: list[tuple[str, bytes]]
    ) -> None:
        c = f.cls
        pn = self._take_pn()
        header = Header(
            _DATA,
            _FLAGS[f.flags],
            CLASSES[c],
            0,
            pn,
            f.seq,
            self._streams.rx[c].ack_point,
            f.ts_us,
            0,
        )
        wire = self._prot.seal(header, f.payload)
        f.pn = pn
        f.sent_at = now
        f.sends += 1
        f.paths = tuple(targets)
        self._streams.tx[c].mark_sent(f)
        self._recovery.on_sent(pn, now)
        for pid in targets:
            out.append((pid, wire))
        st = self._stats
        st.data_frames_sent += 1
        if len(targets) > 1:
            st.critical_copies += len(targets) - 1

    def _seal_ctrl(self, ftype: FrameType, payload: bytes, now: float) -> bytes:
        pn = self._take_pn()
        ts = int((now + self._ts_offset) * 1e6)
        return self._prot.seal(
            Header(ftype, Flags.NONE, MessageClass.CRITICAL, 0, pn, 0, 0, ts, 0), payload
        )

    def _send_ctrl(self, now: float, live: list[str], out: list[tuple[str, bytes]]) -> None:
        paths = self._heartbeat.paths
        ctrl, self._ctrl = self._ctrl, []
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
                self._stats.pings_sent += 1

    def _send_ack(self, now: float, live: list[str], out: list[tuple[str, bytes]]) -> None:
        rcv = self._receiver
        payload = rcv.build_ack(self._streams.ack_entries(), now)
        wire = self._seal_ctrl(FrameType.ACK, payload, now)
        for pid in rcv.ack_targets(live, self._heartbeat.is_alive(rcv.ack.path)):
            out.append((pid, wire))
        rcv.ack_sent()
        self._stats.acks_sent += 1
