"""The terminal central station: one station endpoint on the ward, one clinician Node per bed.

The station's own connection (a station token, session ward.W) only learns the beds and a
clinician token per bed (docs/wards.md). Each bed is an ordinary clinician Node in this
process with its own data dir DATA/beds/BED (session store, trust store: pinning per bed),
sharing the station's identity key and endpoint id, so every patient sees one identity.
Each bed node's events reach the station's output with a "bed" field.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from typing import Any

from p2pmed.node import datadir
from p2pmed.node.config import NodeConfig
from p2pmed.node.errors import EXIT_REFUSED, EXIT_REVOKED, EXIT_TLS, JoinTimeout, NodeError
from p2pmed.node.node import Node
from p2pmed.node.output import Events
from p2pmed.node.revocation import Revoked
from p2pmed.signaling_client import (
    SignalingCertificateError,
    SignalingClient,
    SignalingRefused,
)
from p2pmed.vitals.codec import Priority

log = logging.getLogger("p2pmed.node.station")

ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
RANK = {p.name: int(p) for p in Priority}
# The ward connection carries no relay frames: it pings so the server's idle logoff (900 s by
# default, protocol.md 8.3.4) never takes it
PING_EVERY = 60.0
# a bed not joined within the join timeout (the server unreachable, slow, or refusing for a
# limit of the moment: it allows 2 joins a second per address after a burst) is tried again,
# first after BED_RETRY[0] s, doubling up to BED_RETRY[1] s
BED_RETRY = (1.0, 30.0)


def is_station_token(token: str) -> bool:
    """The join token is a ward's station token (read without verifying: the server decides)."""
    return datadir.claims(token).get("role") == "station"


@dataclass
class BedRow:
    """What the station shows of one bed, from the server (state) and its node's events."""

    bed: str
    state: str = "waiting"  # waiting | live | link-lost | ended (the server's view)
    values: dict[str, float | None] = field(default_factory=dict)  # hr, sys, dia, spo2, ...
    path: str | None = None  # direct | relay | None
    alarms: dict[int, dict[str, Any]] = field(default_factory=dict)  # open alarms by id
    # technical alarms of the bed's node (all paths down, a refused identity, ...) by code
    technical: dict[str, dict[str, Any]] = field(default_factory=dict)
    joined: bool = False  # the bed node joined the bed's session

    def top_alarm(self) -> dict[str, Any] | None:
        every = [*self.alarms.values(), *self.technical.values()]
        if not every:
            return None
        # the highest priority; among equals the newest vital alarm (ids grow), technical last
        return max(
            every,
            key=lambda a: (RANK.get(a["priority"], 0), a["id"] if isinstance(a["id"], int) else -1),
        )

    def rank(self) -> int:
        top = self.top_alarm()
        return RANK.get(top["priority"], 0) if top else 0


