"""Statistics and drift against independent references: Python's `statistics` and
NumPy for the statistics, SciPy for KS and Jensen–Shannon, the PSI formula written out."""

from __future__ import annotations

import math
import statistics as py_stats
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from almanac.quality.drift import _binned, _categories, drift, js_distance, ks_statistic, psi
from almanac.quality.statistics import describe

floats = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=80, deadline=None)
@given(values=st.lists(st.one_of(st.none(), floats), min_size=1, max_size=60))
def test_numeric_statistics_match_the_references(values: list[float | None]) -> None:
    (s,) = describe(pa.table({"x": pa.array(values, pa.float64())}), {"x": "float64"})
    present = [v for v in values if v is not None]
    assert (s.rows, s.nulls) == (len(values), len(values) - len(present))
    assert s.null_rate == pytest.approx((len(values) - len(present)) / len(values))
    if not present:
        assert s.distinct == 0 and s.mean is None
        return
    assert s.distinct == len(set(present))
    assert (s.min, s.max) == (min(present), max(present))
    assert s.mean == pytest.approx(py_stats.fmean(present), rel=1e-9, abs=1e-6)
    expected_sd = py_stats.stdev(present) if len(present) > 1 else 0.0
    assert s.stddev == pytest.approx(expected_sd, rel=1e-6, abs=1e-6)
    assert s.quantiles["p50"] == pytest.approx(float(np.median(present)), rel=1e-9, abs=1e-9)
    assert sum(s.histogram["counts"]) == len(present)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.sampled_from("abcdefghijklm")), min_size=1, max_size=80))  # fmt: skip
def test_top_values_are_the_most_frequent_ties_by_value(values: list[str | None]) -> None:
    (s,) = describe(pa.table({"c": pa.array(values, pa.string())}), {"c": "string"})
    counts = Counter(v for v in values if v is not None)
    expected = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    assert s.top == expected
    assert s.distinct == len(counts)


def test_list_features_are_described_by_their_lengths() -> None:
    table = pa.table({"e": pa.array([[1.0, 2.0], [], None, [3.0]], pa.list_(pa.float32()))})
    (s,) = describe(table, {"e": "list<float32>"})
    assert (s.of, s.nulls, s.min, s.max) == ("lengths", 1, 0.0, 2.0)


@settings(max_examples=60, deadline=None)
@given(a=st.lists(floats, min_size=1, max_size=50), b=st.lists(floats, min_size=1, max_size=50))
def test_ks_is_scipys_two_sample_statistic(a: list[float], b: list[float]) -> None:
    ours = ks_statistic(np.array(a), np.array(b))
    assert ours == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(a=st.lists(floats, min_size=2, max_size=50), b=st.lists(floats, min_size=1, max_size=50))
def test_js_and_psi_follow_their_formulas(a: list[float], b: list[float]) -> None:
    p, q = _binned(np.array(a), np.array(b))
    assert p.sum() == pytest.approx(1) and q.sum() == pytest.approx(1)
    assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-9)
    ps, qs = (p + 1e-4) / (p + 1e-4).sum(), (q + 1e-4) / (q + 1e-4).sum()
    expected = sum((y - x) * math.log(y / x) for x, y in zip(ps, qs, strict=True))
    assert psi(p, q) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_same_distribution_is_ok_and_a_planted_shift_is_drift() -> None:
    rng = np.random.default_rng(7)
    reference = pa.table({
        "amount": rng.normal(100, 15, 20_000),
        "plan": rng.choice(["free", "pro", "team"], 20_000, p=[0.7, 0.2, 0.1]),
    })  # fmt: skip
    same = pa.table({
        "amount": rng.normal(100, 15, 20_000),
        "plan": rng.choice(["free", "pro", "team"], 20_000, p=[0.7, 0.2, 0.1]),
    })  # fmt: skip
    shifted = pa.table({
        "amount": rng.normal(120, 15, 20_000),
        "plan": rng.choice(["free", "pro", "team", "enterprise"], 20_000, p=[0.3, 0.3, 0.2, 0.2]),
    })  # fmt: skip
    calm = {d.feature: d for d in drift(reference, same, ["amount", "plan"])}
    assert calm["amount"].status == calm["plan"].status == "ok"
    assert calm["amount"].psi < 0.01 and calm["amount"].ks < 0.03
    moved = {d.feature: d for d in drift(reference, shifted, ["amount", "plan"])}
    assert moved["amount"].status == moved["plan"].status == "drift"
    assert moved["amount"].ks == pytest.approx(ks_2samp(reference["amount"], shifted["amount"]).statistic)  # fmt: skip
    assert moved["plan"].ks is None  # categories: PSI and JS only
    _, q = _categories(reference.column("plan"), shifted.column("plan"))
    assert q[-1] == pytest.approx(0.2, abs=0.02)  # the unseen category has its own bin


def test_nan_is_missing_and_large_integers_do_not_break_the_numbers() -> None:
    """File data may hold NaN (pushes refuse it) and int64 beyond 2^53."""
    values = [1.0, 2.0, 3.0, float("nan")] * 100
    (s,) = describe(pa.table({"x": values}), {"x": "float64"})
    assert (s.distinct, s.nulls, s.max) == (3, 100, 3.0)
    same = pa.table({"x": values})
    assert drift(same, same, ["x"])[0].status == "ok"
    (big,) = describe(pa.table({"n": pa.array([2**53 + 1, 5], pa.int64())}), {"n": "int64"})
    assert big.max == float(2**53 + 1)
