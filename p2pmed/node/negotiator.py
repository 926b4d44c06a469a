"""The direct path to one peer: WebRTC offer/answer and its binding to the E2E session.

The patient offers; on loss of the direct path it negotiates a fresh RTCPeerConnection in
the background with backoff (aiortc cannot restart ICE). A direct path carries data and
media only once bound (docs/protocol.md, PATH_BIND): both sides sent, over the E2E session,
the certificates their completed DTLS handshake verified, and each checked the other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaBlackhole
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from p2pmed.core import events as ev
from p2pmed.node import clock
from p2pmed.node import events as ne
from p2pmed.node.context import NodeContext
from p2pmed.node.driver import SessionDriver
from p2pmed.node.tasks import TaskSet
from p2pmed.transport.datachannel import DirectPath, dtls_fingerprints, own_certificate_fp
from p2pmed.transport.paths import Backoff
from p2pmed.transport.sdp import SdpError

log = logging.getLogger("p2pmed.node.negotiator")

ANSWER_TIMEOUT = 10.0
OPEN_TIMEOUT = 15.0


class DirectNegotiator:
    def __init__(
        self,
        ctx: NodeContext,
        peer_id: str,
        driver: SessionDriver,
        *,
        path_gone: Callable[[str], None],
        on_rejected: Callable[[ev.FrameRejected], None],
        check_sdp: Callable[[str], None],
    ) -> None:
        self.ctx = ctx
        self.peer_id = peer_id
        self.driver = driver
        self._path_gone = path_gone  # the link reports a bound direct path going away
        self._on_rejected = on_rejected
        self._check_sdp = check_sdp  # raises SdpError for a description we refuse
        self.direct: DirectPath | None = None  # the open connection (carries data once bound)
        self.pending: DirectPath | None = None  # the connection being negotiated
        self.generation = 0
        self.backoff = Backoff(initial=ctx.config.reconnect_initial, maximum=8.0)
        self.closed = False
        self._stall_timer: asyncio.TimerHandle | None = None
        self._answer: asyncio.Future[str] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._renegotiate_now = asyncio.Event()
        self._skip_backoff = False  # the next offer goes out at once (the peer just came back)
        self._loop = asyncio.get_running_loop()
        self.tasks = TaskSet(f"direct path to {peer_id}")

    def send(self, frame: bytes) -> None:
        dp = self.direct
        if dp is not None and dp.bound:
            dp.send(frame)

    def candidate_types(self) -> tuple[str, str] | None:
        """(local, remote) type (host, srflx, prflx or relay) of the ICE candidate pair the
        direct connection uses: "relay" proves the path goes through TURN. None before ICE
        nominated a pair. aiortc has no getSelectedCandidatePair(): read aioice's
        nominated pair (component 1: data channels are multiplexed on it)."""
        dp = self.direct
        sctp = dp.pc.sctp if dp is not None else None
        if sctp is None:
            return None
        try:
            pair = sctp.transport.transport._connection._nominated.get(1)
        except AttributeError:  # another aiortc/aioice layout: say nothing rather than fail
            return None
        if pair is None:
            return None
        return str(pair.local_candidate.type), str(pair.remote_candidate.type)

    # ---- events of the session about the direct path ----
    def bound(self, event: ev.PathBound) -> None:
        """The peer's PATH_BIND matched what our DTLS verified: the path carries data."""
        dp = self.direct
        if dp is None or dp.bound or (dp.local_fp, dp.remote_fp) != (event.local, event.remote):
            return  # a bind for a connection that is gone
        dp.bound = True
        self.driver.session.add_path("direct", clock.now(), preferred=True)
        media = self.ctx.media
        tracks = media.attach(dp.pc) if media is not None else 0
        sink = dp.media_sink
        if sink is not None:
            for track in dp.held_tracks:
                sink.addTrack(track)
            tracks += len(dp.held_tracks)
            dp.held_tracks.clear()
            self.tasks.spawn(sink.start())
        self.ctx.events.publish(ne.DirectBound(self.peer_id, self.generation, tracks))

    def recovered(self) -> None:
        """PONGs came back on the direct path within its grace."""
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
            self.ctx.events.publish(ne.DirectRecovered(self.peer_id))

    def stalled(self) -> None:
        """Heartbeats stopped: traffic has already moved to the other paths. ICE and DTLS
        outlive a burst or a handover of a few seconds, so keep the peer connection for
        `direct_grace` (the session keeps pinging it) and take it back when PONGs return;
        only then negotiate a new one, which costs a round trip through the server."""
        dp = self.direct
        if dp is None or self.closed or self._stall_timer is not None:
            return
        grace = self.ctx.config.direct_grace
        self.ctx.events.publish(ne.DirectStalled(self.peer_id, grace))

        def expired() -> None:
            self._stall_timer = None
            if self.direct is dp and not self.driver.session.path_status("direct").alive:
                self.lost(f"no heartbeat answer for {grace:g} s")

        self._stall_timer = self._loop.call_later(grace, expired)

    def lost(self, why: str) -> None:
        dp = self.direct
        if dp is None or self.closed:
            return
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        self.direct = None
        with contextlib.suppress(Exception):
            self.driver.session.remove_path("direct", clock.now())
        self._path_gone("direct")
        self.ctx.events.publish(ne.DirectLost(self.peer_id, why))
        self.tasks.spawn(dp.close())
        self.driver.kick()
        self._renegotiate_now.set()

    def rebind(self) -> None:
        """A new session after the peer restarted: the direct connection belongs to its
        previous life (its bind would name certificates it no longer has), so drop it; a
        connection still being negotiated is bound by the new session."""
        if self.direct is not None:
            self.lost("peer started a new session")
        if self.pending is not None:
            self.driver.session.expect_direct(own_certificate_fp(self.pending.pc))

    # ---- connections ----
    def _rtc_config(self) -> RTCConfiguration:
        servers = [
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in self.ctx.ice_servers
        ]
        if self.ctx.config.ice_relay_only:
            return RTCConfiguration(
                iceServers=servers or None, iceTransportPolicy=RTCIceTransportPolicy.RELAY
            )
        return RTCConfiguration(iceServers=servers or None)

    def _new_direct(self) -> DirectPath:
        pc = RTCPeerConnection(self._rtc_config())
        gen = self.generation = self.generation + 1

        def on_frame(frame: bytes) -> None:
            # from any of this peer's connections, even one being replaced: the session
            # checks every frame and reports what it drops
            if not self.closed:
                self.driver.receive(frame, "direct")

        def on_rejected(reason: str) -> None:
            if not self.closed:
                self._on_rejected(ev.FrameRejected(reason, "frame", "direct"))

        def on_open() -> None:
            if gen == self.generation and not self.closed:
                self._opened(dp)

        def on_closed(why: str) -> None:
            if self.direct is dp:
                self.lost(why)
            elif self.pending is dp:
                self.pending = None
                self._renegotiate_now.set()

        high = self.ctx.config.sctp_high_water
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

    def _opened(self, dp: DirectPath) -> None:
        """DataChannels open, so DTLS completed: bind what it verified. The path carries
        data and media only once the peer's PATH_BIND matched (PathBound)."""
        try:
            dp.local_fp, dp.remote_fp = dtls_fingerprints(dp.pc)
        except ValueError as exc:
            self.ctx.events.publish(ne.DirectFailed(self.peer_id, str(exc)))
            if self.pending is dp:
                self.pending = None
            self.tasks.spawn(dp.close())
            self._renegotiate_now.set()
            return
        if self._stall_timer is not None:  # a new connection replaces the stalled one
            self._stall_timer.cancel()
            self._stall_timer = None
        old = self.direct
        self.pending = None if self.pending is dp else self.pending
        self.direct = dp
        session = self.driver.session
        if old is not None and old is not dp:
            self.tasks.spawn(old.close())
            if old.bound:  # nothing goes to the new one before it is bound
                with contextlib.suppress(Exception):
                    session.remove_path("direct", clock.now())
                self._path_gone("direct")
        self.backoff.reset()
        self.ctx.events.publish(ne.DirectOpen(self.peer_id, self.generation))
        session.set_fingerprints(dp.local_fp, dp.remote_fp)
        self.driver.kick()

    # ---- offerer (patient) ----
    def start(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = self.tasks.spawn(self._negotiate_loop())

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
            self.lost("peer reconnected while the direct path was stalled")
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
                    self.ctx.events.publish(ne.DirectRetry(self.peer_id, round(delay, 2)))
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
        signaling = self.ctx.signaling
        if not signaling.connected:
            return False
        dp = self._new_direct()
        self.pending = dp
        dp.open_channels()
        if self.ctx.media is not None:
            self.ctx.media.add_tracks(dp.pc)
        # the clinician's camera and microphone: nothing is played before the bind, then
        # drained (a headless patient node shows nothing; unread frames would pile up)
        dp.media_sink = self.ctx.media_sink() or MediaBlackhole()
        dp.pc.on("track", dp.held_tracks.append)
        self.driver.session.expect_direct(own_certificate_fp(dp.pc))
        try:
            await dp.pc.setLocalDescription(await dp.pc.createOffer())
            local_sdp = dp.pc.localDescription.sdp
            self._answer = self._loop.create_future()
            if not signaling.send_json({"type": "offer", "to": self.peer_id, "sdp": local_sdp}):
                raise ConnectionError("signaling not connected")
            self.ctx.events.publish(ne.DirectOffer(self.peer_id, self.generation))
            answer = await asyncio.wait_for(self._answer, ANSWER_TIMEOUT)
            await dp.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            await asyncio.wait_for(self._wait_open(dp), OPEN_TIMEOUT)
            return True
        except (TimeoutError, ConnectionError, ValueError) as exc:
            self.ctx.events.publish(ne.DirectFailed(self.peer_id, str(exc) or type(exc).__name__))
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
            self._check_sdp(sdp)
        except SdpError as exc:
            self._sdp_refused("answer", exc)
            self._answer.set_exception(ValueError(f"answer refused: {exc}"))
            return
        self._answer.set_result(sdp)

    def _sdp_refused(self, kind: str, exc: SdpError) -> None:
        n = self.ctx.count(f"sdp/{exc.reason}")
        self.ctx.events.publish(
            ne.SdpRejected(self.peer_id, "sdp", exc.reason, "signaling", n, f"{kind}: {exc}")
        )

    # ---- answerer (clinician) ----
    async def on_offer(self, sdp: str) -> None:
        if self.pending is not None:
            await self.pending.close()
        dp = self._new_direct()
        self.pending = dp
        dp.media_sink = self.ctx.media_sink()
        dp.pc.on("track", dp.held_tracks.append)  # played only once the path is bound
        self.driver.session.expect_direct(own_certificate_fp(dp.pc))
        try:
            try:
                self._check_sdp(sdp)
            except SdpError as exc:
                self._sdp_refused("offer", exc)
                raise ValueError(f"offer refused: {exc}") from None
            await dp.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            dp.open_channels()
            await dp.pc.setLocalDescription(await dp.pc.createAnswer())
            local_sdp = dp.pc.localDescription.sdp
        except ValueError as exc:
            self.ctx.events.publish(ne.DirectFailed(self.peer_id, str(exc)))
            self.pending = None
            await dp.close()
            return
        self.ctx.signaling.send_json({"type": "answer", "to": self.peer_id, "sdp": local_sdp})

    # ---- housekeeping ----
    async def cut(self) -> None:
        """Close the direct peer connection (operator/test action); traffic moves to relay."""
        dp = self.direct
        if dp is not None:
            await dp.pc.close()

    async def close(self) -> None:
        self.closed = True
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._loop_task is not None:
            self._loop_task.cancel()
        for dp in (self.direct, self.pending):
            if dp is not None:
                with contextlib.suppress(Exception):
                    await dp.close()
        self.direct = self.pending = None
