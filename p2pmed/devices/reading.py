"""What a bedside device reports, independent of the protocol it spoke (SDC or HL7 v2).

A device source is an async iterator of these records (`readings()`, or `batches()` of
them). A source that answers the device (HL7's ACK) answers for a batch only once its
consumer asks for the next one: the consumer makes each batch durable before it does.
Codes are IEEE 11073-10101 MDC codes (the numeric code; e.g. 147842
MDC_ECG_HEART_RATE), times are microseconds since the Unix epoch as the device stamped them
(None if it gave none).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class Priority(Enum):
    """IEC 60601-1-8 alarm priority."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


@dataclass(frozen=True)
class Metric:
    """One numeric observation. valid is False for any validity but Vld/Vldated (SDC) or an
    OBX-11 result status other than F/C/R (HL7): such a value is shown flagged, never used
    for alarms."""

    code: int
    value: float
    unit: str  # as the device gave it (MDC unit reference id or UCUM)
    valid: bool
    time_us: int | None
    label: str = ""  # the device's reference id, e.g. MDC_PULS_OXIM_SAT_O2


@dataclass(frozen=True)
class Samples:
    """A run of waveform samples of one signal, in the device's unit."""

    code: int
    rate_hz: float
    values: tuple[float, ...]
    unit: str
    valid: bool
    time_us: int | None  # time of the first sample
    label: str = ""


@dataclass(frozen=True)
class DeviceAlert:
    """A device's own alert condition, raised (active) or ended."""

    key: str  # stable id of the condition on this device (SDC handle, HL7 alert id)
    code: int | None
    priority: Priority
    active: bool
    text: str
    time_us: int | None
    technical: bool = False


@dataclass(frozen=True)
class DeviceInfo:
    """Who the device is and which patient it says it is attached to."""

    protocol: str  # "sdc" | "hl7"
    device_id: str  # SDC endpoint reference, HL7 MSH-3 / OBX-18 equipment id
    model: str = ""
    serial: str = ""
    manufacturer: str = ""
    patient_id: str | None = None  # SDC PatientContext identification, HL7 PID-3


@dataclass(frozen=True)
class DeviceLost:
    """The device went away: no report within its expected period, or the subscription or
    connection ended. The source goes on trying to get it back on its own."""

    reason: str


Reading = Metric | Samples | DeviceAlert | DeviceInfo | DeviceLost


class DeviceSource(Protocol):
    def readings(self) -> AsyncIterator[Reading]:
        """Everything the device reports, for as long as the source runs (it reconnects on
        its own after DeviceLost)."""
        ...

    def batches(self) -> AsyncGenerator[list[Reading], None]:
        """The same, as lists of what arrived together (one message or report, or all that
        came in one event-loop turn): the patient node maps, commits and sends each list at
        once, with no queue hop in between. Asking for the next list says the previous one
        is durable (an HL7 source ACKs its messages then)."""
        ...

    async def aclose(self) -> None: ...


async def flatten(batches: AsyncGenerator[list[Reading], None]) -> AsyncIterator[Reading]:
    """`readings()` of a source: its `batches()` one reading at a time (the next batch is
    asked for once every reading of this one was taken)."""
    try:
        async for batch in batches:
            for r in batch:
                yield r
    finally:
        await batches.aclose()
