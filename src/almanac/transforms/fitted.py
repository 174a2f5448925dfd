"""Fitted model transforms: learn once from a training set, apply the same everywhere.

`fit` learns each declared transform's parameters from a training table (a scaler's
mean, an encoder's categories, a target encoder's per-fold encodings) into a
`FittedTransforms`, whose `to_json` is the artifact the registry stores. `apply` runs
them on any table: a training set of millions of rows, or the one row of an online
request. The code is the same for both and has no cross-row dependence, so a row's
output is bit-for-bit the same whatever table it comes in; the one exception is
``out_of_fold=True`` (target encoders on the rows they were fitted on), which depends
on the row's position. Formulas and rules: docs/transforms.md.

Values are Arrow columns, computed with Arrow compute and NumPy; transforms of one
feature run in the order declared, each on the previous one's output.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from almanac.definitions.model_transforms import (
    UNKNOWN,
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

# Up to this many rows, categories are looked up in a Python dict: Arrow's `index_in`
# builds a hash table of every category on each call (milliseconds for 100k of them).
# Both find exactly the same positions.
SMALL_BATCH_ROWS = 64
# The kinds of values parameters are kept as (any integer as int64, a decimal as float64).
KINDS: dict[str, pa.DataType] = dict(
    int64=pa.int64(), float64=pa.float64(), string=pa.string(), bool=pa.bool_()
)
CATEGORY_KINDS = ("int64", "string", "bool")

Kernel = Callable[[pa.Array, bool], list[pa.Array]]
# One-row one-hot columns, shared (Arrow data is immutable; chunked, as tables hold them).
_ZERO, _ONE = pa.chunked_array([[0.0]]), pa.chunked_array([[1.0]])


# -- the fitted artifact ---------------------------------------------------------------


@dataclass(frozen=True)
class FittedTransform:
    """One declared transform and what it learned (plain JSON; empty when nothing)."""

    transform: ModelTransform
    params: Mapping[str, Any]

    def output_columns(self, column: str) -> list[str]:
        """The names the column becomes: itself, or a one-hot encoder's columns."""
        if isinstance(self.transform, OneHot):
            return self.transform.output_columns(column, self.params["categories"])
        return [column]

    def output_fields(self, column: str, outputs: list[pa.Array]) -> list[pa.Field]:
        """`output_columns` as Arrow fields typed like `outputs` (each kind's output types
        are fixed; kept, as a one-hot encoder makes many, for every request)."""
        if column not in self._fields:
            names = self.output_columns(column)
            fields = [pa.field(n, o.type) for n, o in zip(names, outputs, strict=True)]
            self._fields[column] = fields
        return self._fields[column]

    def run(self, values: pa.Array, out_of_fold: bool = False) -> list[pa.Array]:
        """The output column(s) for `values`, one per `output_columns` (Arrow arrays;
        chunked ones from a one-hot encoder given one row)."""
        return self._kernel(values, out_of_fold)

    @cached_property
    def _fields(self) -> dict[str, list[pa.Field]]:
        return {}

    @cached_property
    def _kernel(self) -> Kernel:
        # Compiled once per artifact: lookup tables and arrays are reused by every call.
        return _KIND_CODE[type(self.transform)][1](self.transform, self.params)


