"""Clinician (and observer) role: receive vitals, show them, export FHIR, acknowledge alarms."""

from __future__ import annotations

import json
import logging
import os
import sys
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import IO, TYPE_CHECKING, Any

from p2pmed.core import events as ev
from p2pmed.core.errors import ProtocolError
from p2pmed.core.frame import MessageClass
from p2pmed.devices.mapping import METRICS
from p2pmed.node import clock
from p2pmed.node import events as ne
from p2pmed.node.app import NoOpApp
from p2pmed.ui import PatientLine, TerminalUI
from p2pmed.vitals import codec, fhir
from p2pmed.vitals.codec import (
    Alarm,
    AlarmAck,
    AlarmState,
    DeviceMetric,
    DeviceStatus,
    Numerics,
    PatientStatus,
    Stream,
    Waveform,
)
from p2pmed.vitals.summary import label_of, summary

if TYPE_CHECKING:
    from p2pmed.node.app import NodeHandle
    from p2pmed.node.peer import PeerLink

log = logging.getLogger("p2pmed.node.clinician")

TRACE_SECONDS = 4.0
FHIR_PENDING_MAX = 2000  # exports held per patient until its status names the FHIR subject


def _waveform(w: Waveform, device: dict[str, str] | None, subject: str) -> list[dict[str, Any]]:
    return [fhir.waveform_to_observation(w, subject, device=device)]


def _metric(m: DeviceMetric, device: dict[str, str] | None, subject: str) -> list[dict[str, Any]]:
    known = METRICS.get(m.code)
    loinc = fhir.loinc_coding(known.loinc) if known is not None else None
    return [fhir.metric_to_observation(m, subject, device=device, loinc=loinc)]


def _device(d: DeviceStatus, subject: str) -> list[dict[str, Any]]:
    return [fhir.device_to_resource(d, subject)]


