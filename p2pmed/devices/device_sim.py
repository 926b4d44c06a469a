"""A simulated bedside patient monitor speaking IEEE 11073 SDC (an sdc11073 provider).

ECG lead II at 500 Hz and pleth at 125 Hz as real-time sample arrays, HR, SpO2, pulse rate,
perfusion index, NIBP, temperature and respiration rate as numerics, a patient and a location
context, and alert conditions it raises as its values change. The values follow a script that
repeats every --cycle seconds and is deterministic for a given --seed:

  0.33-0.50 of the cycle  SpO2 falls to about 86 %: "SpO2 low" (high priority) present
  0.66-0.83 of the cycle  HR rises to about 132/min: "HR high" (medium priority) present
  0.90-0.95 of the cycle  ECG lead off: ECG samples invalid, technical "ECG lead off" (low)

`--invalid-code CODE` marks one numeric metric's validity Inv for the whole run.

Run: python -m p2pmed.devices.device_sim --bed bed-1 --patient P-1 --json
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import sys
import threading
import time
import uuid
from decimal import Decimal
from importlib.resources import files
from typing import Any

from sdc11073 import wsdiscovery
from sdc11073.definitions_sdc import SdcV1Definitions
from sdc11073.location import SdcLocation
from sdc11073.mdib import ProviderMdib
from sdc11073.provider import SdcProvider
from sdc11073.xml_types import pm_types
from sdc11073.xml_types.dpws_types import ThisDeviceType, ThisModelType

MDIB_RESOURCE = "data/monitor_mdib.xml"
ECG_HZ = 500
PLETH_HZ = 125
WAVE_TICK_S = 0.05  # one waveform report per signal every 50 ms
NUMERIC_EVERY_S = 1.0
NIBP_EVERY_S = 5.0

# numeric metric handles in the MDIB, by MDC code
NUMERIC_HANDLES = {
    147842: "hr",
    150456: "spo2",
    149530: "pr",
    150488: "pi",
    150301: "nibp.sys",
    150302: "nibp.dia",
    150303: "nibp.mean",
    150344: "temp",
    151562: "rr",
}
NIBP_CODES = (150301, 150302, 150303)


def load_mdib() -> ProviderMdib:
    xml = files("p2pmed.devices").joinpath(MDIB_RESOURCE).read_bytes()
    return ProviderMdib.from_string(xml, SdcV1Definitions)


class Script:
    """The monitor's values as a function of time since start; deterministic for a seed."""

    def __init__(self, seed: int, cycle_s: float) -> None:
        rng = random.Random(seed)
        self.cycle_s = cycle_s
        self.hr_base = 68 + rng.randint(0, 10)
        self.spo2_base = 96 + rng.randint(0, 2)
        self.rr_base = 14 + rng.randint(0, 4)
        self.temp_base = 36.6 + rng.randint(0, 4) / 10
        self.sys_base = 112 + rng.randint(0, 16)
        self._rng = rng

    def phase(self, t: float) -> float:
        return (t % self.cycle_s) / self.cycle_s

    def desaturating(self, t: float) -> bool:
        return 0.33 <= self.phase(t) < 0.5

    def tachycardic(self, t: float) -> bool:
        return 0.66 <= self.phase(t) < 0.83

    def lead_off(self, t: float) -> bool:
        return 0.9 <= self.phase(t) < 0.95

    def hr(self, t: float) -> float:
        return 132.0 if self.tachycardic(t) else float(self.hr_base)

    def numerics(self, t: float) -> dict[int, float]:
        jitter = self._rng.uniform(-1, 1)
        hr = self.hr(t) + round(jitter)
        spo2 = 86.0 if self.desaturating(t) else float(self.spo2_base)
        sys_ = self.sys_base + round(jitter * 2)
        dia = round(sys_ * 0.65)
        return {
            147842: hr,
            150456: spo2 + (0 if jitter < 0.5 else 1),
            149530: hr + (1 if jitter > 0 else 0),
            150488: round(2.5 + jitter / 2, 1),
            150301: float(sys_),
            150302: float(dia),
            150303: float(round((sys_ + 2 * dia) / 3)),
            150344: round(self.temp_base + jitter / 20, 1),
            151562: float(self.rr_base),
        }

    def ecg(self, t: float) -> float:
        """Lead II in mV: P, QRS and T waves as Gaussians on the beat phase."""
        beat = 60.0 / self.hr(t)
        x = (t % beat) / beat
        wave = (
            0.12 * math.exp(-(((x - 0.18) / 0.025) ** 2))
            - 0.1 * math.exp(-(((x - 0.285) / 0.008) ** 2))
            + 1.1 * math.exp(-(((x - 0.3) / 0.01) ** 2))
            - 0.2 * math.exp(-(((x - 0.315) / 0.01) ** 2))
            + 0.3 * math.exp(-(((x - 0.55) / 0.04) ** 2))
        )
        return round(wave, 3)

    def pleth(self, t: float) -> float:
        beat = 60.0 / self.hr(t)
        x = (t % beat) / beat
        wave = 0.5 + 0.4 * math.sin(2 * math.pi * x) + 0.1 * math.sin(4 * math.pi * x)
        return round(wave, 3)


