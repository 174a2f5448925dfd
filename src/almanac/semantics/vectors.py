"""Feature vectors: a model's input as one matrix, the same offline and online.

`RetrievalJob.to_numpy()` and `OnlineResponse.to_numpy()` both come here, from Arrow
columns typed by the features' declared dtypes, so a training matrix and a serving
vector of the same values are the same arrays. The columns are the features in the
order requested (a feature service's declared order), never the entity columns or
labels; `columns` names them, so a model's input never depends on a dict's order.

- Every feature numeric (integers, floats, booleans): a float64 matrix, nulls as NaN.
- Otherwise an object matrix of Python values, nulls as None (encode strings before a
  numeric model).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def feature_matrix(table: pa.Table, columns: list[str]) -> np.ndarray:
    """`columns` of `table` as a rows × features matrix (see the module's rules)."""
    chosen = [table.column(name) for name in columns]
    numeric = all(
        pa.types.is_integer(c.type) or pa.types.is_floating(c.type) or pa.types.is_boolean(c.type)
        for c in chosen
    )
    out = np.empty((table.num_rows, len(columns)), dtype=np.float64 if numeric else object)
    for i, column in enumerate(chosen):
        if numeric:
            # Cast in Arrow: nulls become NaN whatever the type (booleans too).
            out[:, i] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        else:
            # Python values, None for every null (strings and numbers alike).
            out[:, i] = column.to_pylist()
    return out