@dataclass(frozen=True)
class FittedTransforms:
    """Every transform of a feature service, fitted on one training set.

    `fingerprint` identifies that training set (`fingerprint_of`) and `num_rows` is its
    length: out-of-fold target encoding applies to those rows only."""

    transforms: tuple[FittedTransform, ...]
    fingerprint: str
    num_rows: int

    FORMAT: ClassVar[int] = 1

    @property
    def features(self) -> list[str]:
        """The transformed features (``view:feature``), in declared order."""
        return list(dict.fromkeys(step.transform.feature for step in self.transforms))

    def output_columns(self, feature: str, column: str) -> list[str]:
        """The names `feature`'s column (named `column`) has once transformed."""
        steps = [step for step in self.transforms if step.transform.feature == feature]
        return steps[-1].output_columns(column) if steps else [column]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (dicts, lists, strings, finite floats, ints, booleans): Python's
        `json` writes floats by `repr`, so a round trip gives every bit back."""
        return {
            "format": self.FORMAT,
            "fingerprint": self.fingerprint,
            "num_rows": self.num_rows,
            "transforms": [
                {"transform": step.transform.to_spec(), "params": copy.deepcopy(dict(step.params))}
                for step in self.transforms
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FittedTransforms:
        """The inverse of `to_json`; a malformed artifact is an `InputError`."""
        try:
            if data["format"] != cls.FORMAT:
                raise InputError(
                    f"fitted transforms of format {data['format']!r}: this Almanac reads "
                    f"format {cls.FORMAT}"
                )
            steps = []
            for item in data["transforms"]:
                transform = as_model_transform(item["transform"])
                step = FittedTransform(transform, copy.deepcopy(dict(item["params"])))
                step._kernel  # noqa: B018  # compiled now: a missing parameter shows here
                steps.append(step)
            return cls(tuple(steps), str(data["fingerprint"]), int(data["num_rows"]))
        except (KeyError, TypeError, ValueError, DefinitionError) as error:
            raise InputError(f"not a fitted-transforms artifact: {error!r}") from None


# -- fit and apply ---------------------------------------------------------------------


def fit(
    transforms: Sequence[ModelTransform],
    table: pa.Table,
    columns: Mapping[str, str],
    *,
    fingerprint: str,
) -> FittedTransforms:
    """Learn `transforms` from `table`, where `columns` maps each feature (``view:feature``)
    to its column; target encoders read their target column from `table` by name.

    Transforms of one feature are fitted in declared order, each on the previous ones'
    output (out of fold, as the model will be trained on it); nothing may follow a
    OneHot of the same feature."""
    declared = [as_model_transform(t) for t in transforms]
    if table.num_rows == 0:
        raise InputError("cannot fit model transforms on an empty table")
    named = [columns[f] for f in {t.feature for t in declared} if f in columns]
    if len(set(named)) != len(named):
        raise InputError("two transformed features are given the same column")
    current: dict[str, pa.Array] = {}
    expanded: set[str] = set()
    steps = []
    for transform in declared:
        column = _column_of(transform, table, columns)
        if transform.feature in expanded:
            raise InputError(
                f"{transform.label}: follows a OneHot of the same feature, whose output "
                "is several columns"
            )
        values = current[column] if column in current else _plain(table.column(column))
        with np.errstate(all="ignore"):  # an overflow shows as a non-finite parameter
            params = _KIND_CODE[type(transform)][0](transform, values, table)
        _check_finite(params, transform.label)
        step = FittedTransform(transform, params)
        if isinstance(transform, OneHot):
            expanded.add(transform.feature)
        else:
            current[column] = step.run(values, True)[0]
        steps.append(step)
    return FittedTransforms(tuple(steps), fingerprint, table.num_rows)


def apply(
    fitted: FittedTransforms,
    table: pa.Table,
    columns: Mapping[str, str],
    *,
    out_of_fold: bool = False,
) -> pa.Table:
    """`table` with each transformed feature's column replaced, at its position, by its
    output column(s). `out_of_fold=True` is for the training rows the transforms were
    fitted on, in the same order: target encoders then give each row the encoding
    learned without its fold; it changes nothing else."""
    if out_of_fold and table.num_rows != fitted.num_rows:
        raise InputError(
            f"out-of-fold encoding applies to the {fitted.num_rows} training rows the "
            f"transforms were fitted on; this table has {table.num_rows}"
        )
    current: dict[str, pa.Array] = {}
    replaced: dict[str, tuple[list[pa.Field], list[pa.Array]]] = {}
    for step in fitted.transforms:
        column = _column_of(step.transform, table, columns)
        values = current[column] if column in current else _plain(table.column(column))
        outputs = step.run(values, out_of_fold)
        current[column] = outputs[0]
        replaced[column] = (step.output_fields(column, outputs), outputs)
    # Column by column: each call is C++ over the schema, while rebuilding the table from
    # Python objects would cost ~1 µs for every column of a wide table.
    out, original, added = table, table.schema, set()
    for column, (fields, outputs) in replaced.items():
        at = out.schema.get_field_index(column)
        if fields[0].name == column:
            out = out.set_column(at, fields[0], outputs[0])
            continue
        for field in fields:  # a one-hot encoder's columns
            if field.name in added or original.get_all_field_indices(field.name):
                raise InputError(f"one-hot column {field.name!r} is already in the table")
            added.add(field.name)
        out = out.remove_column(at)
        for offset, (field, output) in enumerate(zip(fields, outputs, strict=True)):
            out = out.add_column(at + offset, field, output)
    return out


# -- per kind: what is learned (fit) and how it is applied (compile) -------------------


def _fit_scaler(transform: Any, values: pa.Array, table: pa.Table) -> dict[str, Any]:
    x = _present_floats(values, transform.label)
    if isinstance(transform, StandardScaler):  # NumPy's pairwise sums; population std
        return {"mean": float(np.mean(x)), "std": float(np.std(x))}
    if isinstance(transform, MinMaxScaler):
        return {"min": float(np.min(x)), "max": float(np.max(x))}
    x = np.sort(x)
    return {"median": quantile(x, 0.5), "iqr": quantile(x, 0.75) - quantile(x, 0.25)}


def _fit_nothing(transform: Any, values: pa.Array, table: pa.Table) -> dict[str, Any]:
    _floats(values, transform.label)  # only checks that the column holds numbers
    return {}


def _fit_impute(transform: Impute, values: pa.Array, table: pa.Table) -> dict[str, Any]:
    label = transform.label
    if transform.strategy in ("mean", "median"):
        x = _present_floats(values, label)
        fill = float(np.mean(x)) if transform.strategy == "mean" else quantile(np.sort(x), 0.5)
        return {"dtype": "float64", "value": fill}
    kind = _kind_of(values.type)
    if kind == "other":
        raise InputError(f"{label}: cannot impute {values.type} values")
    if transform.strategy == "constant":
        kind, value = _constant(transform.value, kind, label)
        return {"dtype": kind, "value": value}
    counts = _value_counts(_as_kind(values, kind, label)) if kind else []
    if not counts:
        raise InputError(f"{label}: the column has no values to fit on (all null)")
    value, _ = min(counts, key=lambda pair: (-pair[1], pair[0]))  # ties: the smallest value
    return {"dtype": kind, "value": value}


def _fit_one_hot(transform: OneHot, values: pa.Array, table: pa.Table) -> dict[str, Any]:
    kind = _category_kind(values, transform.label)
    counts = _value_counts(_as_kind(values, kind, transform.label))
    frequent = [pair for pair in counts if pair[1] >= transform.min_frequency]
    ranked = sorted(frequent, key=lambda pair: (-pair[1], pair[0]))
    categories = [value for value, _ in ranked[: transform.max_categories]]
    if f"={UNKNOWN}" in transform.output_columns("", categories)[:-1]:
        raise InputError(f"{transform.label}: no category may be named {UNKNOWN!r}")
    return {"dtype": kind, "categories": categories}


def _fit_ordinal(transform: OrdinalEncoder, values: pa.Array, table: pa.Table) -> dict[str, Any]:
    kind = _category_kind(values, transform.label)
    counts = _value_counts(_as_kind(values, kind, transform.label))
    return {"dtype": kind, "categories": sorted(value for value, _ in counts)}


def _fit_target(transform: TargetEncoder, values: pa.Array, table: pa.Table) -> dict[str, Any]:
    label, folds, smoothing = transform.label, transform.folds, transform.smoothing
    kind = _category_kind(values, label)
    y = _target(transform, table)
    if len(y) < folds:
        raise InputError(f"{label}: needs at least {folds} rows (one per fold); got {len(y)}")
    categories = sorted(value for value, _ in _value_counts(_as_kind(values, kind, label)))
    codes = _Lookup(categories, kind).codes(values, label)

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
        x = _floats(values, label)
        if scale == 0:
            out = np.where(np.isnan(x), np.nan, 0.0)
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                out = (x - shift) / scale
        return [pa.array(out, from_pandas=True)]  # NaN (a null or NaN input) → null

    return run


def _compile_log1p(transform: Log1p, params: Mapping[str, Any]) -> Kernel:
    def run(values: pa.Array, out_of_fold: bool) -> list[pa.Array]:
        x = _floats(values, transform.label)
        # Arrow's log1p is the C library's, element by element (NumPy's may be SIMD
        # code that differs by CPU): the same bits for a row in any batch, on any CPU.
        logs = pc.log1p(pa.array(x)).to_numpy()
        return [pa.array(np.where(x > -1, logs, np.nan), from_pandas=True)]

    return run


def _compile_bucketize(transform: Bucketize, params: Mapping[str, Any]) -> Kernel:
    boundaries = np.array(transform.boundaries, dtype=np.float64)

    def run(values: pa.Array, out_of_fold: bool) -> list[pa.Array]:
        x = _floats(values, transform.label)
        buckets = np.searchsorted(boundaries, x, side="right").astype(np.int64)
        return [pa.array(buckets, type=pa.int64(), mask=np.isnan(x))]

    return run


def _compile_impute(transform: Impute, params: Mapping[str, Any]) -> Kernel:
    kind, fill = params["dtype"], params["value"]
    scalar = pa.scalar(fill, KINDS[kind])

    def run(values: pa.Array, out_of_fold: bool) -> list[pa.Array]:
        if kind == "float64":  # NaN counts as missing too
            x = _floats(values, transform.label)
            return [pa.array(np.where(np.isnan(x), fill, x))]
        return [pc.fill_null(_as_kind(values, kind, transform.label), scalar)]

    return run


def _compile_one_hot(transform: OneHot, params: Mapping[str, Any]) -> Kernel:
    lookup = _Lookup(params["categories"], params["dtype"])
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
    lookup = _Lookup(params["categories"], params["dtype"])

    def run(values: pa.Array, out_of_fold: bool) -> list[pa.Array]:
        return [pa.array(lookup.codes(values, transform.label), type=pa.int64())]

    return run


def _compile_target(transform: TargetEncoder, params: Mapping[str, Any]) -> Kernel:
    lookup = _Lookup(params["categories"], params["dtype"])
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


Fit = Callable[[Any, pa.Array, pa.Table], dict[str, Any]]
Compile = Callable[[Any, Mapping[str, Any]], Kernel]
_KIND_CODE: dict[type, tuple[Fit, Compile]] = {
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


# -- helpers ---------------------------------------------------------------------------


def quantile(ascending: np.ndarray, p: float) -> float:
    """The p-quantile of sorted values by linear interpolation (NumPy's default method,
    written out so that it never changes): with h = (n - 1)·p and i = ⌊h⌋,
    ``x[i] + (h - i)·(x[i+1] - x[i])``."""
    h = (len(ascending) - 1) * p
    i = math.floor(h)
    low = float(ascending[i])
    return low if h == i else low + (h - i) * (float(ascending[i + 1]) - low)


class _Lookup:
    """Positions of values among fitted categories: -1 for anything else and null."""

    def __init__(self, categories: list[Any], kind: str) -> None:
        self.kind = kind
        self.value_set = pa.array(categories, type=KINDS[kind])
        self.positions = {category: i for i, category in enumerate(categories)}

    def codes(self, values: pa.Array, label: str) -> np.ndarray:
        values = _as_kind(values, self.kind, label)
        if len(values) <= SMALL_BATCH_ROWS:
            find = self.positions.get
            return np.array([find(v, -1) for v in values.to_pylist()], dtype=np.int64)
        found = pc.index_in(values, value_set=self.value_set).fill_null(-1)
        return np.asarray(found.to_numpy(), dtype=np.int64)


def _plain(column: pa.ChunkedArray) -> pa.Array:
    """One array of plain (not dictionary-encoded) values."""
    values = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return values.dictionary_decode() if pa.types.is_dictionary(values.type) else values


def _floats(values: pa.Array, label: str) -> np.ndarray:
    """Numbers (or booleans) as float64, nulls as NaN; anything else is refused."""
    if _kind_of(values.type) not in ("int64", "float64", "bool", None):
        raise InputError(f"{label}: needs numbers, but the column holds {values.type} values")
    if values.type != pa.float64():
        values = pc.cast(values, pa.float64(), safe=False)  # int64 beyond 2**53 rounds
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def _present_floats(values: pa.Array, label: str) -> np.ndarray:
    x = _floats(values, label)
    present: np.ndarray = x[~np.isnan(x)]
    if present.size == 0:
        raise InputError(f"{label}: the column has no values to fit on (all null)")
    return present


def _kind_of(data_type: pa.DataType) -> str | None:
    """Which of `KINDS` a column's values are ("other" if none; None for only nulls)."""
    for kind, test in _KIND_TESTS:
        if test(data_type):
            return kind
    return None if pa.types.is_null(data_type) else "other"


