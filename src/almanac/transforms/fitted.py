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
feature run in the order declared, each on the previous one's output. This module holds
the artifact, `fit` and `apply`; each kind's own code is in `fitted_kinds`, the column
helpers in `fitted_values`, `fingerprint_of` in `fingerprints`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from almanac.definitions.model_transforms import ModelTransform, OneHot, as_model_transform
from almanac.errors import DefinitionError, InputError
from almanac.transforms.fingerprints import fingerprint_of
from almanac.transforms.fitted_values import CATEGORY_KINDS, KINDS, as_kind, plain, quantile

__all__ = [
    "CATEGORY_KINDS",
    "KINDS",
    "SMALL_BATCH_ROWS",
    "CategoryLookup",
    "Compile",
    "Fit",
    "FittedTransform",
    "FittedTransforms",
    "Kernel",
    "apply",
    "fingerprint_of",
    "fit",
    "quantile",
]

# Up to this many rows, categories are looked up in a Python dict: Arrow's `index_in`
# builds a hash table of every category on each call (milliseconds for 100k of them).
# Both find exactly the same positions.
SMALL_BATCH_ROWS = 64

# What each kind provides (`fitted_kinds.KIND_CODE`): a fit, from a column (and the whole
# table, for a target) to parameters; a compile, from parameters to a `Kernel`, which maps
# a column's values (and whether out of fold) to its output column(s).
Kernel = Callable[[pa.Array, bool], list[pa.Array]]
Fit = Callable[[Any, pa.Array, pa.Table], dict[str, Any]]
Compile = Callable[[Any, Mapping[str, Any]], Kernel]


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
        # Imported here: fitted_kinds imports this module (for CategoryLookup).
        from almanac.transforms.fitted_kinds import KIND_CODE

        # Compiled once per artifact: lookup tables and arrays are reused by every call.
        return KIND_CODE[type(self.transform)][1](self.transform, self.params)


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
    # Imported here: fitted_kinds imports this module (for CategoryLookup).
    from almanac.transforms.fitted_kinds import KIND_CODE

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
        values = current[column] if column in current else plain(table.column(column))
        with np.errstate(all="ignore"):  # an overflow shows as a non-finite parameter
            params = KIND_CODE[type(transform)][0](transform, values, table)
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
        values = current[column] if column in current else plain(table.column(column))
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


# -- category lookup (the categorical kinds' codes) ------------------------------------


class CategoryLookup:
    """Positions of values among fitted categories: -1 for anything else and null."""

    def __init__(self, categories: list[Any], kind: str) -> None:
        self.kind = kind
        self.value_set = pa.array(categories, type=KINDS[kind])
        self.positions = {category: i for i, category in enumerate(categories)}

    def codes(self, values: pa.Array, label: str) -> np.ndarray:
        values = as_kind(values, self.kind, label)
        if len(values) <= SMALL_BATCH_ROWS:
            find = self.positions.get
            return np.array([find(v, -1) for v in values.to_pylist()], dtype=np.int64)
        found = pc.index_in(values, value_set=self.value_set).fill_null(-1)
        return np.asarray(found.to_numpy(), dtype=np.int64)


# -- helpers of fit and apply ----------------------------------------------------------


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
