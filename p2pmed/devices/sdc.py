"""IEEE 11073 SDC device source: an sdc11073 consumer turned into `reading` records.

`SdcSource("discover", bed=...)` or `SdcSource("urn:uuid:...")` discovers a provider with
WS-Discovery, reads its DPWS metadata and MDIB, subscribes to everything it offers (episodic
metric, alert and context reports, waveform streams) and yields:

- `DeviceInfo` first (EPR, DPWS model/serial/manufacturer, PatientContext id), and again when
  the device reports another patient;
- the current value of every numeric metric and the current state of every alert condition
  (active or not, so a condition that ended while the device was away is closed);
- then `Metric`, `Samples` and `DeviceAlert` as reports arrive (`batches()`: one list per
  report, or per several that arrived in the same loop turn).

Loss: when no report of any kind arrives for `stale_after` seconds (2 s by default; the
simulated monitor sends waveforms every 50 ms and numerics every second), when a subscription
ends or fails to renew, or when the bridge queue overflows, it yields `DeviceLost(reason)`,
drops the consumer without unsubscribing, rediscovers (one WS-Discovery probe per
`search_s`, 1 s by default) and resubscribes on its own, then yields a fresh `DeviceInfo`.

sdc11073 runs its own threads; each report is converted there and handed to the event loop
with `call_soon_threadsafe` into a bounded queue. A full queue is never dropped silently: it is
counted (`stats.overflows`) and ends the session with DeviceLost("overflow ..."), since samples
were lost; the source then resubscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from sdc11073 import observableproperties
from sdc11073.consumer.consumerimpl import SdcConsumer
from sdc11073.definitions_sdc import SdcV1Definitions
from sdc11073.location import SdcLocation, UrlSchemeError
from sdc11073.mdib.consumermdib import ConsumerMdib
from sdc11073.mdib.statecontainers import PatientContextStateContainer
from sdc11073.wsdiscovery import WSDiscovery
from sdc11073.xml_types import pm_types

from p2pmed.devices.reading import (
    DeviceAlert,
    DeviceInfo,
    DeviceLost,
    Metric,
    Priority,
    Reading,
    Samples,
    flatten,
)

log = logging.getLogger(__name__)

# sdc11073's observable helpers are untyped
_strongbind: Any = observableproperties.strongbind
_unbind: Any = observableproperties.unbind

VALID = (pm_types.MeasurementValidity.VALID, pm_types.MeasurementValidity.VALIDATED_DATA)
PRIORITIES = {
    pm_types.AlertConditionPriority.HIGH: Priority.HIGH,
    pm_types.AlertConditionPriority.MEDIUM: Priority.MEDIUM,
    pm_types.AlertConditionPriority.LOW: Priority.LOW,
    # BICEPS "None" has no IEC 60601-1-8 counterpart: shown as the lowest priority
    pm_types.AlertConditionPriority.NONE: Priority.LOW,
}


@dataclass
class SdcStats:
    sessions: int = 0
    lost: int = 0
    overflows: int = 0
    connect_errors: int = 0
    report_errors: int = 0  # reports that could not be converted (logged)
    skipped_no_code: int = 0  # metrics whose descriptor has no numeric MDC code
    skipped_no_value: int = 0  # numeric states without a value (e.g. measurement ongoing)
    skipped_non_numeric: int = 0  # string / enum metrics
    late_reports: int = 0  # reports of a session already ended, arriving after its DeviceLost


def _us(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1_000_000)


def _norm_epr(epr: str) -> str:
    return epr.strip().lower().removeprefix("urn:uuid:")


def _text(localized: Any) -> str:
    """First text of a DPWS or BICEPS localized text list."""
    for item in localized or ():
        if item.text:
            return str(item.text).strip()
    return ""


def _code(descriptor: Any) -> int | None:
    code = getattr(descriptor.Type, "Code", None)
    try:
        return int(code) if code is not None else None
    except ValueError:
        return None


def _label(descriptor: Any) -> str:
    coded = descriptor.Type
    if coded is not None and coded.SymbolicCodeName:
        return str(coded.SymbolicCodeName)
    return str(descriptor.Handle)


def _unit(descriptor: Any) -> str:
    unit = getattr(descriptor, "Unit", None)
    if unit is None:
        return ""
    return str(unit.SymbolicCodeName or unit.Code)


def bed_of(service: Any) -> str | None:
    """The bed of a discovered service's location scope, if it has one."""
    for scope in getattr(service.scopes, "text", None) or ():
        try:
            location = SdcLocation.from_scope_string(scope)
        except (UrlSchemeError, ValueError):
            continue
        if location.bed:
            return str(location.bed)
    return None