_KIND_TESTS: list[tuple[str, Callable[[pa.DataType], bool]]] = [
    ("int64", pa.types.is_integer),
    ("float64", lambda t: pa.types.is_floating(t) or pa.types.is_decimal(t)),
    ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
    ("bool", pa.types.is_boolean),
]


def _category_kind(values: pa.Array, label: str) -> str:
    """The kind of a categorical column: integers, strings or booleans."""
    kind = _kind_of(values.type) or "string"  # only nulls: no category either way
    if kind not in CATEGORY_KINDS:
        hint = " (Bucketize a float feature first)" if kind == "float64" else ""
        raise InputError(
            f"{label}: takes strings, integers or booleans, not {values.type} values{hint}"
        )
    return kind


def _as_kind(values: pa.Array, kind: str, label: str) -> pa.Array:
    """`values` as the kind the transform was fitted on; another kind is an error."""
    actual = _kind_of(values.type)
    if actual is not None and actual != kind:
        raise InputError(f"{label}: was fitted on {kind} values, not {values.type}")
    return values if values.type == KINDS[kind] else pc.cast(values, KINDS[kind])


def _value_counts(values: pa.Array) -> list[tuple[Any, int]]:
    """(value, count) of the values present (never null, never NaN)."""
    present = values.drop_null()
    if pa.types.is_floating(present.type):
        present = present.filter(pc.invert(pc.is_nan(present)))
    counted = pc.value_counts(present)
    values_, counts = counted.field("values").to_pylist(), counted.field("counts").to_pylist()
    return list(zip(values_, counts, strict=True))


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
    y = _floats(_plain(table.column(name)), label)
    if np.isnan(y).any():
        raise InputError(f"{label} has nulls or NaN")
    return y


