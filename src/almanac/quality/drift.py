"""Drift of a feature between a reference and a current batch.

Numbers are binned by the reference's deciles (equal-mass bins; the outer bins are open,
so current values beyond the reference's range count in them); text and booleans use
their values as the bins (values not in the reference form one more bin). With p and q
the reference and current share of each bin, smoothed by ε = 1e-4 so an empty bin has a
finite weight:

- **PSI** (population stability index) = Σ (q − p) · ln(q / p);
- **JS** = the Jensen–Shannon distance, √(½ KL(p‖m) + ½ KL(q‖m)) with m = (p + q) / 2,
  in base 2, so 0 ≤ JS ≤ 1 (computed on the unsmoothed shares);
- **KS** (numbers only) = the two-sample Kolmogorov–Smirnov statistic, the largest gap
  between the two empirical distribution functions, over the raw values.

Status by PSI: `ok` below 0.1, `warn` below 0.25, `drift` from 0.25 (the usual rule of
thumb); each threshold can be set per call. Nulls are not values here: their rates are
reported beside the statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from almanac.quality.statistics import numeric

EPSILON = 1e-4
WARN_PSI = 0.1
DRIFT_PSI = 0.25
DECILES = np.linspace(0.1, 0.9, 9)


@dataclass
class FeatureDrift:
    feature: str
    reference_rows: int
    current_rows: int
    reference_null_rate: float
    current_null_rate: float
    psi: float | None
    js: float | None
    ks: float | None
    status: str  # ok | warn | drift | no data

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def drift(
    reference: pa.Table,
    current: pa.Table,
    features: list[str],
    warn_psi: float = WARN_PSI,
    drift_psi: float = DRIFT_PSI,
) -> list[FeatureDrift]:
    """The drift of each feature from `reference` to `current`."""
    return [
        _one(reference.column(name), current.column(name), name, warn_psi, drift_psi)
        for name in features
    ]


def _one(
    reference: pa.ChunkedArray, current: pa.ChunkedArray, name: str, warn: float, high: float
) -> FeatureDrift:
    ref, cur = reference.drop_null(), current.drop_null()
    result = FeatureDrift(
        name, len(reference), len(current), _rate(reference), _rate(current),
        None, None, None, "no data",
    )  # fmt: skip
    if len(ref) == 0 or len(cur) == 0:
        return result
    if pa.types.is_list(ref.type) or pa.types.is_large_list(ref.type):
        ref, cur = pc.list_value_length(ref), pc.list_value_length(cur)
    if numeric(ref) and numeric(cur):
        a, b = (pc.cast(c, pa.float64(), safe=False).to_numpy() for c in (ref, cur))
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]  # a NaN (file data) is missing
        if len(a) == 0 or len(b) == 0:
            return result
        p, q = _binned(a, b)
        result.ks = ks_statistic(a, b)
    elif pa.types.is_timestamp(ref.type):
        a, b = ref.cast(pa.int64()).to_numpy(), cur.cast(pa.int64()).to_numpy()
        p, q = _binned(a.astype(float), b.astype(float))
        result.ks = ks_statistic(a, b)
    else:
        p, q = _categories(ref, cur)
    result.psi = psi(p, q)
    result.js = js_distance(p, q)
    result.status = "ok" if result.psi < warn else "warn" if result.psi < high else "drift"
    return result


def psi(p: np.ndarray, q: np.ndarray) -> float:
    """Σ (q − p) ln(q / p) over shares smoothed by EPSILON."""
    ps, qs = _smooth(p), _smooth(q)
    return float(np.sum((qs - ps) * np.log(qs / ps)))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """The Jensen–Shannon distance in base 2 (0: the same shares, 1: disjoint)."""
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log2(p / m), 0.0)
        right = np.where(q > 0, q * np.log2(q / m), 0.0)
    return float(np.sqrt(max(0.0, (left.sum() + right.sum()) / 2)))


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """sup |F_a(x) − F_b(x)| over the pooled values (both sides of each step)."""
    a, b = np.sort(a), np.sort(b)
    points = np.concatenate([a, b])
    gap = np.searchsorted(a, points, side="right") / len(a) - np.searchsorted(b, points, side="right") / len(b)  # fmt: skip
    return float(np.max(np.abs(gap)))


def _binned(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shares of a and b in bins cut at a's distinct deciles (open outer bins)."""
    edges = np.unique(np.quantile(a, DECILES))
    pa_ = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1)
    qb = np.bincount(np.searchsorted(edges, b, side="right"), minlength=len(edges) + 1)
    return pa_ / len(a), qb / len(b)


def _categories(ref: pa.ChunkedArray, cur: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Shares of each reference value, plus one bin for values the reference lacks."""
    counts = pc.value_counts(ref)
    values = counts.field("values")
    p = np.append(counts.field("counts").to_numpy().astype(float), 0.0)
    index = pc.index_in(cur, value_set=values).fill_null(len(values)).to_numpy()
    q = np.bincount(index, minlength=len(values) + 1).astype(float)
    return p / p.sum(), q / q.sum()


def _smooth(shares: np.ndarray) -> np.ndarray:
    smoothed: np.ndarray = (shares + EPSILON) / (shares + EPSILON).sum()
    return smoothed


def _rate(column: pa.ChunkedArray) -> float:
    return column.null_count / len(column) if len(column) else 0.0