class _Session:
    """One consumer connected to one provider; callbacks run on sdc11073's threads."""

    def __init__(
        self,
        service: Any,
        put: Callable[[_Session, list[Reading | _End]], None],
        tap: Callable[[Reading, float], None] | None = None,
    ) -> None:
        self.service = service
        self._put = put
        self._tap = tap
        self.active = True
        self.patient_id: str | None = None
        self.consumer: Any = SdcConsumer.from_wsd_service(service, None)
        self.mdib: Any = None
        self._bindings: dict[str, Callable[[Any], None]] = {
            "waveform_report": self._on_waveform,
            "episodic_metric_report": self._on_metric,
            "episodic_alert_report": self._on_alert,
            "episodic_context_report": self._on_context,
            "subscription_end_data": self._on_subscription_end,
            "is_connected": self._on_connected,
        }
        self.stats = SdcStats()

    def start(self) -> tuple[DeviceInfo, list[Reading]]:
        self.consumer.start_all()
        mdib: Any = ConsumerMdib(self.consumer)
        mdib.init_mdib()
        self.mdib = mdib
        self.patient_id = self._patient_id(mdib.context_states.objects)
        initial: list[Reading] = []
        for state in list(mdib.states.objects):
            initial.extend(self._convert_state(state, include_waveforms=False))
        _strongbind(self.consumer, **self._bindings)
        return self.info(), initial

    def info(self) -> DeviceInfo:
        host = self.consumer.host_description
        model = host.this_model if host is not None else None
        device = host.this_device if host is not None else None
        return DeviceInfo(
            protocol="sdc",
            device_id=str(self.service.epr),
            model=_text(model.ModelName) if model is not None else "",
            serial=str(device.SerialNumber or "") if device is not None else "",
            manufacturer=_text(model.Manufacturer) if model is not None else "",
            patient_id=self.patient_id,
        )

    def stop(self, unsubscribe: bool) -> None:
        self.active = False
        with contextlib.suppress(Exception):
            _unbind(self.consumer, **self._bindings)
        try:
            self.consumer.stop_all(unsubscribe=unsubscribe)
        except Exception as exc:  # a dead provider cannot be unsubscribed from
            log.info("sdc: stopping the consumer of %s: %s", self.service.epr, exc)

    # --- conversion, on sdc11073's threads ---

    def _descriptor(self, handle: str) -> Any:
        assert self.mdib is not None
        return self.mdib.descriptions.handle.get_one(handle, allow_none=True)

    def _convert_state(self, state: Any, include_waveforms: bool) -> list[Reading]:
        descriptor = self._descriptor(state.DescriptorHandle)
        if descriptor is None:
            return []
        if getattr(state, "is_alert_condition", False):
            return [self._alert(state, descriptor)]
        if not getattr(state, "is_metric_state", False):
            return []
        if state.is_realtime_sample_array_metric_state:
            sample = self._samples(state, descriptor) if include_waveforms else None
            return [sample] if sample is not None else []
        metric = self._metric(state, descriptor)
        return [metric] if metric is not None else []

    def _metric(self, state: Any, descriptor: Any) -> Metric | None:
        value = state.MetricValue
        if value is None:
            return None
        if not hasattr(value, "Value") or not isinstance(
            state.MetricValue, pm_types.NumericMetricValue
        ):
            self.stats.skipped_non_numeric += 1
            return None
        code = _code(descriptor)
        if code is None:
            self.stats.skipped_no_code += 1
            return None
        if value.Value is None:
            self.stats.skipped_no_value += 1
            return None
        return Metric(
            code=code,
            value=float(value.Value),
            unit=_unit(descriptor),
            valid=value.MetricQuality.Validity in VALID,
            time_us=_us(value.DeterminationTime),
            label=_label(descriptor),
        )

    def _samples(self, state: Any, descriptor: Any) -> Samples | None:
        value = state.MetricValue
        if value is None or not value.Samples:
            return None
        code = _code(descriptor)
        if code is None:
            self.stats.skipped_no_code += 1
            return None
        period = descriptor.SamplePeriod
        return Samples(
            code=code,
            rate_hz=1.0 / period if period else 0.0,
            values=tuple(float(v) for v in value.Samples),
            unit=_unit(descriptor),
            valid=value.MetricQuality.Validity in VALID,
            time_us=_us(value.DeterminationTime),
            label=_label(descriptor),
        )

    def _alert(self, state: Any, descriptor: Any) -> DeviceAlert:
        priority = state.ActualPriority or descriptor.Priority
        coded = descriptor.Type
        text = _text(coded.ConceptDescription) if coded is not None else ""
        return DeviceAlert(
            key=str(descriptor.Handle),
            code=_code(descriptor),
            priority=PRIORITIES.get(priority, Priority.LOW),
            active=bool(state.Presence),
            text=text or _label(descriptor),
            time_us=_us(state.DeterminationTime),
            technical=descriptor.Kind == pm_types.AlertConditionKind.TECHNICAL,
        )

    @staticmethod
    def _patient_id(context_states: Any) -> str | None:
        for state in context_states:
            if not isinstance(state, PatientContextStateContainer):
                continue
            if state.ContextAssociation != pm_types.ContextAssociation.ASSOCIATED:
                continue
            for ident in state.Identification:
                if ident.Extension:
                    return str(ident.Extension)
                if ident.Root:
                    return str(ident.Root)
        return None

    def _report(self, received: Any, report_cls: Any, waveform: bool = False) -> None:
        if not self.active:
            return
        items: list[Reading | _End] = []
        try:
            report = report_cls.from_node(received.p_msg.msg_node)
            if waveform:
                states = report.State
            else:
                states = [s for part in report.ReportPart for s in part.values_list]
            for state in states:
                items.extend(self._convert_state(state, include_waveforms=True))
        except Exception:
            self.stats.report_errors += 1
            log.exception("sdc: a report from %s could not be converted", self.service.epr)
        if self._tap is not None:
            now = time.time()
            for item in items:
                if not isinstance(item, _End):
                    self._tap(item, now)
        self._put(self, items)

    def _on_waveform(self, received: Any) -> None:
        self._report(
            received, self.consumer.sdc_definitions.data_model.msg_types.WaveformStream, True
        )

    def _on_metric(self, received: Any) -> None:
        types = self.consumer.sdc_definitions.data_model.msg_types
        self._report(received, types.EpisodicMetricReport)

    def _on_alert(self, received: Any) -> None:
        self._report(
            received, self.consumer.sdc_definitions.data_model.msg_types.EpisodicAlertReport
        )

    def _on_context(self, received: Any) -> None:
        if not self.active:
            return
        types = self.consumer.sdc_definitions.data_model.msg_types
        try:
            report = types.EpisodicContextReport.from_node(received.p_msg.msg_node)
            states = [s for part in report.ReportPart for s in part.values_list]
        except Exception:
            self.stats.report_errors += 1
            log.exception("sdc: a context report from %s could not be read", self.service.epr)
            self._put(self, [])
            return
        patient = self._patient_id(states)
        if patient is not None and patient != self.patient_id:
            self.patient_id = patient
            self._put(self, [self.info()])
        else:
            self._put(self, [])

    def _on_subscription_end(self, data: Any) -> None:
        if self.active:
            self._put(self, [_End("subscription ended by the device")])

    def _on_connected(self, connected: bool) -> None:
        if self.active and not connected:
            self._put(self, [_End("subscription lost")])


