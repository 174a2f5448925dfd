"""Each kind of fitted transform: what it learns (fit) and how it is applied (compile).

`KIND_CODE` maps each declared `ModelTransform` class to its two functions: the fit
reads a column (and, for a target encoder, the table's target) into plain-JSON
parameters; the compile turns those parameters into a `Kernel`, compiled once per
artifact, that `FittedTransform.run` calls on every table. Formulas: docs/transforms.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from almanac.definitions.model_transforms import (
    UNKNOWN,
    Bucketize,
    Impute,
    Log1p,
    MinMaxScaler,
    OneHot,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
    TargetEncoder,
)
from almanac.errors import InputError
from almanac.transforms.fitted import (  # CategoryLookup is there, beside SMALL_BATCH_ROWS
    CategoryLookup,
    Compile,
    Fit,
    Kernel,
)
from almanac.transforms.fitted_values import (
    KINDS,
    as_kind,
    category_kind,
    floats,
    kind_of,
    plain,
    present_floats,
    quantile,
    value_counts,
)

# One-row one-hot columns, shared (Arrow data is immutable; chunked, as tables hold them).
_ZERO, _ONE = pa.chunked_array([[0.0]]), pa.chunked_array([[1.0]])


def _fit_scaler(transform: Any, values: pa.Array, table: pa.Table) -> dict[str, Any]:
    x = present_floats(values, transform.label)
    if isinstance(transform, StandardScaler):  # NumPy's pairwise sums; population std
        return {"mean": float(np.mean(x)), "std": float(np.std(x))}
    if isinstance(transform, MinMaxScaler):
        return {"min": float(np.min(x)), "max": float(np.max(x))}
    x = np.sort(x)
    return {"median": quantile(x, 0.5), "iqr": quantile(x, 0.75) - quantile(x, 0.25)}


def _fit_nothing(transform: Any, values: pa.Array, table: pa.Table) -> dict[str, Any]:
    floats(values, transform.label)  # only checks that the column holds numbers
    return {}


def _fit_impute(transform: Impute, values: pa.Array, table: pa.Table) -> dict[str, Any]:
    label = transform.label
    if transform.strategy in ("mean", "median"):
        x = present_floats(values, label)
        fill = float(np.mean(x)) if transform.strategy == "mean" else quantile(np.sort(x), 0.5)
        return {"dtype": "float64", "value": fill}
    kind = kind_of(values.type)
    if kind == "other":
        raise InputError(f"{label}: cannot impute {values.type} values")
    if transform.strategy == "constant":
        kind, value = _constant(transform.value, kind, label)
        return {"dtype": kind, "value": value}
    counts = value_counts(as_kind(values, kind, label)) if kind else []
    if not counts:
        raise InputError(f"{label}: the column has no values to fit on (all null)")
    value, _ = min(counts, key=lambda pair: (-pair[1], pair[0]))  # ties: the smallest value
    return {"dtype": kind, "value": value}


def _fit_one_hot(transform: OneHot, values: pa.Array, table: pa.Table) -> dict[str, Any]:
    kind = category_kind(values, transform.label)
    counts = value_counts(as_kind(values, kind, transform.label))
    frequent = [pair for pair in counts if pair[1] >= transform.min_frequency]
    ranked = sorted(frequent, key=lambda pair: (-pair[1], pair[0]))
    categories = [value for value, _ in ranked[: transform.max_categories]]
    if f"={UNKNOWN}" in transform.output_columns("", categories)[:-1]:
        raise InputError(f"{transform.label}: no category may be named {UNKNOWN!r}")
    return {"dtype": kind, "categories": categories}


def _fit_ordinal(transform: OrdinalEncoder, values: pa.Array, table: pa.Table) -> dict[str, Any]:
    kind = category_kind(values, transform.label)
    counts = value_counts(as_kind(values, kind, transform.label))
    return {"dtype": kind, "categories": sorted(value for value, _ in counts)}


def _fit_target(transform: TargetEncoder, values: pa.Array, table: pa.Table) -> dict[str, Any]:
    label, folds, smoothing = transform.label, transform.folds, transform.smoothing
    kind = category_kind(values, label)
    y = _target(transform, table)
    if len(y) < folds:
        raise InputError(f"{label}: needs at least {folds} rows (one per fold); got {len(y)}")
    categories = sorted(value for value, _ in value_counts(as_kind(values, kind, label)))
    codes = CategoryLookup(categories, kind).codes(values, label)

    def encode(rows: np.ndarray) -> tuple[float, np.ndarray]:
        """The prior and per-category encodings learned from `rows` (a boolean mask)."""
        prior = float(np.mean(y[rows]))
        seen = rows & (codes >= 0)
        count = np.bincount(codes[seen], minlength=len(categories)).astype(np.float64)
        total = np.bincount(codes[seen], weights=y[seen], minlength=len(categories))
        with np.errstate(invalid="ignore", divide="ignore"):  # count 0: the prior instead
            smoothed = (total + smoothing * prior) / (count + smoothing)
        return prior, np.where(count > 0, smoothed, prior)

    prior, encodings = encode(np.ones(len(y), dtype=bool))
    fold = np.arange(len(y)) % folds
    # Each fold's encodings come from the other folds' rows only: its own targets are
    # never read, not even through a subtraction from the totals (rounding would leak).
    per_fold = [encode(fold != k) for k in range(folds)]
    fold_priors, fold_encodings = [p for p, _ in per_fold], [e.tolist() for _, e in per_fold]
    return dict(dtype=kind, categories=categories, prior=prior, encodings=encodings.tolist(),
                fold_priors=fold_priors, fold_encodings=fold_encodings)  # fmt: skip


def _compile_scaler(transform: Any, params: Mapping[str, Any]) -> Kernel:
    if isinstance(transform, StandardScaler):
        shift, scale = params["mean"], params["std"]
    elif isinstance(transform, MinMaxScaler):
        shift, scale = params["min"], params["max"] - params["min"]
    else:
        shift, scale = params["median"], params["iqr"]
    label = transform.label

    def run(values: pa.Array, out_of_fold: bool) -> list[pa.Array]:
        x = floats(values, label)
        if scale == 0:
            out = np.where(np.isnan(x), np.nan, 0.0)
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                out = (x - shift) / scale
        return [pa.array(out, from_pandas=True)]  # NaN (a null or NaN input) → null

    return run


def _compile_log1p(transform: Log1p, params: Mapping[str, Any]) -> Kernel:
    def run(values: pa.Array, out_of_fold: bool) -> list[pa.Array]:
        x = floats(values, transform.label)
        # Arrow's log1p is the C library's, element by element (NumPy's may be SIMD
        # code that differs by CPU): the same bits for a row in any batch, on any CPU.
        logs = pc.log1p(pa.array(x)).to_numpy()
        return [pa.array(np.where(x > -1, logs, np.nan), from_pandas=True)]

    return run


def _compile_bucketize(transform: Bucketize, params: Mapping[str, Any]) -> Kernel:
    boundaries = np.array(transform.boundaries, dtype=np.float64)

    def run(values: pa.Array, out_of_fold: bool) -> list[pa.Array]:
        x = floats(values, transform.label)
        buckets = np.searchsorted(boundaries, x, side="right").astype(np.int64)
        return [pa.array(buckets, type=pa.int64(), mask=np.isnan(x))]

    return run


def _compile_impute(transform: Impute, params: Mapping[str, Any]) -> Kernel:
    kind, fill = params["dtype"], params["value"]
    scalar = pa.scalar(fill, KINDS[kind])

    def run(values: pa.Array, out_of_fold: bool) -> list[pa.Array]:
        if kind == "float64":  # NaN counts as missing too
            x = floats(values, transform.label)
            return [pa.array(np.where(np.isnan(x), fill, x))]
        return [pc.fill_null(as_kind(values, kind, transform.label), scalar)]

    return run


def _compile_one_hot(transform: OneHot, params: Mapping[str, Any]) -> Kernel:
    lookup = CategoryLookup(params["categories"], params["dtype"])
    width = len(params["categories"]) + 1  # the last column: unknown

    def run(values: pa.Array, out_of_fold: bool) -> list[pa.Array]:
        codes = lookup.codes(values, transform.label)
        rows = len(codes)
        if rows == 1:  # a request's row
            return [_ONE if i == codes[0] % width else _ZERO for i in range(width)]
        onehot = np.zeros((width, rows), dtype=np.float64)
        onehot[codes, np.arange(rows)] = 1.0  # code -1 (unknown) is the last row
        flat = pa.array(onehot.ravel())  # one buffer, sliced: cheaper than an array each
        return [flat.slice(i * rows, rows) for i in range(width)]

    return run


def _compile_ordinal(transform: OrdinalEncoder, params: Mapping[str, Any]) -> Kernel:
    lookup = CategoryLookup(params["categories"], params["dtype"])

    def run(values: pa.Array, out_of_fold: bool) -> list[pa.Array]:
        return [pa.array(lookup.codes(values, transform.label), type=pa.int64())]

    return run


def _compile_target(transform: TargetEncoder, params: Mapping[str, Any]) -> Kernel:
    lookup = CategoryLookup(params["categories"], params["dtype"])
    # The prior appended last, so that code -1 (unknown or null) finds it.
    full = np.array([*params["encodings"], params["prior"]], dtype=np.float64)
    by_fold = np.array(
        [[*e, p] for e, p in zip(params["fold_encodings"], params["fold_priors"], strict=True)],
        dtype=np.float64,
    )

    def run(values: pa.Array, out_of_fold: bool) -> list[pa.Array]:
        codes = lookup.codes(values, transform.label)
        if out_of_fold:
            out = by_fold[np.arange(len(codes)) % transform.folds, codes]
        else:
            out = full[codes]
        return [pa.array(out, type=pa.float64())]

    return run


KIND_CODE: dict[type, tuple[Fit, Compile]] = {
    StandardScaler: (_fit_scaler, _compile_scaler),
    MinMaxScaler: (_fit_scaler, _compile_scaler),
    RobustScaler: (_fit_scaler, _compile_scaler),
    Log1p: (_fit_nothing, _compile_log1p),
    Bucketize: (_fit_nothing, _compile_bucketize),
    Impute: (_fit_impute, _compile_impute),
    OneHot: (_fit_one_hot, _compile_one_hot),
    OrdinalEncoder: (_fit_ordinal, _compile_ordinal),
    TargetEncoder: (_fit_target, _compile_target),
}


# -- helpers of one kind each ----------------------------------------------------------


def _constant(value: Any, kind: str | None, label: str) -> tuple[str, Any]:
    """An imputed constant and its kind: the column's (an int may fill floats), or the
    value's own for a column of nulls only."""
    own = {bool: "bool", int: "int64", float: "float64", str: "string"}[type(value)]
    if kind == "float64" and own == "int64":
        return kind, float(value)
    if kind not in (own, None):
        raise InputError(f"{label}: value {value!r} does not fit a column of {kind} values")
    return own, value


def _target(transform: TargetEncoder, table: pa.Table) -> np.ndarray:
    label, name = f"{transform.label}: target column {transform.target!r}", transform.target
    if table.schema.get_field_index(name) < 0:
        raise InputError(f"{label} is not in the table (columns: {', '.join(table.column_names)})")
    y = floats(plain(table.column(name)), label)
    if np.isnan(y).any():
        raise InputError(f"{label} has nulls or NaN")
    return y
