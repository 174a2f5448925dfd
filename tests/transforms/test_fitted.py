"""Fitted model transforms: a row's output is the same bits in any table (whole table vs
row by row, for every kind), the JSON artifact round-trips exactly, the formulas are the
documented ones, unseen categories and nulls follow their rules, and out-of-fold target
encoding never reads a row's own target."""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from almanac.definitions.model_transforms import (
    Bucketize,
    Impute,
    Log1p,
    MinMaxScaler,
    ModelTransform,
    OneHot,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
    TargetEncoder,
    as_model_transform,
)
from almanac.errors import DefinitionError, InputError
from almanac.transforms import fitted as fitted_module
from almanac.transforms.fitted import FittedTransforms, apply, fingerprint_of, fit

COLUMNS = {"t:x": "x", "t:c": "c", "t:n": "n"}
EVERY_KIND: list[list[ModelTransform]] = [
    [StandardScaler("t:x")],
    [MinMaxScaler("t:x")],
    [RobustScaler("t:x")],
    [Log1p("t:x")],
    [Bucketize("t:x", boundaries=[-1, 0, 2.5])],
    [Impute("t:x")],
    [Impute("t:x", strategy="median")],
    [Impute("t:x", strategy="most_frequent")],
    [Impute("t:x", strategy="constant", value=-1.5)],
    [Impute("t:c", strategy="most_frequent")],
    [Impute("t:n", strategy="constant", value=7)],
    [OneHot("t:c")],
    [OneHot("t:c", max_categories=2, min_frequency=2)],
    [OneHot("t:n")],
    [OrdinalEncoder("t:c")],
    [OrdinalEncoder("t:n")],
    [TargetEncoder("t:c", target="y", folds=2, smoothing=1.5)],
    [TargetEncoder("t:n", target="y", folds=3, smoothing=0.0)],
    [Impute("t:x"), StandardScaler("t:x"), Bucketize("t:x", boundaries=[0.0]), OneHot("t:x")],
    [RobustScaler("t:x"), OneHot("t:c"), TargetEncoder("t:n", target="y", folds=2)],
]

number = st.one_of(
    st.none(),
    st.floats(-1e6, 1e6, allow_nan=False, width=64),
    st.sampled_from([0.0, -0.0, -1.0, 2.5, float("nan")]),
)
category = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d", "é"]))
integer = st.one_of(st.none(), st.integers(-3, 3))
target = st.one_of(st.integers(0, 1), st.floats(-100, 100, allow_nan=False))


@st.composite
def tables(draw: st.DrawFn, min_size: int = 2) -> pa.Table:
    """x (floats, with nulls and NaN), c (strings), n (int64), y (a target), id."""
    size = draw(st.integers(min_size, 30))
    rows = st.lists(st.tuples(number, category, integer, target), min_size=size, max_size=size)
    x, c, n, y = map(list, zip(*draw(rows), strict=True))
    x[0], c[0], n[0] = draw(st.floats(-10, 10)), draw(st.sampled_from("ab")), 1  # each fits
    return pa.table(
        {
            "id": pa.array(range(size), pa.int64()),
            "x": pa.array(x, pa.float64()),
            "c": pa.array(c, pa.string()),
            "n": pa.array(n, pa.int64()),
            "y": pa.array(y, pa.float64()),
        }
    )


def bits(table: pa.Table) -> list[list[Any]]:
    """Rows with floats as their exact bits (hex tells -0.0 from 0.0), columns named."""
    names = table.column_names
    return [
        [(name, v.hex() if isinstance(v, float) else v) for name, v in zip(names, row, strict=True)]
        for row in zip(*(table.column(name).to_pylist() for name in names), strict=True)
    ]


