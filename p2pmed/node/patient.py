"""Patient role: stream vitals from a source to every clinician, run the alarm engine, send
alarms as CRITICAL, and count an alarm acknowledged only when a clinician's ALARM_ACK arrives."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

from p2pmed.core import events as ev
from p2pmed.core.errors import ProtocolError
from p2pmed.core.frame import MessageClass
from p2pmed.devices import reading as rd
from p2pmed.devices.mapping import DeviceMapper
from p2pmed.node import clock
from p2pmed.node import device_events as de
from p2pmed.node import events as ne
from p2pmed.node.app import NoOpApp
from p2pmed.node.context import STORE_RETRY_S
from p2pmed.node.errors import EXIT_FAILED, NodeError
from p2pmed.vitals import codec, hr
from p2pmed.vitals.alarms import AlarmEngine
from p2pmed.vitals.codec import (
    Alarm,
    AlarmAck,
    AlarmState,
    Message,
    Numerics,
    Param,
    PatientStatus,
    Stream,
)
from p2pmed.vitals.sources import SyntheticSource, WfdbReplay, beat_track
from p2pmed.vitals.summary import SCENARIOS, episodes, summary

CATCH_UP_S = 60.0  # a node stopped longer than this skips to now instead of catching up

__all__ = ["SCENARIOS", "PatientApp", "episodes", "summary"]  # episodes: bench/fault_scenarios.py

if TYPE_CHECKING:
    from p2pmed.node.app import NodeHandle
    from p2pmed.node.peer import PeerLink

log = logging.getLogger("p2pmed.node.patient")


class PatientApp(NoOpApp):
    def __init__(self, node: NodeHandle) -> None:
        self.node = node
        self.patient_id = node.endpoint_id  # the same patient id in every session it joins
        first_id = node.store.get_meta("next_alarm_id") if node.store is not None else None
        first = first_id if isinstance(first_id, int) and first_id > 0 else 1
        self.engine = AlarmEngine(self.patient_id, first_alarm_id=first)
        if node.config.source.kind == "wfdb":  # HR is derived from the ECG and may be missing
            self.engine.expected = (Param.HR,)
        self.hr_source: str | None = None  # where the HR in NUMERICS comes from
        # sdc: called on sdc11073's thread with each reading and time.time() at the consumer
        # callback (bench/device_bench.py --mode sdc sets it before the node starts)
        self.device_tap: Callable[[rd.Reading, float], None] | None = None
        self.stream = Stream.STREAMING
        self._status_counter = 0
        try:
            self.status()  # a label or FHIR subject the wire cannot carry fails here, at start
        except ProtocolError as exc:
            raise NodeError(
                f"--label or --fhir-patient cannot be sent to clinicians: {exc}"
            ) from exc
        self.alarm_sent: dict[int, float] = {}
        self.acked_alarms: set[int] = set()
        self.first_acks: dict[int, AlarmAck] = {}  # open alarm id -> its first ALARM_ACK
        self.pending_audit: list[dict[str, Any]] = []
        self.position = 0
        self.sent = 0
        self._stop = asyncio.Event()
        self.device: DeviceMapper | None = None  # --source hl7-mllp: / sdc:
        self._unreported: list[ne.NodeEvent] = []  # sent, waiting for the batch's commit
        self._device_task: asyncio.Task[Any] | None = None

    # ---- the source ----
    async def _beats(self) -> hr.BeatTrack | None:
        """QRS detection for a WFDB source, in a separate process: detection is CPU-bound
        Python and numpy that, in a thread, would hold the GIL (46 ms event-loop stalls were
        measured while a thread detected 300 s of ECG)."""
        spec = self.node.config.source
        if spec.kind != "wfdb":
            return None
        loop = asyncio.get_running_loop()
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            return await loop.run_in_executor(pool, beat_track, spec.path)
        except Exception as exc:  # no process (limits, sandbox): the thread does it instead
            self.node.events.publish(ne.HrDetectionInThread(repr(exc)[:200]))
            return None
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _source(
        self,
        start: float,
        skip: int = 0,
        beats: hr.BeatTrack | None = None,
        catch_up_from: float | None = None,
    ) -> tuple[Iterator[tuple[float, Message]], int]:
        """The deterministic stream from `start`, without its first `skip` messages (seeked
        directly, not regenerated: this can take a moment, so callers run it off the loop),
        nor any due before `catch_up_from`; and where it starts."""
        spec = self.node.config.source
        src: WfdbReplay | SyntheticSource
        if spec.kind == "wfdb":
            src = WfdbReplay(spec.path, start_time=start, patient_id=self.patient_id, beats=beats)
            self.hr_source = src.hr_source
        else:
            self.hr_source = "synthetic"
            scenario = self.node.config.scenario
            src = SyntheticSource(self.patient_id, start_time=start, episodes=episodes(scenario))
        if catch_up_from is not None:
            skip = max(skip, src.position_at(catch_up_from))
        return src.iter_from(skip), skip

    async def run(self) -> None:
        if self.node.config.source.kind in ("hl7-mllp", "sdc"):
            await self._run_device()
            return
        store = self.node.store
        restored = [link for link in self.node.peers.values() if link.established]
        start = store.get_meta("source_start") if store is not None else None
        if isinstance(start, float) and restored:
            # resume: regenerate the same deterministic stream and skip what every
            # restored peer already has queued (per peer, broadcast() skips the rest)
            skip = min(link.source_pos for link in restored)
        else:
            start, skip = clock.now(), 0
            for link in restored:
                link.source_pos = 0
            if store is not None:
                store.set_meta("source_start", start)
        rate = self.node.config.rate
        # After a longer stop the stream goes on from now: what was due while the node was
        # down was never measured, and replaying it in a burst would feed the alarm engine
        # stale values at wall-clock time. A short stop is caught up, nothing skipped.
        catch_up_from = start + (clock.now() - start) * rate - CATCH_UP_S * rate
        beats = await self._beats()
        source, first = await asyncio.to_thread(self._source, start, skip, beats, catch_up_from)
        if first > skip:
            gap = (clock.now() - start) * rate - CATCH_UP_S * rate
            self.node.events.publish(ne.SourceGap(first - skip, round(gap, 3)))
        skip = first
        self.position = n = skip
        self.node.events.publish(ne.SourceStarted(skip, self.hr_source))
        self._send_status()  # now with the HR source
        behind = 0
        for due, msg in source:
            n += 1
            wait = start + (due - start) / rate - clock.now()
            if wait > 0:
                behind = 0
                try:
                    await asyncio.wait_for(self._stop.wait(), wait)
                    return
                except TimeoutError:
                    pass
            else:
                behind += 1
                if behind % 32 == 0:  # catching up: let the links and signaling run too
                    await asyncio.sleep(0)
                    if self._stop.is_set():
                        return
            self.position = n
            # numerics are what a clinician reads: HIGH, never queued behind waveform backlog
            cls = MessageClass.HIGH if isinstance(msg, Numerics) else MessageClass.MEDIUM
            self.broadcast(cls, msg, n)
            if self.pending_audit:
                self._flush_audit()
            if isinstance(msg, Numerics):
                now = clock.now()
                for alarm in self.engine.feed(msg, now) + self.engine.tick(now):
                    self.send_alarm(alarm)
        self.node.events.publish(ne.SourceEnded(n))
        self.stream = Stream.ENDED  # the clinicians are told: over, not lost
        self._send_status()

    # ---- a bedside device (push) ----
    def _device_source(self) -> rd.DeviceSource:
        spec = self.node.config.source
        if spec.kind == "hl7-mllp":
            from p2pmed.devices.hl7 import Hl7Source

            return Hl7Source(spec.host, spec.port, idle_s=spec.idle_s)
        from p2pmed.devices.sdc import SdcSource

        return SdcSource(spec.target, bed=spec.bed, tap=self.device_tap)

    def _expected_patient(self) -> str | None:
        """The patient id a device must report: the id of --fhir-patient (last path segment);
        None without one (nothing to compare with)."""
        subject = self.node.config.fhir_patient
        return subject.rstrip("/").rsplit("/", 1)[-1] if subject else None

    async def _run_device(self) -> None:
        """Readings pushed by the device: everything that arrived together is mapped as one
        batch (one NUMERICS per batch), sent at once, and the alarm engine runs on it."""
        self._device_task = asyncio.current_task()
        source = self._device_source()
        self.device = DeviceMapper(self.patient_id, self.engine, self._expected_patient())
        self.hr_source = "device"
        start = getattr(source, "start", None)
        if start is not None:
            spec = self.node.config.source
            try:
                host, port = await start()
            except OSError as exc:  # a port in use, an address not ours: say so and stop
                why = f"--source hl7-mllp: cannot listen on {spec.host}:{spec.port}: {exc}"
                log.error("%s", why)
                self.node.events.publish(de.DeviceSourceFailed(why))
                self.node.ctx.exit_code = EXIT_FAILED
                self.node.stop()
                return
            self.node.events.publish(de.DeviceListening("hl7", host, port))
        # What was built while starting (modules, classes, the node) stays for good: frozen,
        # a full collection no longer walks it. Unfrozen, each one took 30-45 ms here (70k
        # objects), a pause every several seconds that a device message now and then sat in.
        gc.freeze()
        counts = asyncio.create_task(self._device_counts(source, self.device))
        self.node.events.publish(ne.SourceStarted(0, self.hr_source))
        self._send_status()
        try:
            while not self._stop.is_set():
                await self._device_readings(source)
                with contextlib.suppress(TimeoutError):  # a source that ended: again, in 1 s
                    await asyncio.wait_for(self._stop.wait(), 1.0)
        finally:
            counts.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await counts
            await source.aclose()

    async def _device_readings(self, source: rd.DeviceSource) -> None:
        """Each batch the source yields is mapped, committed (fsynced) and sent before the
        next is taken: in the loop turn it arrived in, with no queue between (a node that
        cannot keep up holds the source back; the source's own bounded queue says so). When
        `_device_batch` returns the batch is durable, so an HL7 source ACKs it once the next
        batch is asked for (p2pmed/devices/hl7.py)."""
        batches = source.batches()
        try:
            async for batch in batches:
                if not self._device_batch(batch):
                    # the store cannot be written: the batch is queued, not durable, so the
                    # next one is not asked for (an HL7 device waits for its ACK) until a
                    # commit works again
                    while not self._stop.is_set() and not self.node.persist():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stop.wait(), STORE_RETRY_S)
                if self._stop.is_set():
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a source that fails is restarted
            log.exception("device source failed")
            self.node.events.publish(de.DeviceSourceFailed(repr(exc)[:200]))
            self._device_batch([rd.DeviceLost(f"source failed: {exc!r}"[:200])])
        finally:
            with contextlib.suppress(Exception):
                await batches.aclose()

    async def _device_counts(self, source: rd.DeviceSource, mapper: DeviceMapper) -> None:
        """What the source and the mapping could not use, by reason: published once a second
        when a total changed (bad input yields no reading to report it with)."""
        counts: tuple[dict[str, int], dict[str, int]] = ({}, {})
        while True:
            await asyncio.sleep(1.0)
            now_counts = (dict(getattr(source, "errors", {})), dict(mapper.counts))
            if now_counts != counts:
                counts = now_counts
                self.node.events.publish(de.DeviceCounts(*counts))

    def _device_batch(self, batch: list[rd.Reading]) -> bool:
        """Map, queue and send one batch; True once it is durable, False when the store
        cannot be written (then it stays queued in memory for the next commit that works)."""
        assert self.device is not None
        now = clock.now()
        out: list[Message] = []
        for r in batch:
            out += self.device.feed(r, now)
        out += self.device.flush(now)
        for msg in out:  # one group commit for the batch, below
            if isinstance(msg, Alarm):
                self.send_alarm(msg, commit=False)
                continue
            # numerics and what the device says of itself are read by a clinician: HIGH
            cls = MessageClass.MEDIUM if isinstance(msg, codec.Waveform) else MessageClass.HIGH
            self.broadcast(cls, msg, commit=False)
            if isinstance(msg, Numerics):
                for alarm in self.engine.feed(msg, now) + self.engine.tick(now):
                    self.send_alarm(alarm, commit=False)
        # each link's output now: its driver commits the messages queued above together with
        # the frames that carry them, then sends them (one fsync per link before a frame
        # leaves, instead of one here and another in the driver's flush a loop turn later)
        for link in list(self.node.peers.values()):
            if link.established and not link.closed:
                link.kick(urgent=True)
        durable = self.node.persist()  # anything else staged (usually nothing: no 2nd fsync)
        for event in self._unreported:
            self.node.events.publish(event)
        self._unreported.clear()
        if self.pending_audit:
            self._flush_audit()
        return durable

    def status(self) -> PatientStatus:
        cfg = self.node.config
        return PatientStatus(
            self._status_counter,
            self.stream,
            label=cfg.label or "",
            subject=cfg.fhir_patient or "",
            hr_source=self.hr_source or "",
        )

    def _send_status(self, only: PeerLink | None = None) -> None:
        if only is None:
            self._status_counter += 1
        self.broadcast(MessageClass.HIGH, self.status(), only=only)

    def broadcast(
        self,
        cls: MessageClass,
        msg: Message,
        n: int | None = None,
        only: PeerLink | None = None,
        commit: bool = True,
    ) -> None:
        """Queue a message for every established peer (or `only` one); source message n goes
        only to peers whose stored position is below n. Durable before it is reported
        (commit=False: the caller commits once for several, before any frame leaves: the
        driver flushes on a later loop turn)."""
        data = codec.encode(msg)
        sent: list[tuple[str, int]] = []
        store = self.node.store
        for link in self.node.peers.values():
            if not link.established or link.closed or (only is not None and link is not only):
                continue
            if n is not None:
                if n <= link.source_pos:
                    continue
                link.source_pos = n
                if store is not None:
                    store.peer(link.peer_id).set_meta("source_pos", n)
            sent.append((link.peer_id, link.send(cls, data)))
        if commit:
            self.node.persist()
        self.sent += len(sent)
        if sent and (self.node.events.json_out or self.node.events.listeners):
            info = summary(msg)
            if isinstance(msg, Numerics):
                info["hr_source"] = self.hr_source
            crc = zlib.crc32(data)
            for peer_id, msg_id in sent:
                event = ne.MessageSent(peer_id, msg_id, cls.name, len(data), crc, info)
                if commit:
                    self.node.events.publish(event)
                else:  # reported once the caller has made it durable
                    self._unreported.append(event)

    def send_alarm(self, alarm: Alarm, commit: bool = True) -> None:
        self.alarm_sent.setdefault(alarm.alarm_id, clock.now())
        if alarm.state is AlarmState.CLEARED:
            self.first_acks.pop(alarm.alarm_id, None)
        if self.node.store is not None:
            self.node.store.set_meta("next_alarm_id", alarm.alarm_id + 1)
        self.node.events.publish(
            ne.AlarmSent(
                alarm.alarm_id,
                alarm.condition,
                alarm.priority.name,
                alarm.state.name,
                alarm.category.name,
                alarm.value,
            )
        )
        self.broadcast(MessageClass.CRITICAL, alarm, commit=commit)

    # ---- App protocol ----
    def on_established(self, link: PeerLink) -> None:
        link.source_pos = self.position  # a new clinician gets the stream from now on
        self._send_status(only=link)
        now = clock.now()
        device = self.device.status(now) if self.device is not None else None
        if device is not None:  # which bedside device feeds this patient
            self.broadcast(MessageClass.HIGH, device, only=link)
        for alarm in self.engine.active(now):  # a clinician who (re)joins sees open alarms
            self.broadcast(MessageClass.CRITICAL, alarm, only=link)
            ack = self.first_acks.get(alarm.alarm_id)
            if ack is not None and ack.who != link.peer_id:  # ... and who acknowledged them
                self.broadcast(MessageClass.CRITICAL, ack, only=link)
        self._flush_audit()

    def on_message(self, link: PeerLink, event: ev.MessageReceived) -> None:
        try:
            msg = codec.decode(event.data)
        except ProtocolError as exc:
            self.node.on_app_rejected(link, exc)
            return
        if isinstance(msg, AlarmAck):
            self._on_ack(link, msg)
        elif isinstance(msg, codec.Control):
            try:
                self.engine.apply_control(msg)
                self.node.events.publish(ne.ControlApplied(link.peer_id, msg.command.name))
            except ProtocolError as exc:
                self.node.on_app_rejected(link, exc)
        else:
            self.node.events.publish(ne.UnexpectedMessage(link.peer_id, summary(msg)))

    def _on_ack(self, link: PeerLink, ack: AlarmAck) -> None:
        if ack.who != link.peer_id:  # an endpoint acknowledges in its own name only
            self.node.on_app_rejected(link, ProtocolError("ack-who", "ack names another endpoint"))
            return
        now = clock.now()
        try:
            out = self.engine.acknowledge(ack, now)
        except ProtocolError as exc:
            self.node.on_app_rejected(link, exc)
            return
        first = ack.alarm_id not in self.acked_alarms
        self.acked_alarms.add(ack.alarm_id)
        sent = self.alarm_sent.get(ack.alarm_id)
        latency_ms = None if sent is None else round((now - sent) * 1000, 1)
        self.node.events.publish(ne.AlarmAcked(ack.alarm_id, link.peer_id, first, latency_ms))
        if first:
            self.first_acks[ack.alarm_id] = ack
            self.pending_audit.append(
                {"type": "audit", "event": "alarm-ack", "alarm_id": str(ack.alarm_id)}
            )
            self._flush_audit()
            for other in self.node.peers.values():  # tell the other clinicians it is handled
                if other is not link and other.established:
                    self.broadcast(MessageClass.CRITICAL, ack, only=other)
        for alarm in out:
            self.send_alarm(alarm)

    def _flush_audit(self) -> None:
        while self.pending_audit and self.node.signaling.send_json(self.pending_audit[0]):
            self.pending_audit.pop(0)

    async def close(self) -> None:
        self._stop.set()
        task = self._device_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()  # it is waiting on the device; it closes the source as it ends