def _column_of(transform: ModelTransform, table: pa.Table, columns: Mapping[str, str]) -> str:
    column = columns.get(transform.feature)
    if column is None:
        raise InputError(f"{transform.label}: no column is given for its feature")
    if table.schema.get_field_index(column) < 0:
        raise InputError(
            f"{transform.label}: column {column!r} is not in the table "
            f"(columns: {', '.join(table.column_names)})"
        )
    return column


def _check_finite(params: Any, label: str) -> None:
    """Parameters go into JSON, which has no NaN or infinity (nor does a sane model)."""
    try:
        json.dumps(params, allow_nan=False)
    except ValueError:
        raise InputError(
            f"{label}: a fitted parameter is not a finite number (the column has infinite "
            "values, or values too large to add up)"
        ) from None


# -- fingerprints ----------------------------------------------------------------------


def fingerprint_of(table: pa.Table, columns: Sequence[str]) -> str:
    """A SHA-256 of `columns`' names and values in row order: the same for the same
    values however the table is chunked, sliced or typed (integers of any width hash as
    int64, floats as float64, strings and binaries as bytes, dictionaries decoded)."""
    digest = hashlib.sha256(f"rows={table.num_rows}".encode())
    for name in columns:
        if table.schema.get_field_index(name) < 0:
            raise InputError(f"fingerprint: column {name!r} is not in the table")
        digest.update(f"\x00column={name}\x00".encode())
        _digest(digest, _plain(table.column(name)))
    return digest.hexdigest()


