"""One remote endpoint: its Session, its relay path and its (re-negotiated) direct path.

The session core decides what bytes go out and when; this class feeds it input (frames, timers,
path changes) and moves its output to the right transport. It also owns the WebRTC negotiation
with that peer: the patient offers; on loss of the direct path it negotiates a fresh
RTCPeerConnection in the background with backoff (aiortc cannot restart ICE). A direct path
carries data and media only once bound (docs/protocol.md, PATH_BIND): both sides sent, over the
E2E session, the certificates their completed DTLS handshake verified, and each checked the
other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaBlackhole
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from p2pmed.core import events as ev
from p2pmed.core.frame import HANDSHAKE_TYPES, FrameType, MessageClass
from p2pmed.core.session import Session
from p2pmed.transport.datachannel import DirectPath, dtls_fingerprints, own_certificate_fp
from p2pmed.transport.paths import Backoff, PathManager
from p2pmed.transport.relay import RelayPath
from p2pmed.transport.sdp import SdpError, check_sdp

if TYPE_CHECKING:
    from p2pmed.node.node import Node

log = logging.getLogger("p2pmed.node.peer")

ANSWER_TIMEOUT = 10.0
OPEN_TIMEOUT = 15.0
CANDIDATE_TIMEOUT = 30.0  # a new handshake run alongside an established session must finish
_DATA = int(FrameType.DATA)
_HS_COMMIT = int(FrameType.HS_COMMIT)
_HANDSHAKE = frozenset(int(t) for t in HANDSHAKE_TYPES)
_CRITICAL = int(MessageClass.CRITICAL)


def _now() -> float:
    return time.time()


class PeerLink:
    def __init__(self, node: Node, peer_id: str, peer_role: str, session: Session) -> None:
        self.node = node
        self.peer_id = peer_id
        self.peer_role = peer_role
        self.session = session
        self.candidate: Session | None = None  # a new handshake run alongside (see receive)
        self.relay = RelayPath(peer_id, self._relay_send)
        self.direct: DirectPath | None = None
        self.pending: DirectPath | None = None
        self.paths = PathManager(thresholds=node.config.thresholds)
        self.backoff = Backoff(initial=node.config.reconnect_initial, maximum=8.0)
        self.established = session.state.name in ("ESTABLISHED", "REKEYING")
        self.established_at: float | None = None  # when our handshake completed; None: never
        self.handshake_started = self.established
        self.sas = ""
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._in_flush = False
        self._timer: asyncio.TimerHandle | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._answer: asyncio.Future[str] | None = None
        self._negotiator: asyncio.Task[None] | None = None
        self._renegotiate_now = asyncio.Event()
        self._skip_backoff = False  # the next offer goes out at once (the peer just came back)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.direct_generation = 0
        self.stats: dict[str, int] = {"relay_frames_in": 0, "direct_frames_in": 0}
        self.present = False  # the server says the peer is here and admitted (relay possible)
        self.source_pos = 0  # patient: index of the last source message queued for this peer

    # ---- driving the session ----
    def kick(self, urgent: bool = False) -> None:
        """Run the session output soon (coalesced), or now if `urgent`: a CRITICAL frame just
        came in, and behind call_soon its message would wait for every callback already
        queued (during a bulk transfer, a backlog of SCTP chunks: several ms). Only called so
        from transport callbacks, never from inside app code, so app handlers do not re-enter."""
        if self.closed:
            return
        if urgent and not self._in_flush:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Session output, in the order the durability contract asks for: make the session's
        changes durable, then hand frames to the transports, then act on events."""
        self._flush_scheduled = False
        if self.closed:
            return
        self._in_flush = True
        try:
            self._flush_once()
        finally:
            self._in_flush = False

    def _flush_once(self) -> None:
        self._flush_candidate()
        session = self.session
        frames = session.datagrams_to_send(_now())
        self.node.persist()
        for path_id, frame in frames:
            if path_id == "relay":
                self.relay.send(frame)
            elif path_id == "direct" and self.direct is not None and self.direct.bound:
                self.direct.send(frame)
        inbox: dict[int, int] | None = None
        store = self.node.store
        while (event := session.next_event()) is not None:
            self._handle_event(event)
            if store is not None and isinstance(event, ev.MessageReceived):
                # the app acted on it: drop it from the store's inbox right away, so a crash
                # can at most repeat this one message (flagged "replayed" after a restart)
                peer_store = store.peer(self.peer_id)
                if inbox is None:
                    inbox = {row.msg_id: row.row for row in peer_store.inbox()}
                row = inbox.get(event.message_id)
                if row is not None:
                    peer_store.inbox_done(row, delete=True)
        self._arm_timer()

    def session_event(self, event: object) -> None:
        self._handle_event(event)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.session.get_timer()
        if self.candidate is not None:
            other = self.candidate.get_timer()
            if other is not None and (when is None or other < when):
                when = other
        if when is not None and not self.closed:
            self._timer = self._loop.call_later(max(0.0, when - _now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = _now()
        self.session.handle_timer(now)
        if self.candidate is not None:
            self.candidate.handle_timer(now)
        self._flush()

    def receive(self, frame: bytes, path_id: str) -> None:
        self.stats[f"{path_id}_frames_in"] = self.stats.get(f"{path_id}_frames_in", 0) + 1
        if len(frame) > 1 and frame[1] in _HANDSHAKE and self._to_candidate(frame, path_id):
            return
        self.session.receive(frame, path_id, _now())
        self.kick(urgent=len(frame) > 3 and frame[1] == _DATA and frame[3] == _CRITICAL)

    def _to_candidate(self, frame: bytes, path_id: str) -> bool:
        """A handshake frame while we hold an established session. An unauthenticated frame
        never touches that session: a new HS_COMMIT (the patient restarted without its
        store, or someone replays an old one) starts a candidate session run alongside; it
        replaces the old one only once its signed handshake completed."""
        if not self.established or self.node.role == "patient":
            return False
        candidate = self.candidate
        if frame[1] == _HS_COMMIT:
            own = self.session._handshake.seen.get(_HS_COMMIT)
            if own == frame:
                return False  # our own session's commit again: it counts the replay
            if candidate is None or candidate._handshake.seen.get(_HS_COMMIT) != frame:
                candidate = self.candidate = self.node._make_session(self.peer_id, fresh=True)
                now = _now()
                for pid in self.session.paths:
                    candidate.add_path(pid, now)
                self._loop.call_later(CANDIDATE_TIMEOUT, self._expire_candidate, candidate)
        if candidate is None:
            return False
        candidate.receive(frame, path_id, _now())
        self.kick()
        return True

    def _expire_candidate(self, candidate: Session) -> None:
        if self.candidate is candidate:  # a replayed commit nobody completes
            self.candidate = None
            self.node.events.emit(
                "candidate-expired", peer=self.peer_id, reason="new handshake not completed"
            )

    def _flush_candidate(self) -> None:
        candidate = self.candidate
        if candidate is None:
            return
        for path_id, frame in candidate.datagrams_to_send(_now()):
            if path_id == "relay":
                self.relay.send(frame)
            elif path_id == "direct" and self.direct is not None and self.direct.bound:
                self.direct.send(frame)
        while (event := candidate.next_event()) is not None:
            if isinstance(event, ev.HandshakeCompleted):
                # the trust store first: another key is refused (alarm) and the live
                # session stays, instead of being replaced and then closed by the gate
                if not self.node.accept_candidate(self, candidate):
                    self.candidate = None
                    return
                self._reset_session(candidate)
                self._handle_event(event)
                return
            if isinstance(event, ev.SessionClosed):  # a replayed or forged commit: dropped
                self.candidate = None
                return
            if isinstance(event, ev.FrameRejected):
                self.node.on_rejected(self, event)

    def _reset_session(self, candidate: Session) -> None:
        """The patient proved with a new signed handshake that it lost its session state
        (e.g. restarted without its store): the candidate session replaces the old one."""
        self.node.events.emit(
            "session-reset", peer=self.peer_id, reason="peer completed a new handshake"
        )
        self.candidate = None
        self.session = candidate
        self.established = False
        self.sas = ""
        self._rebind()

    def _rebind(self) -> None:
        """A new session after the peer restarted: the direct connection belongs to its
        previous life (its bind would name certificates it no longer has), so drop it; a
        connection still being negotiated is bound by the new session."""
        if self.direct is not None:
            self._direct_lost("peer started a new session")
        if self.pending is not None:
            self.session.expect_direct(own_certificate_fp(self.pending.pc))

    def send(self, cls: MessageClass, data: bytes) -> int:
        """Queue a message; it is durable (with a store) once node.persist() ran."""
        msg_id = self.session.send(cls, data, _now())
        self.kick()
        return msg_id

    # ---- session events ----
    def _handle_event(self, event: object) -> None:
        node = self.node
        if isinstance(event, ev.MessageReceived):
            node.app.on_message(self, event)
        elif isinstance(event, ev.MessageAcked):
            node.app.on_acked(self, event)
        elif isinstance(event, ev.HandshakeCompleted):
            self.established = True
            self.established_at = _now()
            self.sas = event.sas
            node.events.emit(
                "handshake",
                peer=self.peer_id,
                sas=event.sas,
                peer_fingerprint=event.peer_fingerprint,
            )
            node.app.on_established(self)
        elif isinstance(event, ev.FrameRejected):
            node.on_rejected(self, event)
        elif isinstance(event, ev.PathBound):
            self._direct_bound(event)
        elif isinstance(event, ev.PathUp):
            self._report(self.paths.up(event.path_id))
            if event.path_id == "direct" and self._stall_timer is not None:
                self._stall_timer.cancel()
                self._stall_timer = None
                self.node.events.emit("direct-recovered", peer=self.peer_id)
        elif isinstance(event, ev.PathDown):
            self._report(self.paths.down(event.path_id, "heartbeats missed"))
            if event.path_id == "direct":
                self._direct_stalled()
        elif isinstance(event, ev.PathQuality):
            self._report(self.paths.quality(event.path_id, event.rtt, event.loss))
        elif isinstance(event, ev.SessionClosed):
            node.events.emit(
                "session-closed", peer=self.peer_id, code=event.code, reason=event.reason
            )
            node.app.on_closed(self)
            if event.reason.startswith("crypto/") or "fingerprint" in event.reason:
                node.events.emit("error", peer=self.peer_id, code="handshake", message=event.reason)
            if "fingerprint" in event.reason:
                node.events.emit(
                    "technical-alarm",
                    peer=self.peer_id,
                    code="fingerprint",
                    priority="HIGH",
                    message="direct path certificates do not match: session closed "
                    "(a man in the middle?)",
                )
            self._spawn(self.close())

    def _report(self, items: list[dict[str, object]]) -> None:
        if self.closed or self.node.exit_code:
            return  # shutting down (or revoked: exiting): paths going away is not an alarm
        for item in items:
            fields = {k: v for k, v in item.items() if k != "event"}
            self.node.events.emit(str(item["event"]), peer=self.peer_id, **fields)

    # ---- relay path ----
    def _relay_send(self, data: bytes) -> bool:
        sig = self.node.signaling
        if not sig.send_relay_allowed(self.peer_id):
            return False
        return sig.send_binary(data)

    def add_relay(self) -> None:
        if not (self.present and self.node.signaling.connected) or self.closed:
            return
        if self.node.role == "patient" and not self.handshake_started:
            # the E2E handshake runs on the relay as soon as both are admitted, whatever
            # happens to WebRTC (docs/protocol.md)
            self.handshake_started = True
            self.session.connect(_now())
        if "relay" not in self.paths.paths or not self.paths.paths["relay"].up:
            self.session.add_path("relay", _now())
            self._report(self.paths.up("relay"))
            self.kick()

    def remove_relay(self) -> None:
        if self.paths.paths.get("relay") is not None and not self.closed:
            self.session.remove_path("relay", _now())
            if self.node.signaling.connected and not self.present:
                # peer-left (it may overtake the peer's CLOSE): a leave, not a failure
                self._report(self.paths.left("relay"))
            else:  # our own signaling connection is down: the peer may be unreachable
                self._report(self.paths.forget("relay"))
            self.kick()

    # ---- direct path ----
    def _config(self) -> RTCConfiguration:
        servers = [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in self.node.ice_servers
        ]
        if self.node.config.ice_relay_only:
            return RTCConfiguration(
                iceServers=servers or None, iceTransportPolicy=RTCIceTransportPolicy.RELAY
            )
        return RTCConfiguration(iceServers=servers or None)

    def _new_direct(self) -> DirectPath:
        pc = RTCPeerConnection(self._config())
        gen = self.direct_generation = self.direct_generation + 1

        def on_frame(frame: bytes) -> None:
            # from any of this peer's connections, even one being replaced: the session
            # checks every frame and reports what it drops
            if not self.closed:
                self.receive(frame, "direct")

        def on_rejected(reason: str) -> None:
            if not self.closed:
                self.node.on_rejected(self, ev.FrameRejected(reason, "frame", "direct"))

        def on_open() -> None:
            if gen == self.direct_generation and not self.closed:
                self._direct_open(dp)

        def on_closed(why: str) -> None:
            if self.direct is dp:
                self._direct_lost(why)
            elif self.pending is dp:
                self.pending = None
                self._renegotiate_now.set()

        high = self.node.config.sctp_high_water
        dp = DirectPath(
            pc,
            on_frame=on_frame,
            on_open=on_open,
            on_closed=on_closed,
            high_water=high,
            low_water=max(1024, high // 4),
            on_rejected=on_rejected,
        )
        return dp

    def _direct_open(self, dp: DirectPath) -> None:
        """DataChannels open, so DTLS completed: bind what it verified. The path carries
        data and media only once the peer's PATH_BIND matched (PathBound)."""
        try:
            dp.local_fp, dp.remote_fp = dtls_fingerprints(dp.pc)
        except ValueError as exc:
            self.node.events.emit("direct-failed", peer=self.peer_id, reason=str(exc))
            if self.pending is dp:
                self.pending = None
            self._spawn(dp.close())
            self._renegotiate_now.set()
            return
        if self._stall_timer is not None:  # a new connection replaces the stalled one
            self._stall_timer.cancel()
            self._stall_timer = None
        old = self.direct
        self.pending = None if self.pending is dp else self.pending
        self.direct = dp
        now = _now()
        if old is not None and old is not dp:
            self._spawn(old.close())
            if old.bound:  # nothing goes to the new one before it is bound
                with contextlib.suppress(Exception):
                    self.session.remove_path("direct", now)
                self._report(self.paths.forget("direct"))
        self.backoff.reset()
        self.node.events.emit("direct-open", peer=self.peer_id, generation=self.direct_generation)
        self.session.set_fingerprints(dp.local_fp, dp.remote_fp)
        self.kick()

    def _direct_bound(self, event: ev.PathBound) -> None:
        dp = self.direct
        if dp is None or dp.bound or (dp.local_fp, dp.remote_fp) != (event.local, event.remote):
            return  # a bind for a connection that is gone
        dp.bound = True
        self.session.add_path("direct", _now(), preferred=True)
        media = self.node.media
        tracks = media.attach(dp.pc) if media is not None else 0
        sink = dp.media_sink
        if sink is not None:
            for track in dp.held_tracks:
                sink.addTrack(track)
            tracks += len(dp.held_tracks)
            dp.held_tracks.clear()
            self._spawn(sink.start())
        self.node.events.emit(
            "direct-bound", peer=self.peer_id, generation=self.direct_generation, tracks=tracks
        )

    def _direct_stalled(self) -> None:
        """Heartbeats stopped: traffic has already moved to the other paths. ICE and DTLS
        outlive a burst or a handover of a few seconds, so keep the peer connection for
        `direct_grace` (the session keeps pinging it) and take it back when PONGs return;
        only then negotiate a new one, which costs a round trip through the server."""
        dp = self.direct
        if dp is None or self.closed or self._stall_timer is not None:
            return
        grace = self.node.config.direct_grace
        self.node.events.emit("direct-stalled", peer=self.peer_id, grace_s=grace)

        def expired() -> None:
            self._stall_timer = None
            if self.direct is dp and not self.session.path_status("direct").alive:
                self._direct_lost(f"no heartbeat answer for {grace:g} s")

        self._stall_timer = self._loop.call_later(grace, expired)

    def _direct_lost(self, why: str) -> None:
        dp = self.direct
        if dp is None or self.closed:
            return
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self.direct = None
        now = _now()
        with contextlib.suppress(Exception):
            self.session.remove_path("direct", now)
        self._report(self.paths.forget("direct"))
        self.node.events.emit("direct-lost", peer=self.peer_id, reason=why)
        self._spawn(dp.close())
        self.kick()
        self._renegotiate_now.set()

    # offerer (patient)
    def start_negotiator(self) -> None:
        if self._negotiator is None or self._negotiator.done():
            self._negotiator = self._spawn(self._negotiate_loop())

    def renegotiate_soon(self) -> None:
        self.backoff.reset()
        self._renegotiate_now.set()

    def peer_back(self) -> None:
        """The server says the peer is (back) here. An offer still waiting for its answer went
        out while the peer was gone and will never be answered: drop it and offer again at
        once instead of waiting out ANSWER_TIMEOUT."""
        answer = self._answer
        if answer is not None and not answer.done():
            self._skip_backoff = True
            answer.set_exception(ConnectionError("offer abandoned: peer reconnected"))
        if self._stall_timer is not None:  # a stalled connection to a restarted peer is gone
            self._direct_lost("peer reconnected while the direct path was stalled")
        if self.direct is None:
            self.renegotiate_soon()

    async def _negotiate_loop(self) -> None:
        first = True
        while not self.closed:
            if self.direct is None and self.pending is None:
                if self._skip_backoff:
                    self._skip_backoff = False
                elif not first:
                    delay = self.backoff.next()
                    self.node.events.emit(
                        "direct-retry", peer=self.peer_id, after_s=round(delay, 2)
                    )
                    self._renegotiate_now.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._renegotiate_now.wait(), delay)
                    if self.closed:
                        return
                first = False
                await self._offer_once()
                continue
            self._renegotiate_now.clear()
            if self.direct is None and self.pending is None:
                continue
            await self._renegotiate_now.wait()

    async def _offer_once(self) -> bool:
        if not self.node.signaling.connected:
            return False
        dp = self._new_direct()
        self.pending = dp
        dp.open_channels()
        self.node.media_tracks(dp.pc)
        # the clinician's camera and microphone: nothing is played before the bind, then
        # drained (a headless patient node shows nothing; unread frames would pile up)
        dp.media_sink = self.node.media_sink() or MediaBlackhole()
        dp.pc.on("track", dp.held_tracks.append)
        self.session.expect_direct(own_certificate_fp(dp.pc))
        try:
            await dp.pc.setLocalDescription(await dp.pc.createOffer())
            local_sdp = dp.pc.localDescription.sdp
            self._answer = self._loop.create_future()
            if not self.node.signaling.send_json(
                {"type": "offer", "to": self.peer_id, "sdp": local_sdp}
            ):
                raise ConnectionError("signaling not connected")
            self.node.events.emit(
                "direct-offer", peer=self.peer_id, generation=self.direct_generation
            )
            answer = await asyncio.wait_for(self._answer, ANSWER_TIMEOUT)
            await dp.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            await asyncio.wait_for(self._wait_open(dp), OPEN_TIMEOUT)
            return True
        except (TimeoutError, ConnectionError, ValueError) as exc:
            self.node.events.emit(
                "direct-failed", peer=self.peer_id, reason=str(exc) or type(exc).__name__
            )
            if self.pending is dp:
                self.pending = None
            if self.direct is not dp:
                await dp.close()
            return False
        finally:
            self._answer = None

    async def _wait_open(self, dp: DirectPath) -> None:
        while not dp.is_open:
            if dp.closed:
                raise ConnectionError("direct path closed while connecting")
            await asyncio.sleep(0.05)

    def on_answer(self, sdp: str) -> None:
        dp = self.pending
        if self._answer is None or self._answer.done() or dp is None:
            return
        try:
            check_sdp(sdp)
        except SdpError as exc:
            self._sdp_refused("answer", exc)
            self._answer.set_exception(ValueError(f"answer refused: {exc}"))
            return
        self._answer.set_result(sdp)

    def _sdp_refused(self, kind: str, exc: SdpError) -> None:
        node = self.node
        key = f"sdp/{exc.reason}"
        node.rejected[key] = node.rejected.get(key, 0) + 1
        node.events.emit(
            "rejected",
            peer=self.peer_id,
            kind="sdp",
            reason=exc.reason,
            path="signaling",
            count=node.rejected[key],
            message=f"{kind}: {exc}",
        )

    # answerer (clinician)
    async def on_offer(self, sdp: str) -> None:
        if self.pending is not None:
            await self.pending.close()
        dp = self._new_direct()
        self.pending = dp
        dp.media_sink = self.node.media_sink()
        dp.pc.on("track", dp.held_tracks.append)  # played only once the path is bound
        self.session.expect_direct(own_certificate_fp(dp.pc))
        try:
            try:
                check_sdp(sdp)
            except SdpError as exc:
                self._sdp_refused("offer", exc)
                raise ValueError(f"offer refused: {exc}") from None
            await dp.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            dp.open_channels()
            await dp.pc.setLocalDescription(await dp.pc.createAnswer())
            local_sdp = dp.pc.localDescription.sdp
        except ValueError as exc:
            self.node.events.emit("direct-failed", peer=self.peer_id, reason=str(exc))
            self.pending = None
            await dp.close()
            return
        self.node.signaling.send_json({"type": "answer", "to": self.peer_id, "sdp": local_sdp})

    # ---- housekeeping ----
    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def drop_direct(self, why: str) -> None:
        if self.direct is not None:
            self._direct_lost(why)

    async def cut_direct(self) -> None:
        """Close the direct peer connection (operator/test action); traffic moves to relay."""
        dp = self.direct
        if dp is not None:
            await dp.pc.close()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for timer in (self._timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        if self._negotiator is not None:
            self._negotiator.cancel()
        for dp in (self.direct, self.pending):
            if dp is not None:
                with contextlib.suppress(Exception):
                    await dp.close()
        self.direct = self.pending = None

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peer": self.peer_id, "active": self.paths.active, "sas": self.sas}
        for name, info in self.paths.paths.items():
            out[name] = {
                "up": info.up,
                "rtt_ms": round(info.rtt * 1000, 2),
                "loss": info.loss,
                "grade": info.grade,
            }
        return out