class Station:
    def __init__(self, config: NodeConfig, events: Events | None = None) -> None:
        self.config = config
        self.events = events or Events(json_out=config.json_out)
        self._tmp: str | None = None
        base = config.data_dir
        if base is None:  # the beds still share one identity: a private dir for this run
            base = self._tmp = tempfile.mkdtemp(prefix="p2pmed-station-")
        self.base = base
        self.identity = datadir.load_identity(base)
        self.endpoint_id = config.endpoint_id or datadir.load_endpoint_id(base)
        self.ward = ""
        self.rows: dict[str, BedRow] = {}
        self.nodes: dict[str, Node] = {}
        self.exit_code = 0
        self._tokens: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retrying: set[str] = set()  # beds waiting to try their join again
        self._stopped = asyncio.Event()
        self.signaling = SignalingClient(
            config.join,
            self.endpoint_id,
            on_message=self._on_signal,
            on_relay=lambda peer, frame: None,  # a station endpoint has no peers
            on_state=self._on_state,
            resume_token=datadir.load_resume(base, config.join.token, self.endpoint_id),
            on_resume_token=lambda token: datadir.save_resume(base, token),
            ssl_context=config.ssl_context(),
        )
        self._sig_task: asyncio.Task[None] | None = None

    # ---- lifecycle ----
    async def start(self) -> dict[str, Any]:
        self._sig_task = asyncio.create_task(self.signaling.run())
        try:
            joined = await asyncio.wait_for(
                asyncio.shield(self.signaling.first_join), self.config.join_timeout
            )
        except SignalingRefused as exc:
            await self._stop_signaling()
            raise NodeError(str(exc), EXIT_REFUSED) from None
        except SignalingCertificateError as exc:
            await self._stop_signaling()
            raise NodeError(str(exc), EXIT_TLS) from None
        except TimeoutError:
            await self._stop_signaling()
            raise JoinTimeout.after(
                self.config.join.server, self.config.join_timeout, self.signaling.busy
            ) from None
        session = str(joined.get("session", ""))
        self.ward = session.partition(".")[2]
        self._spawn(self._keepalive())
        self.events.emit(
            "joined",
            role="station",
            session=session,
            ward=self.ward,
            endpoint_id=self.endpoint_id,
            fingerprint=self.identity.fingerprint(),
        )
        return joined

    async def run(self) -> int:
        await self._stopped.wait()
        return self.exit_code

    def stop(self) -> None:
        self._stopped.set()

    async def close(self) -> None:
        self._stopped.set()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*(n.close() for n in self.nodes.values()), return_exceptions=True)
        await self._stop_signaling()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    async def _stop_signaling(self) -> None:
        await self.signaling.close()
        if self._sig_task is not None:
            self._sig_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sig_task

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(PING_EVERY)
            self.signaling.send_json({"type": "ping"})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- the ward connection ----
    def _on_state(self, up: bool) -> None:
        self.events.emit("signaling", state="up" if up else "down")

    def _on_signal(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "ward" and isinstance(msg.get("beds"), list):
            for b in msg["beds"]:
                if isinstance(b, dict):
                    self._bed(b)
        elif kind == "bed":
            self._bed(msg)
        elif kind == "error" and msg.get("code") == "token-revoked":
            self.exit_code = EXIT_REVOKED
            self.events.emit(
                "revoked",
                message="station access revoked by the signaling server: every bed ends",
                exit_code=EXIT_REVOKED,
            )
            # the bed endpoints descend from the station token: the server closes them too,
            # and each bed node ends its sessions as a revoked clinician does
            self._spawn(self._end_after_beds())
        elif kind == "error":
            self.events.emit(
                "server-error", code=str(msg.get("code"))[:64], message=str(msg.get("message"))
            )

    async def _end_after_beds(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(self._node_done(n) for n in self.nodes.values())), 5.0
            )
        self.stop()

    @staticmethod
    async def _node_done(node: Node) -> None:
        with contextlib.suppress(BaseException):
            await node.run()

    def _bed(self, b: dict[str, Any]) -> None:
        bed, state, token = b.get("session"), b.get("state"), b.get("token")
        if not isinstance(bed, str) or not bed or not set(bed) <= ID_CHARS or len(bed) > 64:
            self.events.emit("error", code="bad-bed", message="ward message names no valid bed")
            return
        row = self.rows.setdefault(bed, BedRow(bed))
        new = state if isinstance(state, str) else row.state
        if new != row.state or bed not in self._tokens:
            row.state = new
            self.events.emit("bed", bed=bed, state=row.state, patient=b.get("patient"))
        if isinstance(token, str) and token:
            self._tokens[bed] = token
        if (
            bed not in self.nodes
            and bed not in self._retrying
            and row.state != "ended"
            and bed in self._tokens
        ):
            self._spawn(self._start_bed(bed, self._tokens[bed]))

    # ---- one clinician node per bed ----
    def _bed_dir(self, bed: str) -> str:
        path = os.path.join(self.base, "beds", bed)
        os.makedirs(path, mode=0o700, exist_ok=True)
        key = os.path.join(path, datadir.IDENTITY_FILE)
        own = datadir.read(os.path.join(self.base, datadir.IDENTITY_FILE))
        if own is not None and datadir.read(key) != own:
            datadir.write(key, own)  # one identity for the station and all its beds
        return path

    def _fhir_out(self, bed: str) -> str | None:
        out = self.config.fhir_out
        if not out:
            return None
        os.makedirs(out, mode=0o700, exist_ok=True)
        return os.path.join(out, f"{bed}.ndjson")

    async def _start_bed(self, bed: str, token: str) -> None:
        """Joins the bed with a node of its own; a bed not joined within the join timeout (its
        client retries inside it a refusal for a limit of the moment, such as too many joins
        from this address: a station joins every bed at once; or a loaded or restarting server
        did not answer) is tried again, waiting longer each time, while the bed is there and
        the station runs."""
        if bed in self.nodes or bed in self._retrying:
            return
        wait = BED_RETRY[0]
        while True:
            node = self._bed_node(bed, token)
            self.nodes[bed] = node
            try:
                await node.start()
                break
            except NodeError as exc:
                self.nodes.pop(bed, None)
                again = isinstance(exc, JoinTimeout)
                self.events.emit(
                    "error",
                    code="bed-join",
                    bed=bed,
                    message=str(exc)[:300],
                    retry_s=wait if again else None,
                )
                if not again:
                    return
            self._retrying.add(bed)
            try:
                await asyncio.sleep(wait)
            finally:
                self._retrying.discard(bed)
            wait = min(wait * 2, BED_RETRY[1])
            if bed in self.nodes or self.rows[bed].state == "ended" or self._stopped.is_set():
                return
            token = self._tokens.get(bed, token)
        self.rows[bed].joined = True
        try:
            await node.run()
        except Revoked:
            pass
        finally:
            await node.close()

    def _bed_node(self, bed: str, token: str) -> Node:
        cfg = replace(
            self.config,
            join=replace(self.config.join, token=token),
            record=None,
            data_dir=self._bed_dir(bed),
            endpoint_id=self.endpoint_id,
            json_out=False,
            ui=False,
            fhir_out=self._fhir_out(bed),
        )
        events = Events(json_out=False)
        events.listeners.append(lambda e: self._bed_event(bed, e))
        return Node(cfg, events)

    def _bed_event(self, bed: str, e: dict[str, Any]) -> None:
        row = self.rows.setdefault(bed, BedRow(bed))
        name = str(e.get("event"))
        if name == "message" and e.get("kind") == "numerics":
            values = e.get("values")
            if isinstance(values, dict):
                row.values = values
            row.path = str(e.get("path")) if e.get("path") != "store" else row.path
        elif name == "path":
            row.path = e.get("active")
        elif name == "alarm":
            aid = int(e["alarm_id"])
            if e.get("state") == "CLEARED":
                row.alarms.pop(aid, None)
            else:
                row.alarms[aid] = {
                    "id": aid,
                    "priority": e.get("priority"),
                    "condition": e.get("condition"),
                    "state": e.get("state"),
                    "acked": row.alarms.get(aid, {}).get("acked", False),
                }
        elif name == "technical-alarm":
            code = str(e.get("code"))
            row.technical[code] = {
                "id": code,
                "priority": e.get("priority") or "LOW",
                "condition": f"TECHNICAL {code}",
                "state": "ACTIVE",
                "acked": False,
            }
        elif name == "technical-alarm-cleared":
            row.technical.pop(str(e.get("code")), None)
        elif name in ("ack-sent", "alarm-acked-elsewhere"):
            a = row.alarms.get(int(e.get("alarm_id", -1)))
            if a is not None:
                a["acked"] = True
        fields = {k: v for k, v in e.items() if k not in ("event", "ts")}
        self.events.emit(name, bed=bed, **fields)

    # ---- commands: `ack BED ALARM_ID` lines, or {"cmd": ..., "bed": BED, ...} ----
    def command(self, cmd: dict[str, Any]) -> None:
        name = cmd.get("cmd")
        if name == "stop":
            self.stop()
            return
        if name == "status":
            self.events.emit(
                "ward",
                ward=self.ward,
                beds=[{"bed": r.bed, "state": r.state, "joined": r.joined} for r in self.sorted()],
            )
            return
        bed = cmd.get("bed")
        node = self.nodes.get(bed) if isinstance(bed, str) else None
        if node is None:
            self.events.emit("error", code="bad-command", message=f"no bed {bed!r} on this station")
            return
        node.command({k: v for k, v in cmd.items() if k != "bed"})

    def text_command(self, line: str) -> None:
        words = line.split()
        if not words:
            return
        if words[0] == "ack" and len(words) in (2, 3):
            cmd: dict[str, Any] = {"cmd": "ack", "bed": words[1]}
            if len(words) == 3:
                if not words[2].isdigit():
                    self.events.emit("error", code="bad-command", message="ack BED [ALARM_ID]")
                    return
                cmd["alarm_id"] = int(words[2])
            self.command(cmd)
        elif words[0] in ("stop", "quit", "q") and len(words) == 1:
            self.stop()
        else:
            self.events.emit(
                "error", code="bad-command", message="commands: ack BED [ALARM_ID], quit"
            )

    def sorted(self) -> list[BedRow]:
        """Beds, the highest open alarm first, then by bed name."""
        return sorted(self.rows.values(), key=lambda r: (-r.rank(), r.bed))