def _digest(digest: Any, values: pa.Array) -> None:
    """Feed one array's nulls and values into `digest` in a canonical form: the bytes
    under a null are undefined in Arrow, so they are never read."""
    data_type = values.type
    valid = np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    digest.update(np.packbits(valid).tobytes())
    kind = _kind_of(data_type)
    if kind == "string" or pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        filled = pc.fill_null(values.cast(pa.large_binary()), b"")
        _, offsets, body = filled.buffers()
        ends = np.frombuffer(offsets, dtype=np.int64)[filled.offset :][: len(filled) + 1]
        digest.update(b"bytes" + np.diff(ends).tobytes())
        if body is not None and len(ends):
            digest.update(memoryview(body)[int(ends[0]) : int(ends[-1])])
    elif kind in ("int64", "bool"):
        digest.update(kind.encode() + pc.fill_null(values.cast(pa.int64()), 0).to_numpy().tobytes())
    elif kind == "float64":
        numbers = pc.fill_null(values.cast(pa.float64()), 0.0).to_numpy()
        digest.update(b"float64" + np.where(np.isnan(numbers), np.nan, numbers).tobytes())
    elif any(test(data_type) for test in _TIME_TESTS):  # their integers, with unit and zone
        width = pa.int32() if data_type.bit_width == 32 else pa.int64()
        numbers = pc.fill_null(values.view(width), 0).cast(pa.int64()).to_numpy()
        digest.update(str(data_type).encode() + numbers.tobytes())
    else:  # lists, structs and rarer types: their Python values (None for a null)
        digest.update(repr(values.to_pylist()).encode())


_TIME_TESTS = (pa.types.is_timestamp, pa.types.is_date, pa.types.is_time, pa.types.is_duration)
