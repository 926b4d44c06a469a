"""Typed node events of a bedside device source (--source hl7-mllp: / sdc:), in the style of
p2pmed/node/events.py: printed with --json as {"event": NAME, "ts": ..., fields in order}."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from p2pmed.node.events import NodeEvent


@dataclass(frozen=True, slots=True)
class DeviceListening(NodeEvent):
    """The HL7 MLLP listener is bound (port 0 resolved to the one picked)."""

    NAME: ClassVar[str] = "device-listening"
    protocol: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class DeviceCounts(NodeEvent):
    """What the device source and the mapping could not use as reported, by reason (totals
    since start); published when a total changes."""

    NAME: ClassVar[str] = "device-counts"
    source: dict[str, int]
    mapping: dict[str, int]


@dataclass(frozen=True, slots=True)
class DeviceSourceFailed(NodeEvent):
    """The device source stopped with an error (the node keeps running; it is restarted)."""

    NAME: ClassVar[str] = "device-source-failed"
    reason: str
