"""The quality report: one self-contained HTML page (inline CSS and SVG, no script, no
network) on a repo's data quality, from the quality verbs.

- per feature view: `statistics` as a table, with a histogram per number feature (its
  10 equal-width bins) and the top values of each text or boolean one;
- with a reference and a current window: the `drift` table (PSI, JS, KS, status), the
  two windows' shares over the same bins per feature, and PSI per feature per step
  (default a day) across the current window, against the warn and drift thresholds;
- `freshness` per view, and per feature service the `skew` of its logged reads.

PSI over time bins like `almanac.quality.drift`, so a step's value is what `drift`
reports for that step alone: the bins are cut once from the reference (its deciles, or
its values plus one for the others), every current row gets its bin and its step in one
vectorized pass, and one `bincount` counts them all; `drift.psi` then scores each step.
Aggregation views have no rows to describe: they are listed with a note (and their
freshness).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from almanac.definitions.aggregation import AggregationView
from almanac.definitions.base import format_duration, parse_duration
from almanac.definitions.feature_view import FeatureView
from almanac.errors import InputError
from almanac.ports.handles import StoreHandle
from almanac.quality import svg
from almanac.quality.checks import Sample, Window, sample_rows, statistics
from almanac.quality.datasets import load
from almanac.quality.drift import DECILES, DRIFT_PSI, WARN_PSI, FeatureDrift, drift, psi
from almanac.quality.freshness import ViewFreshness, freshness
from almanac.quality.served import Served
from almanac.quality.skew import SkewReport, skew
from almanac.quality.statistics import TOP, FeatureStatistics, numeric, top_values
from almanac.semantics.rows import EVENT_TIMESTAMP
from almanac.semantics.times import datetime_to_micros, micros_to_datetime, time_range
from almanac.semantics.validate import UTC_US

MAX_STEPS = 500
OVERLAY_BINS = 20
_STATUS = {"no data": "none", "no slo": "none"}  # the other statuses are their own CSS class


@dataclass
class Overlay:
    """The reference and current shares over the same bins: `labels` are the bin edges
    (one more than the shares) for numbers, the values for categories (`grouped`)."""

    labels: list[str]
    reference: list[float]
    current: list[float]
    grouped: bool


@dataclass
class ViewReport:
    view: str
    note: str | None = None  # why the view is not described
    statistics: list[FeatureStatistics] = field(default_factory=list)
    drift: list[FeatureDrift] = field(default_factory=list)
    overlays: dict[str, Overlay] = field(default_factory=dict)
    steps: list[datetime] = field(default_factory=list)  # the start of each step
    psi: dict[str, list[float | None]] = field(default_factory=dict)  # per step; None: no rows


@dataclass
class ServiceSkew:
    service: str
    report: SkewReport | None  # None: no logged reads in the window


@dataclass
class Report:
    project: str
    generated: datetime
    options: dict[str, str]
    views: list[ViewReport]
    freshness: list[ViewFreshness]
    skew: list[ServiceSkew]
    html: str = ""

    def summary(self) -> str:
        described = [v for v in self.views if v.note is None]
        head = f"{_count(len(described), 'view')}, {_count(sum(len(v.statistics) for v in described), 'feature')}"  # fmt: skip
        if len(described) < len(self.views):
            head += f" ({_count(len(self.views) - len(described), 'aggregation view')} skipped)"
        parts = [head]
        if any(v.drift for v in described):
            moved = [f"{v.view}:{d.feature}" for v in described for d in v.drift if d.status == "drift"]  # fmt: skip
            parts.append(f"drift in {_count(len(moved), 'feature')}" + (f" ({', '.join(moved)})" if moved else ""))  # fmt: skip
        late = [f.view for f in self.freshness if f.status in ("stale", "lagging")]
        parts.append(f"{len(late)} stale or lagging" + (f" ({', '.join(late)})" if late else ""))
        logged = [s for s in self.skew if s.report is not None]
        skewed = [s.service for s in logged if s.report and any(f.rate for f in s.report.features)]
        parts.append(f"skew in {len(skewed)} of {_count(len(logged), 'logged service')}")
        return "; ".join(parts)


def render(
    store: StoreHandle,
    views: Sequence[str] | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    reference: Sample | None = None,
    current: Window | None = None,
    step: timedelta | str = "1d",
    services: Sequence[str] | None = None,
    now: datetime | None = None,
) -> Report:
    """The report on `views` (default: all) and `services` (default: all): statistics of
    rows with event times in [start, end], drift from `reference` (a window, or a saved
    dataset's name) to the `current` window (both or neither), skew of the reads logged
    in [start, end]. Every input is checked before
    any data is read (the steps of a current window with an open end: once its rows
    are)."""
    catalog = store.catalog
    chosen = list(dict.fromkeys(catalog.view(name).name for name in views)) if views else list(catalog.all_views())  # fmt: skip
    named = list(dict.fromkeys(catalog.service(name).name for name in services)) if services else list(catalog.services)  # fmt: skip
    time_range(start, end)
    if (reference is None) != (current is None):
        raise InputError("the reference and current windows go together: drift compares them")
    size = _step(step)
    if reference is not None and current is not None:
        if isinstance(reference, str):
            load(store.config, reference)  # NotFoundError before any data is read
        elif isinstance(reference, Served):
            time_range(reference.start, reference.end)
        else:
            time_range(*reference)
        low, high = time_range(*current)
        if low is not None and high is not None:
            _check_steps(high - low, size)
    now = now or datetime.now(UTC)
    options = {"statistics": _window(start, end)}
    if reference is not None and current is not None:
        if isinstance(reference, str):
            label = f"saved dataset {reference}"
        elif isinstance(reference, Served):
            label = f"served {_window(reference.start, reference.end)}"
        else:
            label = _window(*reference)
        options |= {"reference": label, "current": _window(*current), "step": format_duration(size)}  # fmt: skip
    report = Report(
        store.project, now, options,
        [_view(store, catalog.view(name), start, end, reference, current, size) for name in chosen],
        freshness(store, chosen, now),
        [_skew(store, name, start, end) for name in named],
    )  # fmt: skip
    report.html = to_html(report)
    return report


def _step(step: timedelta | str) -> timedelta:
    try:
        size = parse_duration(step)
    except ValueError as error:
        raise InputError(f"step: {error}") from None
    if size <= timedelta(0):
        raise InputError(f"step: {step!r} is not a positive duration")
    return size


def _check_steps(span: timedelta, size: timedelta) -> int:
    steps = max(1, math.ceil(span / size))
    if steps > MAX_STEPS:
        raise InputError(
            f"the current window holds {steps:,} steps of {format_duration(size)}: at most "
            f"{MAX_STEPS}; use a larger step"
        )
    return steps


def _window(start: datetime | str | None, end: datetime | str | None) -> str:
    low, high = time_range(start, end)
    if low is None and high is None:
        return "all rows"
    return f"{'' if low is None else low.isoformat()} .. {'' if high is None else high.isoformat()}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


# ---- the numbers -------------------------------------------------------------------------


def _view(
    store: StoreHandle,
    view: FeatureView,
    start: datetime | str | None,
    end: datetime | str | None,
    reference: Sample | None,
    current: Window | None,
    size: timedelta,
) -> ViewReport:
    if isinstance(view, AggregationView):
        note = "an aggregation view: its values exist per read time, not as rows, so it has no statistics or drift"  # fmt: skip
        return ViewReport(view.name, note)
    out = ViewReport(view.name, statistics=statistics(store, view.name, start, end))
    if reference is None or current is None:
        return out
    before, after = sample_rows(store, view, reference), sample_rows(store, view, current)
    out.drift = drift(before, after, view.feature_names)  # what `store.drift` computes
    out.steps, index = _step_index(after, current, size)
    for name in view.feature_names:
        kind, ref, cur = _prepare(before.column(name), after.column(name))
        found = _overlay(kind, ref, cur)
        if found is not None:
            out.overlays[name] = found
        series = _psi_steps(kind, ref, cur, index, len(out.steps))
        if series is not None:
            out.psi[name] = series
    return out


def _step_index(rows: pa.Table, window: Window, size: timedelta) -> tuple[list[datetime], np.ndarray]:  # fmt: skip
    """The start of each step across the window (an open end: the rows' own), and each
    row's step."""
    times = pc.cast(rows.column(EVENT_TIMESTAMP), UTC_US).cast(pa.int64()).to_numpy()
    low, high = time_range(*window)
    if len(times) == 0 and (low is None or high is None):
        return [], np.zeros(0, np.int64)
    first = datetime_to_micros(low) if low is not None else int(times.min())
    last = datetime_to_micros(high) if high is not None else int(times.max())
    step = size // timedelta(microseconds=1)
    steps = _check_steps(timedelta(microseconds=last - first), size)
    index = np.minimum((times - first) // step, steps - 1)  # the window's end is in the last
    return [micros_to_datetime(first + k * step) for k in range(steps)], index


def _prepare(reference: pa.ChunkedArray, current: pa.ChunkedArray) -> tuple[str, Any, Any]:
    """A feature's two columns as `drift` reads them, row for row: numbers (list lengths,
    timestamps as integers) as float arrays with NaN where missing, else the columns."""
    if pa.types.is_list(reference.type) or pa.types.is_large_list(reference.type):
        reference, current = pc.list_value_length(reference), pc.list_value_length(current)
    if numeric(reference) and numeric(current):
        return "number", _floats(reference), _floats(current)
    if pa.types.is_timestamp(reference.type):
        return f"time:{reference.type.unit}", _floats(reference.cast(pa.int64())), _floats(current.cast(pa.int64()))  # fmt: skip
    return "category", reference, current


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    values: np.ndarray = pc.fill_null(pc.cast(column, pa.float64(), safe=False), math.nan).to_numpy()  # fmt: skip
    return values


def _overlay(kind: str, ref: Any, cur: Any) -> Overlay | None:
    if kind == "category":
        present = [ref.drop_null(), cur.drop_null()]
        if not len(present[0]) or not len(present[1]):
            return None
        values = [v for v, _ in top_values(pa.chunked_array([*present[0].chunks, *present[1].chunks], ref.type), TOP)]  # fmt: skip
        value_set = pa.array(values, ref.type)
        shares = []
        for side in present:
            index = pc.index_in(side, value_set=value_set).fill_null(len(values)).to_numpy()
            shares.append(np.bincount(index, minlength=len(values) + 1) / len(side))
        labels = [str(v) for v in values] + ["(other)"]
        if shares[0][-1] == shares[1][-1] == 0:
            labels, shares = labels[:-1], [s[:-1] for s in shares]
        return Overlay(labels, shares[0].tolist(), shares[1].tolist(), grouped=True)
    a, b = ref[np.isfinite(ref)], cur[np.isfinite(cur)]  # an infinity (file data) has no bin
    if len(a) == 0 or len(b) == 0:
        return None
    low, high = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    if not low < high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, OVERLAY_BINS + 1)
    p, q = (np.histogram(x, edges)[0] / len(x) for x in (a, b))
    return Overlay([_edge(kind, e) for e in edges], p.tolist(), q.tolist(), grouped=False)


def _edge(kind: str, value: float) -> str:
    if kind.startswith("time:"):
        moment = pa.scalar(int(value), pa.int64()).cast(pa.timestamp(kind[5:], "UTC")).as_py()
        return str(moment.isoformat(timespec="minutes"))
    return svg.number(float(value))


def _psi_steps(kind: str, ref: Any, cur: Any, index: np.ndarray, steps: int) -> list[float | None] | None:  # fmt: skip
    """PSI of each step's current rows against the reference (None: no rows that step;
    None for the whole series: the reference has no values)."""
    if kind == "category":
        counts = pc.value_counts(ref.drop_null())
        if len(counts) == 0:
            return None
        values = counts.field("values")
        p = np.append(counts.field("counts").to_numpy().astype(float), 0.0)
        p = p / p.sum()
        bins = pc.index_in(cur, value_set=values).fill_null(len(values)).to_numpy()
        valid = ~pc.is_null(cur).to_numpy()
    else:
        a = ref[~np.isnan(ref)]
        if len(a) == 0:
            return None
        edges = np.unique(np.quantile(a, DECILES))  # the bins of `drift._binned`
        p = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1) / len(a)  # fmt: skip
        bins = np.searchsorted(edges, cur, side="right")
        valid = ~np.isnan(cur)
    width = len(p)
    cells = np.bincount(index[valid] * width + bins[valid], minlength=steps * width)
    counts_per_step = cells.reshape(steps, width)
    totals = counts_per_step.sum(axis=1)
    return [psi(p, counts_per_step[k] / totals[k]) if totals[k] else None for k in range(steps)]


def _skew(store: StoreHandle, service: str, start: datetime | str | None, end: datetime | str | None) -> ServiceSkew:  # fmt: skip
    try:
        return ServiceSkew(service, skew(store, service, start, end))
    except InputError as error:
        if not str(error).startswith("no logged reads"):
            raise
        return ServiceSkew(service, None)


# ---- the page ------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;color:#d0d7de}main{padding:8px 32px 48px;max-width:1200px}
nav{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 16px;margin:16px 0}
nav ul{margin:4px 0;padding-left:18px;columns:3}section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:4px 20px 16px;margin:16px 0}
h2{border-bottom:1px solid #d0d7de;padding-bottom:4px}h3{margin:18px 0 6px}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right}th{background:#f6f8fa}
td:first-child,th:first-child{text-align:left}
.status{font-weight:600;text-align:center}.status.ok{background:#dafbe1;color:#116329}
.status.warn,.status.lagging{background:#fff8c5;color:#7d4e00}
.status.drift,.status.stale,.status.skewed{background:#ffebe9;color:#a40e26}
.status.none{color:#656d76}.note{color:#656d76;font-style:italic}
.charts{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;border:1px solid #eaeef2;border-radius:4px;padding:4px}
figcaption{font-size:12px;color:#656d76;text-align:center}
svg .label{font-size:10px;fill:#57606a}svg .axis{stroke:#8c959f}svg .threshold{stroke-width:1.5}
svg .threshold.warn{stroke:#bf8700}svg .threshold.drift{stroke:#cf222e}
svg .bar.reference,svg .bar.current{opacity:.6}
"""


def to_html(report: Report) -> str:
    options = " · ".join(f"{name}: {svg.esc(value)}" for name, value in report.options.items())
    toc = ['<li><a href="#freshness-section">Freshness</a></li>']
    toc += [
        f'<li><a href="#view-{svg.esc(v.view)}">{svg.esc(v.view)}</a></li>' for v in report.views
    ]
    toc.append('<li><a href="#skew">Skew</a></li>')
    body = [
        f"<header><h1>Data quality: {svg.esc(report.project)}</h1>",
        f"<p>Generated {svg.esc(report.generated.isoformat(timespec='seconds'))} · {options}</p>",
        f'<p class="summary">{svg.esc(report.summary())}</p></header><main>',
        f"<nav><strong>Contents</strong><ul>{''.join(toc)}</ul></nav>",
        _freshness(report.freshness),
        *(_view_html(v) for v in report.views),
        _skew_html(report.skew),
        "</main>",
    ]
    title = f"Data quality: {svg.esc(report.project)}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )


def _table(css: str, attrs: str, head: Sequence[str], rows: Sequence[str]) -> str:
    cells = "".join(f"<th>{svg.esc(h)}</th>" for h in head)
    return f'<table class="{css}"{attrs}><thead><tr>{cells}</tr></thead><tbody>{"".join(rows)}</tbody></table>'  # fmt: skip


def _row(
    key: str,
    value: str,
    cells: Sequence[object],
    status: str | None = None,
    shown: str | None = None,
) -> str:
    """A table row keyed by `data-<key>`; the last cell is the status, coloured (and
    showing `shown` in place of the status when given)."""
    out = "".join(f"<td>{svg.esc(svg.number(c))}</td>" for c in cells)
    if status is not None:
        text = status if shown is None else shown
        out += f'<td class="status {_STATUS.get(status, status)}">{svg.esc(text)}</td>'
    return f'<tr data-{key}="{svg.esc(value)}">{out}</tr>'


def _figure(chart: str, caption: str) -> str:
    return f"<figure>{chart}<figcaption>{svg.esc(caption)}</figcaption></figure>"


def _age(seconds: float | None) -> str:
    return "" if seconds is None else format_duration(timedelta(seconds=round(seconds)))


def _freshness(found: list[ViewFreshness]) -> str:
    rows = [
        _row("view", f.view, [
            f.view, "" if f.newest_event is None else f.newest_event.isoformat(timespec="seconds"),
            _age(f.event_age_seconds), _age(f.materialization_lag_seconds), _age(f.slo_seconds),
        ], f.status)
        for f in found
    ]  # fmt: skip
    head = ("view", "newest event", "event age", "online lag", "slo", "status")
    table = _table("freshness", ' id="freshness"', head, rows)
    return f'<section id="freshness-section"><h2>Freshness</h2>{table}</section>'


def _view_html(v: ViewReport) -> str:
    out = [f'<section class="view" id="view-{svg.esc(v.view)}" data-view="{svg.esc(v.view)}"><h2>{svg.esc(v.view)}</h2>']  # fmt: skip
    if v.note is not None:
        return out[0] + f'<p class="note">{svg.esc(v.note)}</p></section>'
    rows_seen = v.statistics[0].rows if v.statistics else 0
    out.append(f"<h3>Statistics</h3><p>{rows_seen:,} rows in the window.</p>")
    head = ("feature", "type", "nulls", "distinct", "min", "p50", "max", "mean", "stddev", "top")
    out.append(_table("statistics", "", head, [
        _row("feature", s.feature, [
            s.feature + (" (lengths)" if s.of == "lengths" else ""), s.dtype, f"{s.null_rate:.1%}",
            s.distinct, s.min, s.quantiles.get("p50"), s.max, s.mean, s.stddev,
            ", ".join(f"{value} ({count:,})" for value, count in s.top[:3]),
        ]) for s in v.statistics
    ]))  # fmt: skip
    charts = []
    for s in v.statistics:
        if s.histogram:
            chart = svg.histogram(s.feature, s.histogram["edges"], s.histogram["counts"])
        elif s.top:
            chart = svg.hbars("histogram categorical", {"data-feature": s.feature}, [(str(value), float(n)) for value, n in s.top])  # fmt: skip
        else:
            kind = "no values in the window" if not s.distinct else "min and max only"
            chart = f'<p class="note">{kind}</p>'
        charts.append(_figure(chart, s.feature))
    out.append(f'<div class="charts">{"".join(charts)}</div>')
    if v.drift:
        out.append(_drift_html(v))
    return "".join(out) + "</section>"


def _drift_html(v: ViewReport) -> str:
    rows = [
        _row("feature", d.feature, [
            d.feature, f"{d.reference_rows:,} → {d.current_rows:,}",
            f"{d.reference_null_rate:.1%} → {d.current_null_rate:.1%}", d.psi, d.js, d.ks,
        ], d.status)
        for d in v.drift
    ]  # fmt: skip
    head = ("feature", "rows", "null rate", "psi", "js", "ks", "status")
    out = ["<h3>Drift: reference → current</h3>", _table("drift", f' data-view="{svg.esc(v.view)}"', head, rows)]  # fmt: skip
    charts = [
        _figure(
            svg.overlay(name, o.labels, o.reference, o.current, o.grouped), f"{name}: share of rows"
        )
        for name, o in v.overlays.items()
    ]
    out.append(f'<div class="charts">{"".join(charts)}</div>')
    out.append("<h3>PSI per step over the current window <small>(square-root scale)</small></h3>")
    series = {name: points for name, points in v.psi.items() if any(p is not None for p in points)}  # fmt: skip
    if series:
        daily = all(s.hour == s.minute == s.second == 0 for s in v.steps)
        labels = [s.strftime("%Y-%m-%d" if daily else "%m-%d %H:%M") for s in v.steps]
        thresholds = [("warn", WARN_PSI), ("drift", DRIFT_PSI)]
        out.append(svg.lines("drift-over-time", {"data-view": v.view}, labels, series, thresholds))
    else:
        out.append('<p class="note">no rows to compare</p>')
    return "".join(out)


def _skew_html(found: list[ServiceSkew]) -> str:
    out = ['<section id="skew"><h2>Skew: served vs offline</h2>']
    if not found:
        out.append('<p class="note">no feature services</p>')
    for s in found:
        out.append(f'<div class="service" data-service="{svg.esc(s.service)}"><h3>{svg.esc(s.service)}</h3>')  # fmt: skip
        if s.report is None:
            out.append('<p class="note">no logged reads</p></div>')
            continue
        out.append(f"<p>{s.report.rows:,} logged entity reads replayed.</p>")
        rows = [
            _row(
                "feature",
                f.feature,
                [f.feature, f.compared, f.mismatches, f.missing, f.extra],
                "skewed" if f.rate else "ok",
                f"{f.rate:.2%}",
            )
            for f in s.report.features
        ]
        head = ("feature", "compared", "mismatches", "missing", "extra", "rate")
        out.append(_table("skew", "", head, rows))
        bars = [(f.feature, f.rate) for f in s.report.features]
        scale = max([rate for _, rate in bars] + [0.01])
        out.append(svg.hbars("skew-bars", {"data-service": s.service}, bars, lambda r: f"{r:.2%}", scale))  # fmt: skip
        out.append("</div>")
    return "".join(out) + "</section>"