def open_private(path: str) -> IO[str]:
    """Open a file of patient data for appending, created (or tightened to) 0600 whatever
    the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "a", encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


class ClinicianApp(NoOpApp):
    def __init__(self, node: NodeHandle) -> None:
        self.node = node
        self.numerics: Numerics | None = None
        self.trace: deque[float] = deque(maxlen=2000)
        self.trace_signal = ""
        self.alarms: dict[int, Alarm] = {}  # open alarms by id
        self.acked: dict[int, str] = {}  # alarm id -> who acknowledged
        self.status: dict[str, PatientStatus] = {}  # patient endpoint id -> its last status
        self.waiting: list[str] = []
        self._admit_sent: set[str] = set()  # per signaling connection: admit once
        self.last_seq: dict[str, int] = {}  # waveform signal -> next expected sample seq
        self.gaps = 0
        self.received = 0
        self._fhir: IO[str] | None = None
        self._ui: TerminalUI | None = None
        self._pending: dict[str, list[Callable[[str], list[dict[str, Any]]]]] = {}
        self._alarm_peer: dict[int, str] = {}  # alarm id -> patient that raised it
        self._raised_us: dict[int, int] = {}  # alarm id -> first time seen raised
        self._ack_info: dict[int, tuple[str, int]] = {}  # alarm id -> (who, time_us)
        self.devices: dict[str, DeviceStatus] = {}  # patient endpoint id -> its bedside device
        self._device_refs: dict[str, dict[str, str]] = {}  # -> its FHIR reference (made once)
        out = node.config.fhir_out
        if out == "-":
            self._fhir = sys.stdout
        elif out:
            self._fhir = open_private(out)

    # ---- ClinicianView (what the terminal view reads) ----
    @property
    def endpoint_id(self) -> str:
        return self.node.endpoint_id

    @property
    def session_id(self) -> str:
        return self.node.session_id

    def patients(self) -> list[PatientLine]:
        return [
            PatientLine(
                peer_id=link.peer_id,
                role=link.peer_role,
                paths=link.status(),
                sas=link.sas,
                established=link.established and not link.closed,
                fingerprint=link.session.peer_fingerprint,
            )
            for link in self.node.peers.values()
        ]

    def listen(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self.node.events.listeners.append(listener)

    def is_verified(self, fingerprint: str, role: str) -> bool:
        """The trust store says the SAS with this identity was verified in this consultation
        (or for every consultation); False without a store or when it cannot be read."""
        trust = self.node.trust
        if trust is None:
            return False
        try:
            entries = trust.entries()
        except ValueError:  # an unusable store: the node says so
            return False
        return any(
            e.fingerprint == fingerprint
            and e.role == role
            and e.session in (None, self.node.session_id)
            and e.verified is not None
            for e in entries
        )

    def verify_sas(self, peer_id: str | None, sas: str | None) -> None:
        cmd: dict[str, Any] = {"cmd": "verify"}
        if peer_id is not None:
            cmd.update(peer=peer_id, sas=sas)
        self.node.command(cmd)

    def quit(self) -> None:
        self.node.stop()

    # ---- App protocol ----
    def on_joined(self) -> None:
        if self.node.config.ui:
            self._ui = TerminalUI(self)

    def on_peer_waiting(self, peer_id: str, role: str) -> None:
        self.node.events.publish(ne.PeerWaiting(peer_id, role))
        if self.node.role != "clinician":
            return
        if self.node.config.auto_admit:
            self.admit(peer_id)
        elif peer_id not in self.waiting:
            self.waiting.append(peer_id)

    def on_peer_left(self, peer_id: str) -> None:
        # the server forgets the admission with the endpoint: when it joins again (a patient
        # node stopped and started), it waits to be admitted again
        self._admit_sent.discard(peer_id)
        if peer_id in self.waiting:
            self.waiting.remove(peer_id)

    def on_signaling(self, up: bool) -> None:
        if not up:
            self._admit_sent.clear()  # a restarted server has forgotten every admission

    def admit(self, peer_id: str) -> None:
        if peer_id in self.waiting:
            self.waiting.remove(peer_id)
        if peer_id in self._admit_sent:
            return
        self._admit_sent.add(peer_id)
        self.node.signaling.send_json({"type": "admit", "endpoint_id": peer_id})
        self.node.events.publish(ne.Admitted(peer_id))

    def on_message(self, link: PeerLink, event: ev.MessageReceived) -> None:
        try:
            msg = codec.decode(event.data)
        except ProtocolError as exc:
            self.node.on_app_rejected(link, exc)
            return
        self.received += 1
        now = clock.now()
        info = summary(msg)
        if isinstance(msg, Numerics):
            st = self.status.get(link.peer_id)
            info["hr_source"] = st.hr_source or None if st is not None else None
        if self.node.events.json_out or self.node.events.listeners:
            self.node.events.publish(
                ne.MessageDelivered(
                    link.peer_id,
                    event.message_id,
                    event.cls.name,
                    event.seq,
                    event.path_id,
                    len(event.data),
                    zlib.crc32(event.data),
                    round((now - event.sent_timestamp_us / 1e6) * 1000, 3),
                    event.path_id == "store",
                    info,
                )
            )
        if isinstance(msg, PatientStatus):
            self._on_status(link, msg)
        elif isinstance(msg, Numerics):
            self.numerics = msg
            dev = self._device_ref(link.peer_id)
            self._export(link.peer_id, partial(fhir.numerics_to_observations, msg, device=dev))
        elif isinstance(msg, Waveform):
            expected = self.last_seq.get(msg.signal)
            if expected is not None and msg.first_seq != expected:
                self.gaps += 1
                self.node.events.publish(ne.WaveformGap(msg.signal, expected, msg.first_seq))
            self.last_seq[msg.signal] = msg.seq_end()
            if msg.signal != "PLETH":
                self.trace_signal = msg.signal
                self.trace.extend(s * msg.scale for s in msg.samples)
            self._export(link.peer_id, partial(_waveform, msg, self._device_ref(link.peer_id)))
        elif isinstance(msg, DeviceStatus):
            self._on_device(link.peer_id, msg)
        elif isinstance(msg, DeviceMetric):
            self._export(link.peer_id, partial(_metric, msg, self._device_ref(link.peer_id)))
        elif isinstance(msg, Alarm):
            if msg.state is AlarmState.CLEARED:
                self.alarms.pop(msg.alarm_id, None)
            else:
                self.alarms[msg.alarm_id] = msg
            self._alarm_peer[msg.alarm_id] = link.peer_id
            if msg.state is not AlarmState.CLEARED:
                self._raised_us.setdefault(msg.alarm_id, msg.time_us)
            self._export_alarm(msg)
            self.node.events.publish(
                ne.AlarmReceived(
                    link.peer_id,
                    msg.alarm_id,
                    msg.condition,
                    msg.priority.name,
                    msg.state.name,
                    msg.category.name,
                    msg.value,
                    round((now - event.sent_timestamp_us / 1e6) * 1000, 3),
                )
            )
            if self._ui is not None:
                self._ui.bell()
        elif isinstance(msg, AlarmAck):  # another clinician acknowledged
            self.acked[msg.alarm_id] = msg.who
            self.node.events.publish(ne.AlarmAckedElsewhere(msg.alarm_id, msg.who))
            self._acked(msg.alarm_id, msg.who, msg.time_us)

    def _on_status(self, link: PeerLink, st: PatientStatus) -> None:
        before = self.status.get(link.peer_id)
        self.status[link.peer_id] = st
        self.node.events.publish(
            ne.PatientStatusReceived(
                link.peer_id,
                st.label or None,
                label_of(st),
                st.stream.name,
                st.hr_source or None,
                st.subject or None,
            )
        )
        self._flush_pending(link.peer_id)
        if st.stream is Stream.ENDED and (before is None or before.stream is not Stream.ENDED):
            # the recording is over; the link is still up (a lost link is a "path"/"closed")
            self.node.events.publish(ne.StreamEnded(link.peer_id, label_of(st)))
            if self._ui is not None:
                self._ui.bell()

    def _on_device(self, peer_id: str, d: DeviceStatus) -> None:
        before = self.devices.get(peer_id)
        self.devices[peer_id] = d
        # the Device resource again only when something but the time changed (state, identity)
        if before is None or replace(before, time_us=d.time_us) != d:
            self._device_refs[peer_id] = fhir.device_reference(d)
            self._export(peer_id, partial(_device, d))

    def _device_ref(self, peer_id: str) -> dict[str, str] | None:
        return self._device_refs.get(peer_id)

    # ---- FHIR export ----
    def subject(self, peer_id: str) -> str | None:
        """The FHIR subject of a patient's data: this clinician's --fhir-patient, else the one
        the patient's status names, else Patient/<patient endpoint id>; None until the
        patient's status has arrived (exports wait for it: one patient, one subject)."""
        if self.node.config.fhir_patient:
            return self.node.config.fhir_patient
        st = self.status.get(peer_id)
        if st is None:
            return None
        return st.subject or f"Patient/{peer_id}"

    def _export(self, peer_id: str, build: Callable[[str], list[dict[str, Any]]]) -> None:
        if self._fhir is None:
            return
        subj = self.subject(peer_id)
        if subj is None:
            pending = self._pending.setdefault(peer_id, [])
            pending.append(build)
            if len(pending) < FHIR_PENDING_MAX:
                return
            subj = f"Patient/{peer_id}"  # a patient that never says: its endpoint id
            self.node.events.publish(ne.FhirSubjectDefault(peer_id, subj))
        self._write([r for b in self._pending.pop(peer_id, [build]) for r in b(subj)])

    def _flush_pending(self, peer_id: str) -> None:
        subj = self.subject(peer_id)
        if self._fhir is not None and subj is not None and peer_id in self._pending:
            self._write([r for b in self._pending.pop(peer_id) for r in b(subj)])

    def _write(self, resources: list[dict[str, Any]]) -> None:
        assert self._fhir is not None
        for res in resources:
            self._fhir.write(json.dumps(res, separators=(",", ":")) + "\n")
        self._fhir.flush()

    def _export_alarm(self, alarm: Alarm) -> None:
        peer = self._alarm_peer.get(alarm.alarm_id)
        if peer is None:
            return
        aid = alarm.alarm_id
        raised, ack = self._raised_us.get(aid), self._ack_info.get(aid)
        self._export(
            peer,
            lambda subj: [
                fhir.alarm_to_detected_issue(
                    alarm, subj, source=peer, raised_us=raised, acknowledged=ack
                )
            ],
        )
        if alarm.state is AlarmState.CLEARED:
            for d in (self._raised_us, self._ack_info, self._alarm_peer):
                d.pop(aid, None)

    def _acked(self, alarm_id: int, who: str, time_us: int) -> None:
        self._ack_info.setdefault(alarm_id, (who, time_us))
        alarm = self.alarms.get(alarm_id)
        if alarm is not None:
            self._export_alarm(alarm)

    def acknowledge(self, alarm_id: int | None = None) -> int:
        """Send ALARM_ACK for one alarm (or every unacknowledged open alarm); returns how many."""
        if self.node.role != "clinician":
            return 0
        ids = (
            [alarm_id] if alarm_id is not None else [a for a in self.alarms if a not in self.acked]
        )
        count = 0
        for aid in ids:
            for link in self.node.peers.values():
                if link.established:
                    ack = AlarmAck(aid, int(clock.now() * 1e6), self.node.endpoint_id)
                    link.send(MessageClass.CRITICAL, codec.encode(ack))
                    self.acked[aid] = self.node.endpoint_id
                    self.node.events.publish(ne.AckSent(link.peer_id, aid))
                    self._acked(aid, self.node.endpoint_id, ack.time_us)
                    count += 1
        return count

    def command(self, cmd: dict[str, Any]) -> None:
        name = cmd.get("cmd")
        if name == "ack":
            aid = cmd.get("alarm_id")
            self.acknowledge(int(aid) if isinstance(aid, int) else None)
        elif name == "admit-all":
            for peer in list(self.waiting):
                self.admit(peer)

    async def run(self) -> None:
        if self._ui is not None:
            await self._ui.run()

    async def close(self) -> None:
        if self._ui is not None:
            self._ui.restore()
        if self._fhir is not None and self._fhir is not sys.stdout:
            self._fhir.close()