@contextmanager
def small_batch_rows(rows: int) -> Iterator[None]:
    """Force the Python-dict lookup (large) or Arrow's `index_in` (0) for categories."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fitted_module, "SMALL_BATCH_ROWS", rows)
        yield


def fit_on(transforms: list[ModelTransform], table: pa.Table) -> FittedTransforms:
    return fit(transforms, table, COLUMNS, fingerprint=fingerprint_of(table, ["id", "y"]))


def column(table: pa.Table, name: str) -> list[Any]:
    return table.column(name).to_pylist()


# -- the same bits for a row in any table ----------------------------------------------


def every_kind(train: pa.Table) -> tuple[list[ModelTransform], dict[str, str], pa.Table]:
    """Every group of `EVERY_KIND` at once, group i on its own copies of x, c and n (as
    features t:x_i, t:c_i, t:n_i): one fit and one apply exercise them all."""
    transforms, columns = [], {}
    for i, group in enumerate(EVERY_KIND):
        for transform in group:
            renamed = as_model_transform(
                {**transform.to_spec(), "feature": f"{transform.feature}_{i}"}
            )
            transforms.append(renamed)
            columns[renamed.feature] = renamed.feature.split(":")[1]
    return transforms, columns, widen(train)


def widen(table: pa.Table) -> pa.Table:
    for i in range(len(EVERY_KIND)):
        for name in ("x", "c", "n"):
            table = table.append_column(f"{name}_{i}", table.column(name))
    return table


@settings(max_examples=30, deadline=None)
@given(train=tables(min_size=3), serve=tables(min_size=1))
def test_whole_table_equals_row_by_row(train: pa.Table, serve: pa.Table) -> None:
    transforms, columns, train = every_kind(train)
    fitted = fit(transforms, train, columns, fingerprint="f")
    for lookup_rows in (0, 10_000):  # Arrow's index_in, then the Python dict, for categories
        with small_batch_rows(lookup_rows):
            for table in (train, widen(serve)):
                whole = bits(apply(fitted, table, columns))
                one_by_one = [
                    bits(apply(fitted, table.slice(i, 1), columns))[0]
                    for i in range(table.num_rows)
                ]
                assert whole == one_by_one
            # Out of fold depends on the row's position only, not on chunks.
            out_of_fold = apply(fitted, train, columns, out_of_fold=True)
            rechunked = pa.Table.from_batches(train.to_batches(max_chunksize=2))
            assert bits(apply(fitted, rechunked, columns, out_of_fold=True)) == bits(out_of_fold)
    # An empty table (how a retrieval learns the output schema) gets the same columns.
    in_fold = apply(fitted, train, columns)
    assert apply(fitted, train.slice(0, 0), columns).schema == in_fold.schema
    # Out of fold changes target encoders only.
    encoded = {columns[t.feature] for t in transforms if isinstance(t, TargetEncoder)}
    for name in in_fold.column_names:
        if name not in encoded:
            assert bits(in_fold.select([name])) == bits(out_of_fold.select([name])), name


@settings(max_examples=20, deadline=None)
@given(train=tables(min_size=3), serve=tables(min_size=1))
def test_the_json_artifact_round_trips_exactly(train: pa.Table, serve: pa.Table) -> None:
    transforms, columns, train = every_kind(train)
    fitted = fit(transforms, train, columns, fingerprint=fingerprint_of(train, ["id", "y"]))
    text = json.dumps(fitted.to_json(), allow_nan=False)
    loaded = FittedTransforms.from_json(json.loads(text))
    assert loaded == fitted
    assert json.dumps(loaded.to_json(), allow_nan=False) == text  # byte-stable
    for table in (train, widen(serve)):
        assert bits(apply(loaded, table, columns)) == bits(apply(fitted, table, columns))
    oof = [apply(f, train, columns, out_of_fold=True) for f in (loaded, fitted)]
    assert bits(oof[0]) == bits(oof[1])


# -- formulas --------------------------------------------------------------------------


def reference_quantile(ascending: list[float], p: float) -> float:
    h = (len(ascending) - 1) * p
    i = math.floor(h)
    return ascending[i] if h == i else ascending[i] + (h - i) * (ascending[i + 1] - ascending[i])


@settings(max_examples=60, deadline=None)
@given(train=tables(min_size=3), serve=tables(min_size=1))
def test_scalers_follow_their_formulas(train: pa.Table, serve: pa.Table) -> None:
    present = [v for v in column(train, "x") if v is not None and not math.isnan(v)]
    mean, std = float(np.mean(present)), float(np.std(present))
    low, high = float(np.min(present)), float(np.max(present))
    ordered = np.sort(present).tolist()  # the order of -0.0 and 0.0 as the fit sees it
    median = reference_quantile(ordered, 0.5)
    iqr = reference_quantile(ordered, 0.75) - reference_quantile(ordered, 0.25)
    assert median == pytest.approx(float(np.median(present)), rel=1e-12, abs=1e-9)
    expected = {
        StandardScaler: lambda x: (x - mean) / std if std else 0.0,
        MinMaxScaler: lambda x: (x - low) / (high - low) if high != low else 0.0,
        RobustScaler: lambda x: (x - median) / iqr if iqr else 0.0,
        Log1p: lambda x: math.log1p(x) if x > -1 else None,
    }
    for kind, formula in expected.items():
        fitted = fit_on([kind("t:x")], train)
        got = column(apply(fitted, serve, COLUMNS), "x")
        for x, y in zip(column(serve, "x"), got, strict=True):
            want = None if x is None or math.isnan(x) else formula(x)
            assert (y is None and want is None) or y == want, (kind, x, y, want)
            assert y is None or math.copysign(1, y) == math.copysign(1, want)
    boundaries = [-1.0, 0.0, 2.5]
    buckets = column(
        apply(fit_on([Bucketize("t:x", boundaries=boundaries)], train), serve, COLUMNS), "x"
    )
    for x, bucket in zip(column(serve, "x"), buckets, strict=True):
        assert bucket == (
            None if x is None or math.isnan(x) else bisect.bisect_right(boundaries, x)
        )


def test_scaler_parameters_and_unclipped_min_max() -> None:
    train = pa.table({"x": [1.0, 2.0, 3.0, 4.0, None], "y": [0.0] * 5})
    columns = {"t:x": "x"}
    fitted = fit(
        [StandardScaler("t:x"), MinMaxScaler("t:x"), RobustScaler("t:x")],
        train,
        columns,
        fingerprint="f",
    )
    params = [dict(step.params) for step in fitted.transforms]
    assert params[0] == {"mean": 2.5, "std": float(np.std([1.0, 2, 3, 4]))}
    assert params[1]["min"] < params[1]["max"]  # fitted on the standardized values
    one = fit([MinMaxScaler("t:x")], train, columns, fingerprint="f")
    out = apply(one, pa.table({"x": [0.0, 5.0, None]}), columns)
    assert column(out, "x") == [-1 / 3, 4 / 3, None]  # outside the fitted range: not clipped
    constant = fit([StandardScaler("t:x")], pa.table({"x": [3.0, 3.0]}), columns, fingerprint="f")
    assert column(apply(constant, pa.table({"x": [3.0, 9.0, None]}), columns), "x") == [
        0.0,
        0.0,
        None,
    ]
    assert column(
        apply(
            fit([Log1p("t:x")], train, columns, fingerprint="f"),
            pa.table({"x": [-1.0, -2.0, 0.0]}),
            columns,
        ),
        "x",
    ) == [None, None, 0.0]


def test_impute_fills_nulls_and_nan_and_feeds_the_next_transform() -> None:
    train = pa.table(
        {
            "x": [1.0, None, 3.0, float("nan"), 3.0],
            "c": ["a", None, "b", "b", "a"],
            "n": pa.array([1, None, 2, 2, None], pa.int64()),
        }
    )
    serve = pa.table(
        {
            "x": [None, float("nan"), 5.0],
            "c": [None, "z", "a"],
            "n": pa.array([None, 4, 1], pa.int32()),
        }
    )

    def imputed(transform: ModelTransform, name: str) -> list[Any]:
        return column(
            apply(fit([transform], train, COLUMNS, fingerprint="f"), serve, COLUMNS), name
        )

    assert imputed(Impute("t:x"), "x") == [7 / 3, 7 / 3, 5.0]
    assert imputed(Impute("t:x", strategy="median"), "x") == [3.0, 3.0, 5.0]
    assert imputed(Impute("t:x", strategy="most_frequent"), "x") == [3.0, 3.0, 5.0]
    assert imputed(Impute("t:c", strategy="most_frequent"), "c") == ["a", "z", "a"]  # tie: smallest
    assert imputed(Impute("t:n", strategy="constant", value=0), "n") == [0, 4, 1]
    assert imputed(Impute("t:x", strategy="constant", value=0), "x") == [0.0, 0.0, 5.0]
    int_mean = apply(fit([Impute("t:n")], train, COLUMNS, fingerprint="f"), serve, COLUMNS)
    assert int_mean.schema.field("n").type == pa.float64()  # mean/median: float64
    assert int_mean.schema.field("c").type == pa.string()
    kept = apply(
        fit([Impute("t:n", strategy="most_frequent")], train, COLUMNS, fingerprint="f"),
        serve,
        COLUMNS,
    )
    assert kept.schema.field("n").type == pa.int64() and column(kept, "n") == [2, 4, 1]
    chained = fit([Impute("t:x"), StandardScaler("t:x")], train, COLUMNS, fingerprint="f")
    filled = [1.0, 7 / 3, 3.0, 7 / 3, 3.0]
    assert dict(chained.transforms[1].params) == {
        "mean": float(np.mean(filled)),
        "std": float(np.std(filled)),
    }
    out = column(apply(chained, serve, COLUMNS), "x")
    assert out[0] == out[1] == (7 / 3 - float(np.mean(filled))) / float(np.std(filled))


# -- categories ------------------------------------------------------------------------


def test_one_hot_columns_order_unknowns_and_position() -> None:
    train = pa.table(
        {
            "id": [1, 2, 3, 4, 5, 6, 7],
            "c": ["b", "a", "b", "c", "a", None, "d"],
            "y": [0.0] * 7,
        }
    )
    serve = pa.table({"id": [1, 2, 3, 4], "c": ["a", "zz", None, "d"], "y": [0.0] * 4})
    fitted = fit([OneHot("t:c")], train, COLUMNS, fingerprint="f")
    # Descending count, then value; then the unknown column.
    assert fitted.output_columns("t:c", "c") == ["c=a", "c=b", "c=c", "c=d", "c=__unknown__"]
    out = apply(fitted, serve, COLUMNS)
    assert out.column_names == ["id", "c=a", "c=b", "c=c", "c=d", "c=__unknown__", "y"]
    assert all(out.schema.field(name).type == pa.float64() for name in out.column_names[1:6])
    rows = [[column(out, name)[i] for name in out.column_names[1:6]] for i in range(4)]
    assert rows == [[1, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 1, 0]]
    limited = fit(
        [OneHot("t:c", max_categories=1, min_frequency=2)], train, COLUMNS, fingerprint="f"
    )
    assert apply(limited, serve, COLUMNS).column_names == ["id", "c=a", "c=__unknown__", "y"]
    flags = pa.table({"c": [True, False, True, None]})
    booleans = fit([OneHot("t:c")], flags, COLUMNS, fingerprint="f")
    assert booleans.output_columns("t:c", "c") == ["c=true", "c=false", "c=__unknown__"]
    with pytest.raises(InputError, match="already in the table"):
        apply(booleans, flags.append_column("c=true", pa.array([1, 2, 3, 4])), COLUMNS)


def test_ordinal_codes_sorted_by_value_unknown_is_minus_one() -> None:
    train = pa.table({"c": ["b", "a", "b", None, "c"], "n": [30, 10, 20, 10, None]})
    serve = pa.table({"c": ["c", None, "zz", "a"], "n": pa.array([10, 99, None, 30], pa.int8())})
    fitted = fit([OrdinalEncoder("t:c"), OrdinalEncoder("t:n")], train, COLUMNS, fingerprint="f")
    out = apply(fitted, serve, COLUMNS)
    assert column(out, "c") == [2, -1, -1, 0] and column(out, "n") == [0, -1, -1, 2]
    assert out.schema.field("c").type == pa.int64()


def test_target_encoding_formula_and_unseen_categories() -> None:
    train = pa.table({"c": ["a", "a", "b", None, "a", "b"], "y": [1, 0, 1, 1, 1, 0]})
    fitted = fit(
        [TargetEncoder("t:c", target="y", folds=2, smoothing=2.0)], train, COLUMNS, fingerprint="f"
    )
    prior = 4 / 6
    out = column(apply(fitted, pa.table({"c": ["a", "b", "zz", None]}), COLUMNS), "c")
    assert out == [(2 + 2 * prior) / (3 + 2), (1 + 2 * prior) / (2 + 2), prior, prior]


@settings(max_examples=40, deadline=None)
@given(
    train=tables(min_size=4),
    folds=st.integers(2, 4),
    row=st.integers(0, 100),
    new_target=st.floats(-1e3, 1e3),
)
def test_out_of_fold_never_reads_a_rows_own_target(
    train: pa.Table, folds: int, row: int, new_target: float
) -> None:
    row %= train.num_rows
    encoders = [
        TargetEncoder("t:c", target="y", folds=folds),
        TargetEncoder("t:n", target="y", folds=folds, smoothing=0.0),
    ]
    before = apply(fit_on(encoders, train), train, COLUMNS, out_of_fold=True)
    targets = column(train, "y")
    targets[row] = new_target
    changed = train.set_column(
        train.schema.get_field_index("y"), "y", pa.array(targets, pa.float64())
    )
    after = apply(fit_on(encoders, changed), changed, COLUMNS, out_of_fold=True)
    for name in ("c", "n"):  # every row of the changed row's fold is untouched
        same_fold = range(row % folds, train.num_rows, folds)
        assert [column(before, name)[i].hex() for i in same_fold] == [
            column(after, name)[i].hex() for i in same_fold
        ]


def test_unique_categories_encode_out_of_fold_as_the_other_folds_prior() -> None:
    # Each category once: in-fold encoding would hand each row its own target.
    targets = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    train = pa.table({"c": ["a", "b", "c", "d", "e", "f"], "y": targets})
    fitted = fit(
        [TargetEncoder("t:c", target="y", folds=3, smoothing=1.0)], train, COLUMNS, fingerprint="f"
    )
    out_of_fold = column(apply(fitted, train, COLUMNS, out_of_fold=True), "c")
    for i, value in enumerate(out_of_fold):
        others = [y for j, y in enumerate(targets) if j % 3 != i % 3]
        assert value == float(np.mean(others))
    in_fold = column(apply(fitted, train, COLUMNS), "c")
    assert [round(v, 6) for v in in_fold] == [round((y + 0.5) / 2, 6) for y in targets]  # leaks
    with pytest.raises(InputError, match="6 training rows"):
        apply(fitted, train.slice(1), COLUMNS, out_of_fold=True)


# -- errors ----------------------------------------------------------------------------


def test_errors_name_what_is_wrong() -> None:
    table = pa.table(
        {"x": [1.0, 2.0], "c": ["a", "b"], "s": ["1", "2"], "y": [0, 1], "f": [0.5, 1.5]}
    )
    cases: list[tuple[list[ModelTransform], dict[str, str], pa.Table, str]] = [
        ([StandardScaler("t:x")], {}, table, "no column is given"),
        ([StandardScaler("t:x")], {"t:x": "missing"}, table, "'missing' is not in the table"),
        (
            [StandardScaler("t:s")],
            {"t:s": "s"},
            table,
            "needs numbers, but the column holds string",
        ),
        (
            [TargetEncoder("t:c", target="label")],
            COLUMNS,
            table,
            "target column 'label' is not in the table",
        ),
        (
            [TargetEncoder("t:c", target="s", folds=2)],
            COLUMNS,
            table,
            "target column 's': needs numbers",
        ),
        ([TargetEncoder("t:c", target="y", folds=3)], COLUMNS, table, "at least 3 rows"),
        ([StandardScaler("t:x")], COLUMNS, table.slice(0, 0), "empty table"),
        ([OneHot("t:f")], {"t:f": "f"}, table, "not double values .Bucketize a float"),
        ([OneHot("t:c"), OrdinalEncoder("t:c")], COLUMNS, table, "follows a OneHot"),
        (
            [StandardScaler("t:x")],
            {"t:x": "x"},
            pa.table({"x": [None, float("nan")]}),
            "no values to fit on",
        ),
        (
            [StandardScaler("t:x")],
            {"t:x": "x"},
            pa.table({"x": [1.0, float("inf")]}),
            "not a finite number",
        ),
        (
            [Impute("t:c", strategy="constant", value=1)],
            COLUMNS,
            table,
            "does not fit a column of string",
        ),
    ]
    for transforms, columns, data, message in cases:
        with pytest.raises(InputError, match=message):
            fit(transforms, data, columns, fingerprint="f")
    nulls = pa.table({"c": ["a", "b"], "y": [1.0, None]})
    with pytest.raises(InputError, match="target column 'y' has nulls"):
        fit([TargetEncoder("t:c", target="y", folds=2)], nulls, COLUMNS, fingerprint="f")
    fitted = fit([StandardScaler("t:x"), OneHot("t:c")], table, COLUMNS, fingerprint="f")
    with pytest.raises(InputError, match="needs numbers, but the column holds string"):
        apply(fitted, table.set_column(0, "x", table.column("s")), COLUMNS)
    with pytest.raises(InputError, match="fitted on string values, not int64"):
        apply(fitted, table.set_column(1, "c", pa.array([1, 2])), COLUMNS)
    with pytest.raises(InputError, match="not a fitted-transforms artifact"):
        FittedTransforms.from_json(
            {
                **fitted.to_json(),
                "transforms": [{"transform": {"type": "one_hot", "feature": "t:c"}, "params": {}}],
            }
        )


def test_definitions_validate_and_write_default_free_specs() -> None:
    assert OneHot("v:f").to_spec() == {"type": "one_hot", "feature": "v:f"}
    encoder = TargetEncoder("v:f", target="is_fraud", smoothing=10)
    assert encoder.to_spec() == {"type": "target_encoder", "feature": "v:f", "target": "is_fraud"}
    bucketize = Bucketize("v:f", boundaries=[0, 10])
    assert bucketize.to_spec() == {"type": "bucketize", "feature": "v:f", "boundaries": [0.0, 10.0]}
    for transform in (
        encoder,
        bucketize,
        Impute("v:f", strategy="constant", value="x"),
        OneHot("v:f", max_categories=3),
    ):
        assert as_model_transform(json.loads(json.dumps(transform.to_spec()))) == transform
    bad = {
        "'vf' is not a feature reference": lambda: StandardScaler("vf"),
        "strictly increasing": lambda: Bucketize("v:f", boundaries=[1, 1]),
        "value is needed with strategy='constant'": lambda: Impute("v:f", strategy="constant"),
        "field 'folds'": lambda: TargetEncoder("v:f", target="y", folds=1),
        "field 'min_frequency'": lambda: OneHot("v:f", min_frequency=0),
        "unknown type 'scaler'": lambda: as_model_transform({"type": "scaler", "feature": "v:f"}),
        "field 'extra': unknown field": lambda: Log1p("v:f", extra=1),
    }
    for message, make in bad.items():
        with pytest.raises(DefinitionError, match=message):
            make()


# -- fingerprints ----------------------------------------------------------------------


def test_fingerprint_depends_on_values_not_layout() -> None:
    table = pa.table(
        {
            "id": pa.array([1, 2, None, 4], pa.int64()),
            "s": ["a", None, "ccc", ""],
            "t": pa.array([0, 1, 2, None], pa.timestamp("us", tz="UTC")),
            "l": [[1], None, [], [2, 3]],
        }
    )
    names = ["id", "s", "t", "l"]
    reference = fingerprint_of(table, names)
    assert (
        fingerprint_of(pa.Table.from_batches(table.to_batches(max_chunksize=1)), names) == reference
    )
    narrower = table.set_column(0, "id", table.column("id").cast(pa.int32()))
    assert fingerprint_of(narrower, names) == reference
    padded = pa.concat_tables(
        [pa.table({n: pa.array([None], table.schema.field(n).type) for n in names}), table]
    )
    assert fingerprint_of(padded.slice(1), names) == reference
    # A null slot's undefined bytes are never read.
    garbage = pa.Array.from_buffers(
        pa.int64(),
        4,
        [table.column("id").chunk(0).buffers()[0], pa.py_buffer(np.array([1, 2, 99, 4]).tobytes())],
    )
    assert fingerprint_of(table.set_column(0, "id", garbage), names) == reference
    assert fingerprint_of(table, ["s", "id", "t", "l"]) != reference
    assert fingerprint_of(table.slice(1), names) != reference
    assert (
        fingerprint_of(table.set_column(1, "s", pa.array(["a", "", "ccc", ""])), names) != reference
    )