class Monitor:
    """Drives the provider's MDIB from the script."""

    def __init__(
        self, provider: SdcProvider, script: Script, invalid_codes: set[int], start: float
    ) -> None:
        self.provider = provider
        self.script = script
        self.invalid_codes = invalid_codes
        self.start_wall = time.time()
        self.start = start
        self.sent = {"ecg.ii": 0, "pleth": 0}
        self._last_numeric: float | None = None
        self._last_nibp: float | None = None
        self._alerts: dict[str, bool] = {}

    def set_patient(self, patient_id: str) -> None:
        mdib = self.provider.mdib
        with mdib.context_state_transaction() as mgr:
            mgr.disassociate_all("pc.mds0")
            state: Any = mgr.mk_context_state("pc.mds0", set_associated=True)
            state.Identification = [
                pm_types.InstanceIdentifier(root="urn:p2pmed:patient", extension_string=patient_id)
            ]

    def tick(self, now: float) -> None:
        t = now - self.start
        self._waveforms(t)
        if self._last_numeric is None or now - self._last_numeric >= NUMERIC_EVERY_S:
            nibp = self._last_nibp is None or now - self._last_nibp >= NIBP_EVERY_S
            self._numerics(t, nibp)
            self._last_numeric = now
            if nibp:
                self._last_nibp = now
        self._alert_states(t)

    def _validity(self, valid: bool) -> pm_types.MeasurementValidity:
        return pm_types.MeasurementValidity.VALID if valid else pm_types.MeasurementValidity.INVALID

    def _waveforms(self, t: float) -> None:
        signals = (("ecg.ii", ECG_HZ, self.script.ecg), ("pleth", PLETH_HZ, self.script.pleth))
        with self.provider.mdib.rt_sample_state_transaction() as mgr:
            for handle, rate, fn in signals:
                due = math.floor(t * rate)
                first = self.sent[handle]
                if due <= first:
                    continue
                state: Any = mgr.get_state(handle)
                if state.MetricValue is None:
                    state.mk_metric_value()
                value = state.MetricValue
                value.Samples = [Decimal(str(fn(n / rate))) for n in range(first, due)]
                value.DeterminationTime = self.start_wall + first / rate
                valid = not (handle == "ecg.ii" and self.script.lead_off(t))
                value.MetricQuality.Validity = self._validity(valid)
                self.sent[handle] = due

    def _numerics(self, t: float, nibp: bool) -> None:
        values = self.script.numerics(t)
        with self.provider.mdib.metric_state_transaction(set_determination_time=False) as mgr:
            for code, handle in NUMERIC_HANDLES.items():
                if code in NIBP_CODES and not nibp:
                    continue
                state: Any = mgr.get_state(handle)
                if state.MetricValue is None:
                    state.mk_metric_value()
                state.MetricValue.Value = Decimal(str(values[code]))
                state.MetricValue.DeterminationTime = time.time()
                state.MetricValue.MetricQuality.Validity = self._validity(
                    code not in self.invalid_codes
                )

    def _alert_states(self, t: float) -> None:
        wanted = {
            "ac.spo2.low": self.script.desaturating(t) and 150456 not in self.invalid_codes,
            "ac.hr.high": self.script.tachycardic(t) and 147842 not in self.invalid_codes,
            "ac.ecg.leadoff": self.script.lead_off(t),
        }
        changed = {h: p for h, p in wanted.items() if self._alerts.get(h) != p}
        if not changed:
            return
        with self.provider.mdib.alert_state_transaction() as mgr:
            for handle, present in changed.items():
                state: Any = mgr.get_state(handle)
                state.Presence = present
                state.DeterminationTime = time.time()
                signal_state: Any = mgr.get_state(handle.replace("ac.", "as.", 1))
                signal_state.Presence = (
                    pm_types.AlertSignalPresence.ON if present else pm_types.AlertSignalPresence.OFF
                )
        self._alerts.update(changed)


