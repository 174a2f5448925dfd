"""A feature service's fitted transforms on an online response.

`transformed` applies the same `almanac.transforms.fitted.apply` as a training set gets,
to the rows of one request: a scaled feature keeps its name, a one-hot encoded one
becomes one column per category (``plan=pro``, ``plan=__unknown__``). Each output keeps
the status and event time of the feature it came from, so a NOT_FOUND feature stays
visible as such even when an imputer filled it in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from almanac.definitions.types import arrow_type, widest_dtype
from almanac.online.response import OnlineResponse
from almanac.transforms.fitted import FittedTransforms, apply


def transformed(
    response: OnlineResponse, fitted: FittedTransforms, columns: Mapping[str, str]
) -> OnlineResponse:
    """`response` with the service's transforms applied to its features (`columns`:
    each ``view:feature`` → its output name)."""
    present = {ref: name for ref, name in columns.items() if name in response.values}
    touched = [name for name in response.values if name in set(present.values())]
    # Only the transformed features become Arrow columns; the others pass through as is.
    table = pa.table({name: pa.array(response.values[name], type=arrow_type(response.dtypes[name])) for name in touched})  # fmt: skip
    result = apply(fitted, table, present)
    outputs: dict[str, list[tuple[str, pa.ChunkedArray]]] = {}
    origin = _origins(fitted, present, touched)
    for name, column in zip(result.column_names, result.columns, strict=True):
        outputs.setdefault(origin[name], []).append((name, column))
    values: dict[str, list[Any]] = {}
    statuses: dict[str, Any] = {}
    stamps: dict[str, Any] = {}
    dtypes = {key: response.dtypes[key] for key in response.join_keys if key in response.dtypes}
    times = response._event_timestamps
    for source, column in response.values.items():
        for name, output in outputs.get(source, [(source, None)]):
            values[name] = column if output is None else output.to_pylist()
            statuses[name] = response.statuses[source]
            stamps[name] = times[source]
            dtypes[name] = response.dtypes[source] if output is None else widest_dtype(output.type)
    out = OnlineResponse(response.join_keys, values, statuses, stamps, dtypes)
    out.read_time = response.read_time
    return out


def _origins(fitted: FittedTransforms, columns: Mapping[str, str], names: list[str]) -> dict[str, str]:  # fmt: skip
    """Each output column → the response column it comes from."""
    origin = {name: name for name in names}
    for ref, name in columns.items():
        for output in fitted.output_columns(ref, name):
            origin[output] = name
    return origin
