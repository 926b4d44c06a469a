"""Prometheus metrics, one CollectorRegistry per app so several servers can run in one process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


class _Live(Collector):
    """Gauges and hot-path counters read from the hub at scrape time (no cost per frame)."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        s = self._snapshot()
        yield GaugeMetricFamily("p2pmed_sessions", "Open sessions", value=s["sessions"])
        g = GaugeMetricFamily("p2pmed_endpoints", "Endpoints by state", labels=["state"])
        for state, v in s["endpoints"].items():
            g.add_metric([state], v)
        yield g
        yield GaugeMetricFamily(
            "p2pmed_audit_head_seq",
            "seq of the newest audit entry in the signed head (audit.head); record it off the"
            " machine to detect a log cut back together with its head",
            value=s["audit_head_seq"],
        )
        yield GaugeMetricFamily(
            "p2pmed_audit_held_entries",
            "Audit entries held in memory because the log file cannot be written (disk full);"
            " written in order once it can be. Above 0: free space on the server's data dir",
            value=s["audit_held"],
        )
        yield GaugeMetricFamily(
            "p2pmed_unjoined_connections",
            "Open connections that have not joined (HTTP, handshakes, WebSockets before join)",
            value=s["unjoined"],
        )
        yield CounterMetricFamily(
            "p2pmed_relay_frames", "Relay frames forwarded", value=s["relay_frames"]
        )
        yield CounterMetricFamily(
            "p2pmed_relay_bytes", "Relay frame bytes forwarded", value=s["relay_bytes"]
        )
        yield GaugeMetricFamily(
            "p2pmed_relay_queue_frames", "Frames queued for all endpoints", value=s["queued"]
        )
        yield GaugeMetricFamily(
            "p2pmed_relay_queue_max_frames",
            "Deepest relay queue of one endpoint",
            value=s["queued_max"],
        )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rejected_joins = Counter(
            "p2pmed_rejected_joins", "Refused joins and upgrades by reason", ["reason"], registry=r
        )
        self.joins = Counter("p2pmed_joins", "Accepted joins", ["role"], registry=r)
        self.messages = Counter(
            "p2pmed_signaling_messages", "Signaling messages received by type", ["type"], registry=r
        )
        self.errors = Counter(
            "p2pmed_signaling_errors", "Error replies sent by code", ["code"], registry=r
        )
        self.limit_violations = Counter(
            "p2pmed_limit_violations", "Limit violations by limit", ["limit"], registry=r
        )
        self.closes = Counter(
            "p2pmed_ws_closes", "WebSocket closes initiated by the server", ["code"], registry=r
        )
        self.backpressure = Counter(
            "p2pmed_relay_backpressure", "Times a relay sender was paused", registry=r
        )
        self.relay_rejected = Counter(
            "p2pmed_relay_rejected", "Relay frames refused by reason", ["reason"], registry=r
        )
        self.idle_logoffs = Counter("p2pmed_idle_logoffs", "Idle endpoints logged off", registry=r)
        self.turn_credentials = Counter(
            "p2pmed_turn_credentials", "TURN credentials issued", registry=r
        )
        self.signaling_latency = Histogram(
            "p2pmed_signaling_latency_seconds",
            "Time to forward one signaling message",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.join_latency = Histogram(
            "p2pmed_join_latency_seconds",
            "Time to process a join",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.relay_latency = Histogram(
            "p2pmed_relay_latency_seconds",
            "Time relay frames spend in the server, receipt to socket (per write batch)",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )

        self.gc_pause = Histogram(
            "p2pmed_gc_pause_seconds",
            "The interpreter's garbage collections (the whole process stops), by generation",
            ["generation"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )

    def attach(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.registry.register(_Live(snapshot))
