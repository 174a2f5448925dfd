"""`almanac stream`: the ingestion worker for stream-fed views (see
`almanac.ingest.stream`), one thread per stream source, with a live table of rates and
lag, and a thread that compacts the offline logs the workers append to (one small file
per batch). SIGTERM or Ctrl-C finishes each batch in hand, commits it, and stops."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.live import Live
from rich.table import Table

from almanac.cli.app import app, console, duration, open_store

if TYPE_CHECKING:  # the worker's modules import pandas and pyarrow: not for `--help`
    from almanac.ingest.stream import BatchResult, StreamWorker
    from almanac.store import FeatureStore

log = logging.getLogger("almanac.stream")


@app.command()
def stream(
    views: Annotated[
        list[str] | None,
        typer.Option("--views", "-v", help="Views whose streams to read (default: all)."),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option("--group", help="Consumer group (default: almanac-<project>)."),
    ] = None,
    consumer: Annotated[
        str | None,
        typer.Option("--consumer", help="This worker's name in the group (default: host)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Messages per batch at most.")
    ] = 10_000,
    batch_seconds: Annotated[
        float, typer.Option("--batch-seconds", min=0.01, help="Wait at most this long for a batch.")
    ] = 0.5,
    max_batches: Annotated[
        int | None, typer.Option("--max-batches", help="Stop after this many batches per source.")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No live table; a line per minute.")
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", help="Serve Prometheus metrics on this port (/metrics)."),
    ] = None,
    compact_every: Annotated[
        str,
        typer.Option(
            "--compact-every", help="Compact the streams' offline logs this often (0s: never)."
        ),
    ] = "10m",
) -> None:
    """Read the stream sources of stream-fed views into both stores, each event exactly
    once; several workers of one group share the partitions."""
    from almanac.ingest.stream import StreamWorker, open_reader, stream_sources

    store = open_store()
    names = stream_sources(store, views)
    if not names:
        console.print("no view reads a stream source")
        raise typer.Exit(0)
    group = group or f"almanac-{store.project}"
    consumer = consumer or socket.gethostname()
    workers = [
        StreamWorker(
            store, name, open_reader(store, name, group, consumer), batch_size, batch_seconds
        )
        for name in names
    ]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    latest: dict[str, BatchResult] = {}
    metrics = StreamMetrics(metrics_port) if metrics_port is not None else None

    def seen(source: str, batch: BatchResult) -> None:
        latest[source] = batch
        if metrics is not None:
            metrics.observe(source, batch)

    threads = [
        threading.Thread(
            target=worker.run, args=(stop,),
            kwargs={"on_batch": lambda b, n=worker.name: seen(n, b), "max_batches": max_batches},
            name=f"almanac-stream-{worker.name}", daemon=True,
        )
        for worker in workers
    ]  # fmt: skip
    every = duration(compact_every, "--compact-every").total_seconds()
    if every > 0:  # stops with the workers (`stop`); not waited for
        threading.Thread(
            target=_compact_periodically, args=(store, names, every, stop),
            name="almanac-stream-compaction", daemon=True,
        ).start()  # fmt: skip
    threading.Thread(
        target=_publish_periodically, args=(store, workers, consumer, stop),
        name="almanac-stream-status", daemon=True,
    ).start()  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        if quiet:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=60)
                console.print(_table(workers, latest), highlight=False)
        else:
            with Live(_table(workers, latest), console=console, refresh_per_second=2) as live:
                while any(t.is_alive() for t in threads):
                    time.sleep(0.5)
                    live.update(_table(workers, latest))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        final = _table(workers, latest)
        _publish(store, workers, consumer)
        for worker in workers:
            worker.reader.close()
        store.close()
    console.print(final)


STATUS_EVERY = 5.0  # seconds between two status publications


def _publish(store: FeatureStore, workers: list[StreamWorker], consumer: str) -> None:
    """Each worker's status, for the feature server's `/metrics` (`almanac.registry.state`)."""
    try:
        for worker in workers:
            store.registry.state.put_status("stream", f"{worker.name}/{consumer}", worker.status())
    except Exception:  # the registry unreachable a moment: the next publication catches up
        log.warning("could not publish the stream workers' status", exc_info=True)


def _publish_periodically(store: FeatureStore, workers: list[StreamWorker], consumer: str, stop: threading.Event) -> None:  # fmt: skip
    while not stop.wait(STATUS_EVERY):
        _publish(store, workers, consumer)


def _compact_periodically(store: FeatureStore, sources: list[str], every: float, stop: threading.Event) -> None:  # fmt: skip
    """Merge the small files the workers append (one per batch), every `every` seconds."""
    while not stop.wait(every):
        try:
            for done in store.compact(sources):
                if done.merged_files:
                    log.info("compacted %s: %d files, %d rows", done.source, done.merged_files, done.rows)  # fmt: skip
        except Exception:  # a failed compaction changes nothing; the next one tries again
            log.exception("compaction of %s failed", ", ".join(sources))


def _table(workers: list[StreamWorker], latest: dict[str, BatchResult]) -> Table:
    table = Table(title="almanac stream")
    for column in ("source", "events", "written", "replayed", "dead letters", "events/s", "latency", "lag"):  # fmt: skip
        table.add_column(column, justify="right" if column != "source" else "left")
    for worker in workers:
        t = worker.totals
        elapsed = max(time.monotonic() - t.started, 1e-9)
        last = latest.get(worker.name)
        latency = "" if last is None or last.latency_seconds is None else f"{last.latency_seconds * 1000:,.0f} ms"  # fmt: skip
        lag = "" if last is None or last.lag is None else f"{last.lag:,}"
        table.add_row(
            worker.name, f"{t.messages:,}", f"{t.written:,}", f"{t.replayed:,}",
            f"{t.dead:,}", f"{t.written / elapsed:,.0f}", latency, lag,
        )  # fmt: skip
    return table


class StreamMetrics:
    """The worker's Prometheus metrics, served on their own port."""

    def __init__(self, port: int) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            start_http_server,
        )

        self.registry = r = CollectorRegistry()
        self.events = Counter(
            "almanac_stream_events", "Events read, by outcome: written, replayed (already in the log) or dead (dead letters).",
            ["source", "outcome"], registry=r,
        )  # fmt: skip
        self.batches = Counter("almanac_stream_batches", "Batches committed.", ["source"], registry=r)  # fmt: skip
        self.lag = Gauge("almanac_stream_lag_events", "Messages not yet read by the group.", ["source"], registry=r)  # fmt: skip
        self.latency = Histogram(
            "almanac_stream_latency_seconds", "From the broker's time of a batch's newest message to the moment it is servable.",
            ["source"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r,
        )  # fmt: skip
        self.seconds = Histogram(
            "almanac_stream_batch_duration_seconds", "Time to read, write and commit a batch.",
            ["source"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r,
        )  # fmt: skip
        start_http_server(port, registry=r)

    def observe(self, source: str, batch: BatchResult) -> None:
        if batch.messages:
            self.batches.labels(source).inc()
            self.seconds.labels(source).observe(batch.seconds)
        for outcome, count in (("written", batch.written), ("replayed", batch.replayed), ("dead", batch.dead)):  # fmt: skip
            if count:
                self.events.labels(source, outcome).inc(count)
        if batch.lag is not None:
            self.lag.labels(source).set(batch.lag)
        if batch.latency_seconds is not None:
            self.latency.labels(source).observe(batch.latency_seconds)
