"""Node events: one JSON object per line on stdout with --json, and in-process listeners."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

log = logging.getLogger("p2pmed.node")

Listener = Callable[[dict[str, Any]], None]


class Events:
    def __init__(self, *, json_out: bool, stream: TextIO | None = None) -> None:
        self.json_out = json_out
        self.stream = stream or sys.stdout
        self.listeners: list[Listener] = []

    def emit(self, event: str, **fields: Any) -> None:
        record: dict[str, Any] = {"event": event, "ts": round(time.time(), 6), **fields}
        if self.json_out:
            self.stream.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
            self.stream.flush()
        for listener in list(self.listeners):
            listener(record)
        if event in ("error", "technical-alarm", "fingerprint-mismatch"):
            log.warning("%s", record)
        else:
            log.debug("%s", record)
