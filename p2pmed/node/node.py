"""The asyncio node: signaling client, one PeerLink (session driver + paths) per peer, a role
app. The parts share a NodeContext (context.py); links report back through LinkHooks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc.sdp import candidate_from_sdp

from p2pmed.core import events as ev
from p2pmed.core.frame import MessageClass
from p2pmed.core.identity import Identity
from p2pmed.core.session import Session
from p2pmed.media import MediaSink, MediaSource
from p2pmed.node import clock, datadir, persist, revocation
from p2pmed.node import events as ne
from p2pmed.node.app import App, NoOpApp
from p2pmed.node.clinician import ClinicianApp
from p2pmed.node.config import NodeConfig
from p2pmed.node.context import NodeContext
from p2pmed.node.errors import EXIT_REFUSED, EXIT_REVOKED, EXIT_TLS, JoinTimeout, NodeError
from p2pmed.node.output import Events
from p2pmed.node.patient import PatientApp
from p2pmed.node.peer import PeerLink
from p2pmed.node.persist import NodeStore
from p2pmed.node.tasks import TaskSet
from p2pmed.node.trustgate import TrustGate
from p2pmed.node.truststore import TrustError, TrustStore
from p2pmed.signaling_client import (
    SignalingCertificateError,
    SignalingClient,
    SignalingRefused,
)
from p2pmed.transport.relay import ENDPOINT_ID

log = logging.getLogger("p2pmed.node")

PEERS_OF = {
    "patient": ("clinician", "observer"),
    "clinician": ("patient",),
    "observer": ("patient",),
}


class Node:
    def __init__(
        self,
        config: NodeConfig,
        events: Events | None = None,
        app_factory: Callable[[Node], App] | None = None,
    ) -> None:
        self.config = config
        self._app_factory = app_factory
        self.peers: dict[str, PeerLink] = {}
        self.revoked_peers: set[str] = set()  # until the server announces a new join
        self._tasks = TaskSet("node", self._task_failed)
        self._stopped = asyncio.Event()
        self._sig_task: asyncio.Task[None] | None = None
        self.app: App = NoOpApp()
        # peer identities accepted (docs in truststore.py); none without a data dir
        self.trust = TrustStore(config.data_dir) if config.data_dir is not None else None
        self._ready = False  # until start() set up store and app, signaling input waits here
        self._early: list[tuple[str, Any]] = []
        data_dir = config.data_dir
        identity = datadir.load_identity(data_dir)
        endpoint_id = config.endpoint_id or datadir.load_endpoint_id(data_dir)
        signaling = SignalingClient(
            config.join,
            endpoint_id,
            on_message=self._on_signal,
            on_relay=self._on_relay,
            on_state=self._on_signal_state,
            resume_token=datadir.load_resume(data_dir, config.join.token, endpoint_id),
            on_resume_token=lambda token: datadir.save_resume(data_dir, token),
            on_rejected=self._on_signal_rejected,
            ssl_context=config.ssl_context(),
        )
        self.ctx = NodeContext(
            config=config,
            events=events or Events(json_out=config.json_out),
            signaling=signaling,
            identity=identity,
            endpoint_id=endpoint_id,
        )

    # ---- shared state lives in the context ----
    @property
    def events(self) -> Events:
        return self.ctx.events

    @property
    def signaling(self) -> SignalingClient:
        return self.ctx.signaling

    @property
    def identity(self) -> Identity:
        return self.ctx.identity

    @property
    def endpoint_id(self) -> str:
        return self.ctx.endpoint_id

    @property
    def role(self) -> str:
        return self.ctx.role

    @property
    def session_id(self) -> str:
        return self.ctx.session_id

    @property
    def ice_servers(self) -> list[dict[str, Any]]:
        return self.ctx.ice_servers

    @property
    def store(self) -> NodeStore | None:
        return self.ctx.store

    @property
    def media(self) -> MediaSource | None:
        return self.ctx.media

    @property
    def sink(self) -> MediaSink | None:
        return self.ctx.sink

    @property
    def rejected(self) -> dict[str, int]:
        return self.ctx.rejected

    @property
    def exit_code(self) -> int:
        """EXIT_REVOKED once our token was revoked (run() raises Revoked)."""
        return self.ctx.exit_code

    @exit_code.setter
    def exit_code(self, value: int) -> None:
        self.ctx.exit_code = value

    # ---- lifecycle ----
    async def start(self) -> dict[str, Any]:
        """Connect and join. Raises NodeError with a clear message when that fails."""
        self._sig_task = asyncio.create_task(self._run_signaling())
        try:
            joined = await asyncio.wait_for(
                asyncio.shield(self.signaling.first_join), self.config.join_timeout
            )
        except SignalingRefused as exc:
            await self._stop_signaling()
            raise NodeError(self._refusal_hint(exc), EXIT_REFUSED) from None
        except SignalingCertificateError as exc:
            await self._stop_signaling()
            raise NodeError(str(exc), EXIT_TLS) from None
        except TimeoutError:
            await self._stop_signaling()
            raise JoinTimeout.after(
                self.config.join.server, self.config.join_timeout, self.signaling.busy
            ) from None
        ctx = self.ctx
        ctx.role = str(joined.get("role", ""))
        ctx.session_id = str(joined.get("session", ""))
        if self.role not in PEERS_OF:
            await self._stop_signaling()
            raise NodeError(f"signaling server gave an unknown role {self.role!r}")
        ctx.ice_servers = await self.signaling.turn_servers()
        if self.config.ice_relay_only and not any(
            "turn" in str(s.get("urls")) for s in self.ice_servers
        ):
            self.events.publish(
                ne.NodeErrorEvent(
                    "no-turn",
                    "--ice-relay-only but the server offers no TURN relay: relay path only",
                )
            )
        try:
            self._open_store()
        except NodeError:
            await self._stop_signaling()
            raise
        if self.role == "patient":
            ctx.media = MediaSource(self.config.media)
        else:
            ctx.sink = MediaSink(self.config.record)
        self.app = self._make_app()
        if self.trust is not None:
            scope = datadir.claims(self.config.join.token).get("sub")
            if not isinstance(scope, str) or not scope:
                scope = self.session_id
            self.app = TrustGate(self.app, self, self.trust, scope)
        self._restore_links()
        self.events.publish(
            ne.Joined(
                self.role,
                self.session_id,
                self.endpoint_id,
                bool(joined.get("waiting")),
                self.identity.fingerprint(),
                len(self.ice_servers),
            )
        )
        self.app.on_joined()
        self._consider_peers(joined)
        self._ready = True
        early, self._early = self._early, []
        for kind, item in early:
            try:
                if kind == "json":
                    if item.get("type") != "joined":  # the first one was handled above
                        self._on_signal(item)
                else:
                    self._on_relay(*item)
            except Exception as exc:  # same rule as live input: count it, go on
                log.warning("early signaling message failed", exc_info=exc)
                self._on_signal_rejected("handler", type(exc).__name__)
        self.spawn(self.app.run())
        return joined

    def _refusal_hint(self, exc: SignalingRefused) -> str:
        if exc.code == "token-in-use":
            where = (
                f"--data-dir {self.config.data_dir} holds another endpoint id"
                if self.config.data_dir is not None
                else "this node has no --data-dir, so it got a new endpoint id"
            )
            return (
                f"{exc}. A join URL belongs to the first node that used it: restart that node "
                f"with the --data-dir it used then (its endpoint_id keeps the place), or ask "
                f"for a new join URL ({where})"
            )
        return str(exc)

    def _make_app(self) -> App:
        if self._app_factory is not None:
            return self._app_factory(self)
        if self.role == "patient":
            return PatientApp(self)
        return ClinicianApp(self)

    def _open_store(self) -> None:
        try:
            self.ctx.store = persist.open_store(self.config.data_dir, self.session_id)
        except OSError as exc:
            raise NodeError(f"cannot open the session store: {exc}") from None

    def _restore_links(self) -> None:
        """Sessions from the store resume before the server says who is here: the patient
        keeps queueing for them, the clinician hands over what it stored but never showed."""
        store = self.store
        if store is None:
            return
        peer_role = "patient" if self.role != "patient" else "clinician"
        for peer_id in store.known_peers():
            if peer_id in self.peers or not ENDPOINT_ID.match(peer_id):
                continue
            session = self.ctx.new_session(peer_id)
            if session.state.name not in ("ESTABLISHED", "REKEYING"):
                continue
            link = self.peers[peer_id] = PeerLink(self.ctx, self, peer_id, peer_role, session)
            pos = store.peer(peer_id).get_meta("source_pos")
            link.source_pos = pos if isinstance(pos, int) else 0
            self.events.publish(ne.PeerState(peer_id, peer_role, "restored", session.sas))
            pending = store.peer(peer_id).inbox()
            for row in pending:
                link.driver.session_event(
                    ev.MessageReceived(
                        row.msg_id, MessageClass(row.cls), row.data, row.seq, row.ts_us, "store"
                    )
                )
            if pending:
                store.peer(peer_id).inbox_done(pending[-1].row, delete=True)
            link.kick()

    async def run(self) -> int:
        """Run until stop() (or Ctrl-C); returns the exit code the node stopped with (0, or
        e.g. EXIT_FAILED when its device source failed). After a revocation raises
        revocation.Revoked, a SystemExit with EXIT_REVOKED (the caller's `finally: await
        node.close()` still runs)."""
        await self._stopped.wait()
        if self.exit_code == EXIT_REVOKED:
            raise revocation.Revoked()
        return self.exit_code

    def stop(self) -> None:
        self._stopped.set()

    async def close(self) -> None:
        self._stopped.set()
        with contextlib.suppress(Exception):
            await self.app.close()
        links = [link for link in self.peers.values() if not link.closed]
        for link in links:
            with contextlib.suppress(Exception):
                link.session.close(clock.now(), 0, "node stopped")
                link.kick()
        # a graceful stop ends the sessions on both sides: wait (bounded) for the peer's
        # CLOSE or the session's close timeout, so the store records them as closed too
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.5
        while loop.time() < deadline and any(
            not link.closed and link.session.state.name != "CLOSED" for link in links
        ):
            await asyncio.sleep(0.02)
        with contextlib.suppress(Exception):
            self.persist()
        for link in links:
            await link.close()
        self._tasks.cancel()
        if self.media is not None:
            await self.media.close()
        await self._stop_signaling()
        if self.store is not None:
            with contextlib.suppress(Exception):
                self.store.close()

    async def _run_signaling(self) -> None:
        """Supervisor: whatever ends the signaling loop unexpectedly is logged, counted and
        the loop restarted; only close() (or a final refusal) ends it."""
        while True:
            try:
                await self.signaling.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("signaling task failed; restarting it", exc_info=exc)
                self._on_signal_rejected("internal", f"{type(exc).__name__}: {exc}"[:200])
                await asyncio.sleep(1.0)

    def _on_signal_rejected(self, reason: str, detail: str) -> None:
        """A server message refused by the signaling client (malformed, oversized, too deep,
        wrong field types, a handler that raised): counted; visible as a `rejected` event."""
        n = self.ctx.count(f"signal/{reason}")
        if n & (n - 1) == 0:  # 1, 2, 4, 8, ...: visible without flooding stdout
            self.events.publish(ne.SignalRejected("signal", reason, detail, n))

    async def _stop_signaling(self) -> None:
        await self.signaling.close()
        if self._sig_task is not None:
            self._sig_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sig_task

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro)

    def _task_failed(self, exc: BaseException) -> None:
        self.events.publish(ne.NodeErrorEvent("internal", repr(exc)))

    # ---- peers ----
    def _consider_peers(self, joined: dict[str, Any]) -> None:
        if joined.get("waiting"):
            return  # not admitted yet: peers arrive as peer-joined once admitted
        for p in joined.get("peers") or []:
            if not isinstance(p, dict):
                continue
            peer_id, role = str(p.get("endpoint_id", "")), str(p.get("role", ""))
            if p.get("admitted", True):
                self._peer_present(peer_id, role)
            elif role == "patient" and self.role == "clinician":
                self.app.on_peer_waiting(peer_id, role)

    def _peer_present(self, peer_id: str, role: str, *, rejoined: bool = False) -> None:
        """`rejoined`: the server just said peer-joined/peer-reconnected, so the peer is on a
        fresh connection and an offer still waiting for its answer went nowhere."""
        if peer_id in self.revoked_peers:  # only a new join (peer-joined) lifts it
            self.ctx.count("signal/revoked-peer")
            return
        if role not in PEERS_OF.get(self.role, ()) or not ENDPOINT_ID.match(peer_id):
            return
        link = self.peers.get(peer_id)
        if link is None or link.closed:  # new peer, or its session ended: a fresh session
            session = self.ctx.new_session(peer_id)
            link = self.peers[peer_id] = PeerLink(self.ctx, self, peer_id, role, session)
            self.events.publish(ne.PeerState(peer_id, role, "present"))
        else:
            self.events.publish(ne.PeerState(peer_id, role, "back"))
        link.present = True
        link.add_relay()
        if self.role == "patient":
            link.start_negotiator()
            if rejoined:
                link.peer_back()
            elif link.direct is None:
                link.renegotiate_soon()
        link.kick()

    def persist(self) -> bool:
        """Make every session's changes durable (before frames leave or events are acted on):
        each link's driver hands in its own session's changes, then one group commit (one
        fsync however many peers: a vitals message is queued for every clinician, also those
        gone but resumable). False while the store cannot be written (NodeContext.commit)."""
        if self.store is None:
            return True
        for link in self.peers.values():
            link.driver.stage()
        return self.ctx.commit()

    # ---- LinkHooks: what the links report ----
    def on_established(self, link: PeerLink) -> None:
        self.app.on_established(link)

    def on_message(self, link: PeerLink, event: ev.MessageReceived) -> None:
        self.app.on_message(link, event)

    def on_acked(self, link: PeerLink, event: ev.MessageAcked) -> None:
        self.app.on_acked(link, event)

    def on_closed(self, link: PeerLink) -> None:
        self.app.on_closed(link)

    def on_app_rejected(self, link: PeerLink, exc: Exception) -> None:
        reason = getattr(exc, "reason", type(exc).__name__)
        n = self.ctx.count(f"app/{reason}")
        self.events.publish(ne.AppRejected(link.peer_id, "app", reason, n))

    def on_rejected(self, link: PeerLink, event: ev.FrameRejected) -> None:
        n = self.ctx.count(f"{event.kind}/{event.reason}")
        if n & (n - 1) == 0:  # 1, 2, 4, 8, ...: visible without flooding stdout
            self.events.publish(
                ne.FrameRejected(link.peer_id, event.kind, event.reason, event.path_id, n)
            )
        if event.reason == "fingerprint":
            self.events.publish(
                ne.FingerprintMismatch(
                    link.peer_id,
                    "the peer's PATH_BIND names other certificates than the ones our DTLS"
                    " verified: direct path refused, session closed",
                )
            )
            if link.direct is not None:  # refuse the direct path it came with
                link.drop_direct("fingerprint mismatch")

    # ---- signaling input ----
    def _on_signal_state(self, up: bool) -> None:
        if not self._ready:
            return
        self.events.publish(ne.SignalingState("up" if up else "down"))
        if self.exit_code == EXIT_REVOKED:
            return  # stopping: the relay going away is no alarm (all-paths-down) now
        self.app.on_signaling(up)
        if not up:  # presence is learnt again from the next "joined" / "peer-joined"
            for link in self.peers.values():
                link.present = False
                link.remove_relay()

    def _on_signal(self, msg: dict[str, Any]) -> None:
        if not self._ready:
            if len(self._early) < 10_000:
                self._early.append(("json", msg))
            return
        kind = msg.get("type")
        peer_id = str(msg.get("from") or msg.get("endpoint_id") or "")
        if kind == "joined":
            if self.role:
                self._consider_peers(msg)
        elif kind == "peer-waiting":
            self.app.on_peer_waiting(peer_id, str(msg.get("role", "")))
        elif kind in ("peer-joined", "peer-reconnected"):
            if kind == "peer-joined":  # a new join: it holds a valid token again
                self.revoked_peers.discard(peer_id)
            role = str(msg.get("role") or self._role_of(peer_id))
            self._peer_present(peer_id, role, rejoined=True)
        elif kind == "peer-left":
            self.events.publish(ne.PeerState(peer_id, state="left"))
            self.app.on_peer_left(peer_id)
            link = self.peers.get(peer_id)
            if link is not None:
                link.present = False
                link.remove_relay()
        elif kind == "peer-revoked":
            if ENDPOINT_ID.match(peer_id) and peer_id != self.endpoint_id:
                revocation.peer_revoked(self, peer_id)
        elif kind == "offer":
            link = self.peers.get(peer_id)
            if link is not None and self.role != "patient" and isinstance(msg.get("sdp"), str):
                self.spawn(link.on_offer(msg["sdp"]))
        elif kind == "answer":
            link = self.peers.get(peer_id)
            if link is not None and isinstance(msg.get("sdp"), str):
                link.on_answer(msg["sdp"])
        elif kind == "candidate":
            link = self.peers.get(peer_id)
            if link is not None:
                self.spawn(self._add_candidate(link, msg.get("candidate")))
        elif kind == "error" and msg.get("code") == "token-revoked":
            revocation.self_revoked(self, str(msg.get("message")))
        elif kind == "error":
            code = str(msg.get("code"))[:64]
            to = msg.get("to") if isinstance(msg.get("to"), str) else None
            self.events.publish(ne.ServerError(code, str(msg.get("message"))[:300], to))
            link = self.peers.get(str(msg.get("to") or ""))
            if link is not None and code in ("unknown-peer", "not-admitted"):
                link.present = False  # stop relaying until the server says it is back
                link.remove_relay()

    def _role_of(self, peer_id: str) -> str:
        link = self.peers.get(peer_id)
        return link.peer_role if link else ""

    async def _add_candidate(self, link: PeerLink, cand: Any) -> None:
        """Trickled candidates (browsers trickle; aiortc gathers all at once)."""
        if not isinstance(cand, dict) or not isinstance(cand.get("candidate"), str):
            return
        text = cand["candidate"]
        if not text:
            return
        dp = link.pending or link.direct
        if dp is None:
            return
        try:
            c = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
            c.sdpMid = cand.get("sdpMid")
            c.sdpMLineIndex = cand.get("sdpMLineIndex")
            await dp.pc.addIceCandidate(c)
        except Exception as exc:  # malformed candidate from the peer: count and carry on
            self.ctx.count("signal/candidate")
            log.debug("bad candidate: %s", exc)

    def _on_relay(self, peer_id: str, frame: bytes) -> None:
        if not self._ready:
            if len(self._early) < 10_000:
                self._early.append(("relay", (peer_id, frame)))
            return
        link = self.peers.get(peer_id)
        if link is None and peer_id in self.revoked_peers:
            self.ctx.count("relay/revoked-peer")
            return
        if link is None:
            self.ctx.count("relay/unknown-peer")
            return
        link.receive(frame, "relay")

    # ---- commands (stdin JSON lines, UI keys) ----
    def command(self, cmd: dict[str, Any]) -> None:
        name = cmd.get("cmd")
        if name == "status":
            self.events.publish(
                ne.Status([link.status() for link in self.peers.values()], dict(self.rejected))
            )
        elif name == "cut-direct":
            for link in self.peers.values():
                if cmd.get("peer") in (None, link.peer_id):
                    self.spawn(link.cut_direct())
        elif name == "admit":
            self.signaling.send_json({"type": "admit", "endpoint_id": str(cmd.get("endpoint_id"))})
        elif name == "stop":
            self.stop()
        elif name == "verify":
            self._verify(cmd)
        else:
            self.app.command(cmd)

    def accept_candidate(self, link: PeerLink, candidate: Session) -> bool:
        """For peer.py, before a completed candidate session replaces an established one:
        False when the trust store refuses its key (HIGH technical alarm raised, counted)."""
        if isinstance(self.app, TrustGate):
            return self.app.accept_candidate(link, candidate)
        return True

    def _verify(self, cmd: dict[str, Any]) -> None:
        """{"cmd": "verify", "peer": ID, "sas": "1234567"}: the user compared the SAS with the
        peer (by voice, in person) and it matched; recorded in the trust store."""
        peer, sas = cmd.get("peer"), cmd.get("sas")
        links = [
            link
            for link in self.peers.values()
            if link.established and not link.closed and peer in (None, link.peer_id)
        ]
        if len(links) != 1:
            what = "no established peer" if not links else 'several peers: give "peer"'
            self.events.publish(ne.NodeErrorEvent("bad-command", f"verify: {what}"))
            return
        link = links[0]
        if sas is not None and sas != link.sas:
            self.events.publish(ne.NodeErrorEvent("bad-command", "verify: SAS does not match"))
            return
        if not isinstance(self.app, TrustGate):
            self.events.publish(ne.NodeErrorEvent("bad-command", "verify: needs --data-dir"))
            return
        try:
            self.app.verify(link)
        except TrustError as exc:
            self.events.publish(ne.NodeErrorEvent("trust-store", str(exc)))
            return
        self.events.publish(
            ne.TrustVerified(
                "verified", link.peer_id, link.peer_role, link.session.peer_fingerprint
            )
        )
