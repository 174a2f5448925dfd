"""Prometheus metrics of the HTTP service (`GET /metrics`).

Each app has its own registry (tests build many apps in one process). With several
workers (`almanac serve --workers N`), `PROMETHEUS_MULTIPROC_DIR` is set before they
start, prometheus-client then keeps values in shared files, and `/metrics` aggregates
every worker's. Label children are cached: `.labels()` takes a lock and a dict lookup
per call, a measurable share of a 200 µs request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2)
ENTITY_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "almanac_http_requests",
            "HTTP requests answered.",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "almanac_http_request_duration_seconds",
            "Time to answer a request, by endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "almanac_http_errors",
            "Requests answered with an error, by error type.",
            ["endpoint", "error"],
            registry=r,
        )
        self.store_latency = Histogram(
            "almanac_online_store_read_duration_seconds",
            "Online store reads (one round trip each).",
            ["backend"],
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.entities = Histogram(
            "almanac_entities_per_request",
            "Entity rows per request.",
            ["endpoint"],
            buckets=ENTITY_BUCKETS,
            registry=r,
        )
        self.registry_version = Gauge(
            "almanac_registry_version",
            "Version of the catalog being served.",
            registry=r,
            multiprocess_mode="max",
        )
        self.registry_refresh_errors = Counter(
            "almanac_registry_refresh_errors", "Failed background registry refreshes.", registry=r
        )
        self.expectation_checks = Counter(
            "almanac_expectation_checks",
            "Expectations checked on a batch (push, write, materialize, validate), by result.",
            ["view", "expectation", "result"],
            registry=r,
        )
        self.expectation_failed_rows = Counter(
            "almanac_expectation_failed_rows",
            "Rows that broke an expectation (for row_count: the batch's).",
            ["view", "expectation"],
            registry=r,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._store_children: dict[str, Histogram] = {}
        self._entity_children: dict[str, Histogram] = {}
        self._streams: StreamStatusCollector | None = None
        self._runs: RunSummaryCollector | None = None

    def observe_expectation(self, result: dict[str, Any]) -> None:
        """Count one recorded expectation result (`almanac.quality.results`)."""
        view, label = result["view"], result["expectation"]
        self.expectation_checks.labels(
            view, label, "passed" if result["passed"] else "failed"
        ).inc()
        if not result["passed"]:
            self.expectation_failed_rows.labels(view, label).inc(result["observed"])

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(endpoint, method, str(status)),
                self.latency.labels(endpoint),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_error(self, endpoint: str, error: str) -> None:
        self.errors.labels(endpoint, error).inc()

    def observe_store(self, backend: str, seconds: float) -> None:
        child = self._store_children.get(backend)
        if child is None:
            child = self._store_children[backend] = self.store_latency.labels(backend)
        child.observe(seconds)

    def observe_entities(self, endpoint: str, count: int) -> None:
        child = self._entity_children.get(endpoint)
        if child is None:
            child = self._entity_children[endpoint] = self.entities.labels(endpoint)
        child.observe(count)

    def watch_streams(self, read: Callable[[], dict[str, tuple[datetime, dict[str, Any]]]]) -> None:
        """Show the stream workers' figures as they last published them."""
        self._streams = StreamStatusCollector(read)
        self.registry.register(self._streams)

    def watch_runs(self, read: Callable[[], list[tuple[str, str, int, datetime]]]) -> None:
        """Show the materialization history's counts and last success per view."""
        self._runs = RunSummaryCollector(read)
        self.registry.register(self._runs)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            for collector in (self._streams, self._runs):  # read at scrape time
                if collector is not None:
                    registry.register(collector)
            return generate_latest(registry)
        return generate_latest(self.registry)


class StreamStatusCollector:
    """The `almanac stream` workers' figures, read from the registry at scrape time: each
    worker publishes its status every few seconds (`almanac.registry.state`), wherever it
    runs, so the server shows every worker of the project. A worker that stopped
    publishing shows its status's age growing (alert on it)."""

    KEEP = 24 * 3600.0  # statuses older than this (a worker long gone) are not shown

    def __init__(self, read: Callable[[], dict[str, tuple[datetime, dict[str, Any]]]]) -> None:
        self.read = read

    def describe(self) -> list[Any]:
        return []  # collected at scrape time only (never at registration)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["source", "consumer"]
        families = {
            "lag": GaugeMetricFamily(
                "almanac_stream_lag_events", "Messages the worker has not read yet.", labels=labels
            ),
            "lag_seconds": GaugeMetricFamily(
                "almanac_stream_lag_seconds",
                "From the newest message read to now, while messages are left to read (0 when caught up).",
                labels=labels,
            ),
            "latency_seconds": GaugeMetricFamily(
                "almanac_stream_last_latency_seconds",
                "The last batch's time from the broker's append to servable online.",
                labels=labels,
            ),
            "rate": GaugeMetricFamily(
                "almanac_stream_events_per_second",
                "Events written per second since the worker started.",
                labels=labels,
            ),
            "age": GaugeMetricFamily(
                "almanac_stream_status_age_seconds",
                "Seconds since the worker last published its status.",
                labels=labels,
            ),
        }
        events = CounterMetricFamily(
            "almanac_stream_events",
            "Events read by the worker, by outcome (written, replayed, dead: dead letters).",
            labels=[*labels, "outcome"],
        )
        try:
            found = self.read()
        except Exception:  # the registry unreachable: no stream figures in this scrape
            found = {}
        now = datetime.now(UTC)
        for key, (at, status) in sorted(found.items()):
            age = (now - at).total_seconds()
            if age > self.KEEP:
                continue
            source, _, consumer = key.partition("/")
            values = [source, consumer]
            families["age"].add_metric(values, age)
            for name in ("lag", "lag_seconds", "latency_seconds"):
                if status.get(name) is not None:
                    families[name].add_metric(values, float(status[name]))
            uptime = status.get("uptime_seconds") or 0
            if uptime > 0:
                families["rate"].add_metric(values, status.get("written", 0) / uptime)
            for outcome in ("written", "replayed", "dead"):
                events.add_metric([*values, outcome], float(status.get(outcome, 0)))
        yield from families.values()
        yield events


class RunSummaryCollector:
    """Materialization runs per view and outcome, and each view's last success, from the
    run history (`almanac.materialize.history`) at scrape time: manual and scheduled
    runs, from every process of the project."""

    def __init__(self, read: Callable[[], list[tuple[str, str, int, datetime]]]) -> None:
        self.read = read

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        runs = CounterMetricFamily(
            "almanac_materialization_runs", "Materialization runs recorded, by view and outcome.",
            labels=["view", "outcome"],
        )  # fmt: skip
        last = GaugeMetricFamily(
            "almanac_materialization_last_success_timestamp_seconds",
            "When the view's last successful materialization started (Unix time).",
            labels=["view"],
        )  # fmt: skip
        try:
            summary = self.read()
        except Exception:  # the registry unreachable: no run figures in this scrape
            summary = []
        for view, outcome, count, latest in sorted(summary):
            runs.add_metric([view, outcome], float(count))
            if outcome == "success":
                last.add_metric([view], latest.timestamp())
        yield runs
        yield last