@dataclass(frozen=True)
class _End:
    reason: str


class _Closed:
    pass


class SdcSource:
    """A DeviceSource reading an IEEE 11073 SDC provider (see the module docstring)."""

    def __init__(
        self,
        target: str,
        *,
        bed: str | None = None,
        interface: str = "127.0.0.1",
        stale_after: float = 2.0,
        search_s: float = 1.0,
        queue_size: int = 10_000,
        tap: Callable[[Reading, float], None] | None = None,
    ) -> None:
        """`tap(reading, time.time())` is called on sdc11073's thread for each reading of a
        report as it is converted: the consumer-callback moment, for benchmarks."""
        target, _, query = target.partition("?")
        if query:
            beds = parse_qs(query).get("bed")
            if beds:
                bed = beds[0]
        self.epr = None if target == "discover" else _norm_epr(target)
        if self.epr == "":
            raise ValueError("SdcSource: target must be 'discover' or an endpoint reference")
        self.bed = bed
        self.interface = interface
        self.stale_after = stale_after
        self._tap = tap
        self.search_s = search_s
        self.stats = SdcStats()
        self._queue: asyncio.Queue[Reading | _End | _Closed] = asyncio.Queue(queue_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wsd: Any = None
        self._session: _Session | None = None
        self._current: _Session | None = None  # the session whose reports are taken
        self._overflowed = 0
        self._last_report: float | None = None
        self._closed = False

    # --- the thread bridge ---

    def _put_threadsafe(self, session: _Session, items: list[Reading | _End]) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._put, session, items)

    def _put(self, session: _Session, items: list[Reading | _End]) -> None:
        if session is not self._current:
            self.stats.late_reports += 1  # from a session already given up: not this device's now
            return
        self._last_report = time.monotonic()
        for item in items:
            try:
                self._queue.put_nowait(item)
            except asyncio.QueueFull:
                self._overflowed += 1
                self.stats.overflows += 1

    # --- discovery ---

    def _matches(self, service: Any) -> bool:
        if self.epr is not None and _norm_epr(str(service.epr)) != self.epr:
            return False
        return self.bed is None or bed_of(service) == self.bed

    def _search(self) -> Any | None:
        if self._closed:
            return None
        if self._wsd is None:
            self._wsd = WSDiscovery(self.interface)
            self._wsd.start()
        # forget what earlier probes found: a restarted provider serves on a new port
        self._wsd.clear_remote_services()
        found = self._wsd.search_services(
            types=SdcV1Definitions.MedicalDeviceTypesFilter,
            timeout=self.search_s,
            repeat_probe_interval=max(1, round(self.search_s)),
        )
        matching = sorted((s for s in found if self._matches(s)), key=lambda s: str(s.epr))
        return matching[0] if matching else None

    async def _connect(self) -> tuple[_Session, DeviceInfo, list[Reading]] | None:
        while not self._closed:
            try:
                service = await asyncio.to_thread(self._search)
            except Exception as exc:
                if self._closed:
                    return None
                self.stats.connect_errors += 1
                log.warning("sdc: WS-Discovery search failed: %s", exc)
                await asyncio.sleep(0.5)
                continue
            if service is None or self._closed:
                continue
            session = _Session(service, self._put_threadsafe, self._tap)
            session.stats = self.stats
            self._current = session
            try:
                info, initial = await asyncio.to_thread(session.start)
            except Exception as exc:
                self.stats.connect_errors += 1
                log.warning("sdc: connecting to %s failed: %s", service.epr, exc)
                await asyncio.to_thread(session.stop, False)
                await asyncio.sleep(0.5)
                continue
            if self._closed:
                await asyncio.to_thread(session.stop, True)
                return None
            return session, info, initial
        return None

    # --- the source ---

    async def batches(self) -> AsyncGenerator[list[Reading], None]:
        """What the device reported, one list per wake-up: every reading that came since the
        last one (usually one report; several when they came in the same loop turn)."""
        self._loop = asyncio.get_running_loop()
        queue = self._queue
        try:
            while not self._closed:
                connected = await self._connect()
                if connected is None:
                    return
                session, info, initial = connected
                self._session = session
                self.stats.sessions += 1
                self._overflowed = 0
                self._last_report = time.monotonic()
                yield [info, *initial]
                end: _End | None = None
                while end is None:
                    item = await self._next()
                    if item is None:
                        return  # closed: _shutdown unsubscribes
                    if isinstance(item, _End):
                        end = item
                        break
                    batch = [item]
                    while not queue.empty() and not self._overflowed:
                        more = queue.get_nowait()
                        if isinstance(more, _Closed):
                            yield batch
                            return
                        if isinstance(more, _End):
                            end = more
                            break
                        batch.append(more)
                    yield batch
                self._session = self._current = None
                session.active = False
                self.stats.lost += 1
                self._drain()
                yield [DeviceLost(end.reason)]
                # the provider may be gone: no unsubscribe, just stop listening
                await asyncio.to_thread(session.stop, False)
        finally:
            await self._shutdown()

    def readings(self) -> AsyncIterator[Reading]:
        return flatten(self.batches())

    async def _next(self) -> Reading | _End | None:
        """The next reading, an _End when the device is lost, None once closed."""
        while True:
            if self._overflowed:
                return _End(f"overflow: {self._overflowed} readings dropped")
            if not self._queue.empty():  # what arrived counts, even if the loop was late
                item = self._queue.get_nowait()
                return None if isinstance(item, _Closed) else item
            last = self._last_report if self._last_report is not None else time.monotonic()
            remaining = self.stale_after - (time.monotonic() - last)
            if remaining <= 0:
                return _End(f"no report from the device for {self.stale_after:g} s")
            try:
                async with asyncio.timeout(min(remaining, 0.5)):
                    item = await self._queue.get()
            except TimeoutError:
                continue
            return None if isinstance(item, _Closed) else item

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    async def _shutdown(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await asyncio.to_thread(session.stop, True)
        wsd, self._wsd = self._wsd, None
        if wsd is not None:
            await asyncio.to_thread(wsd.stop)

    async def aclose(self) -> None:
        """Unsubscribe and stop: a pending `readings()` returns."""
        self._closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_Closed())
        await self._shutdown()
