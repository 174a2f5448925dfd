"""Definitions checked against their sources' data at plan time.

A definition can be valid on its own and still not fit its data: a feature or an
aggregated column the source does not have (a typo), a sum over a text column. `plan`
(and so `apply`) reads the schema of each new or changed view's source — Parquet footers
or a query's plan, never the data — and names every such problem at once, instead of
letting the first training set or materialization fail. A SQL source or transformation
must be one read-only SELECT (`sources.check_select`): the check parses it with DuckDB's
parser before the schema is read, so nothing in a definition runs for effect here.

A source without data yet (an empty folder, a push source before its first push) and
a view with a Python transformation (its columns are known only by running it) are not
checked; retrieval reports their problems.
"""

from __future__ import annotations

import duckdb

from almanac.config import RepoConfig
from almanac.definitions.aggregation import AggregationView, input_dtypes
from almanac.definitions.feature_view import FeatureView
from almanac.definitions.transformations import PythonTransformation
from almanac.errors import DefinitionError, InputError
from almanac.offline.duckdb.transformations import scan_view
from almanac.registry.catalog import Catalog

# DuckDB types a sum, mean, stddev or variance can read as numbers.
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "REAL", "DECIMAL", "BOOLEAN")  # fmt: skip
_NEEDS_NUMBERS = ("sum", "mean", "stddev", "variance")


def check_views(
    con: duckdb.DuckDBPyConnection, config: RepoConfig, catalog: Catalog, names: list[str]
) -> None:
    """DefinitionError naming every column the views `names` read and their sources lack
    (or hold in a type an aggregation cannot use)."""
    problems: list[str] = []
    for name in names:
        view = catalog.view(name)
        if isinstance(view.transformation, PythonTransformation):
            continue
        source = catalog.source_of(view)
        try:
            scan = scan_view(con, config, source, view)
        except DefinitionError as error:  # SQL that is not one read-only SELECT
            problems.append(str(error))
            continue
        except InputError:
            continue  # unreadable: retrieval says why, with the file's name
        if scan.empty:
            continue
        problems += column_problems(catalog, view, scan.columns, scan.label or str(source.name))
    if problems:
        raise DefinitionError("; ".join(dict.fromkeys(problems)))


def column_problems(
    catalog: Catalog, view: FeatureView, have: dict[str, str], label: str
) -> list[str]:
    """What `view` reads that a source with columns `have` (name → DuckDB type name, or
    an engine's name of the same form: BIGINT, DOUBLE, VARCHAR...) lacks. `label` names
    the source. Engine-neutral: the Spark engine checks its own schemas with it."""
    source = catalog.source_of(view)
    kind = f"{type(view).__name__} '{view.name}'"
    problems: list[str] = []
    needed = [*catalog.join_keys(view), source.timestamp_field]
    missing = [column for column in needed if column not in have]
    if isinstance(view, AggregationView):
        missing += [c for c in input_dtypes(view.aggregations, view.columns) if c not in have]
        problems += _untyped_numbers(view, have, kind)
    else:
        missing += [f.name for f in view.features if f.name not in have]
    if missing:
        listed = ", ".join(f"'{m}'" for m in dict.fromkeys(missing))
        problems.append(
            f"{kind} reads {listed}, which {label} does not have (it has: {', '.join(have)})"
        )
    return problems


def _untyped_numbers(view: AggregationView, have: dict[str, str], label: str) -> list[str]:
    """Sums and means over columns the source holds as something other than numbers (a
    declared column type is the user's statement that the values convert)."""
    declared = {c.name for c in view.columns}
    out = []
    for aggregation in view.aggregations:
        column = aggregation.column
        if aggregation.function not in _NEEDS_NUMBERS or column is None or column in declared:
            continue
        kind = have.get(column)
        if kind is not None and not kind.upper().startswith(_NUMERIC):
            out.append(
                f"{label}: '{aggregation.function}' needs a numeric column; '{column}' is "
                f"{kind} in the source"
            )
    return out