def parse_epr(text: str | None) -> uuid.UUID:
    if text is None:
        return uuid.uuid4()
    try:
        return uuid.UUID(text.removeprefix("urn:uuid:"))
    except ValueError:
        raise SystemExit(
            f"device-sim: --epr must be a UUID or urn:uuid:UUID, got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="p2pmed device-sim", description="Simulated SDC (IEEE 11073) patient monitor."
    )
    p.add_argument("--bed", default="bed-1", help="location context bed (discovery scope)")
    p.add_argument("--patient", default="SIM-PATIENT-1", help="patient context identification")
    p.add_argument("--seed", type=int, default=1, help="seed of the value script")
    p.add_argument("--epr", default=None, help="fixed endpoint reference (UUID); random if unset")
    p.add_argument("--interface", default="127.0.0.1", help="IPv4 address to serve and discover on")
    p.add_argument("--cycle", type=float, default=60.0, help="seconds of one script cycle")
    p.add_argument(
        "--invalid-code",
        type=int,
        action="append",
        default=[],
        metavar="MDC",
        help="mark this numeric metric's validity Inv (repeatable)",
    )
    p.add_argument(
        "--switch-patient",
        default=None,
        metavar="ID@SECONDS",
        help="associate another patient after this many seconds (patient-binding tests)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON line once serving")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    return p


def make_provider(args: argparse.Namespace, epr: uuid.UUID) -> tuple[SdcProvider, Any]:
    wsd: Any = wsdiscovery.WSDiscovery(args.interface)
    wsd.start()
    model = ThisModelType(
        manufacturer="p2pmed",
        manufacturer_url="https://example.invalid/p2pmed",
        model_name="p2pmed simulated monitor",
        model_number="SIM-1",
    )
    serial = f"SIM-{epr.hex[:8]}"
    device = ThisDeviceType(
        friendly_name="p2pmed device-sim", firmware_version="1", serial_number=serial
    )
    provider = SdcProvider(
        ws_discovery=wsd,
        this_model=model,
        this_device=device,
        device_mdib_container=load_mdib(),
        epr=epr,
    )
    provider.start_all(start_rtsample_loop=False)
    return provider, wsd


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for code in args.invalid_code:
        if code not in NUMERIC_HANDLES:
            raise SystemExit(f"device-sim: --invalid-code {code} is not a numeric metric here")
    epr = parse_epr(args.epr)
    switch: tuple[str, float] | None = None
    if args.switch_patient is not None:
        new_id, _, after = args.switch_patient.rpartition("@")
        try:
            switch = (new_id, float(after))
        except ValueError:
            raise SystemExit("device-sim: --switch-patient wants ID@SECONDS") from None
        if not new_id:
            raise SystemExit("device-sim: --switch-patient wants ID@SECONDS")
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())

    provider, wsd = make_provider(args, epr)
    try:
        start = time.monotonic()
        monitor = Monitor(provider, Script(args.seed, args.cycle), set(args.invalid_code), start)
        monitor.set_patient(args.patient)
        monitor.tick(start)
        provider.set_location(SdcLocation(fac="p2pmed", poc="sim", bed=args.bed))
        if args.json:
            line = {
                "epr": provider.epr_urn,
                "address": provider.get_xaddrs()[0],
                "bed": args.bed,
                "patient": args.patient,
            }
            print(json.dumps(line), flush=True)
        deadline = None if args.seconds is None else start + args.seconds
        next_tick = start
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            monitor.tick(now)
            if switch is not None and now - start >= switch[1]:
                monitor.set_patient(switch[0])
                switch = None
            next_tick = max(next_tick + WAVE_TICK_S, now)
            stop.wait(max(0.0, next_tick - time.monotonic()))
    finally:
        provider.stop_all()
        wsd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
