"""On-demand views at retrieval: one plan and one computation for both paths.

A request for features of on-demand views becomes an `OnDemandPlan`: the stored features
to fetch first (the requested ones and the views' hidden inputs, each under a working
name ``view:feature``), the request fields to take from the caller, and the on-demand
views to compute, inputs first. `compute` then runs each view on Arrow columns:

* expressions through an evaluator (the engine-neutral Arrow one by default; the DuckDB
  engine compiles them to SQL offline), cast to the declared types;
* functions through the user's function, in its mode (pandas, Arrow, Polars or plain
  Python lists), its result checked: exactly the declared features, one value per row,
  castable to the declared types; anything else is a `TransformationError` naming the view.

Offline the batch is the joined training rows; online it is the rows of one request. The
same plan and the same code serve both, so a feature cannot differ between them except
where an evaluator does (DuckDB's SQL vs Arrow; see docs/expressions.md).

A write-time view (`write_to_online=True`) runs the same steps when its source view's
rows are written online (`write_time_rows`), and an online plan (`stored=True`) reads its
stored values instead of computing it. Where the store has no row for an entity (never
written, or older than the source view's TTL), the view's value is what it computes from
a row of nulls (`null_row`): exactly what a training set computes when the point-in-time
join finds no row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from almanac.definitions.feature_view import Field
from almanac.definitions.on_demand import OnDemandView
from almanac.definitions.types import arrow_type, widest_dtype
from almanac.errors import InputError, TransformationError
from almanac.registry.catalog import Catalog, FeatureRef
from almanac.registry.on_demand import inputs, order, written_from
from almanac.semantics.rows import CREATED_TIMESTAMP, EVENT_TIMESTAMP

if TYPE_CHECKING:
    from almanac.semantics.expressions import Expr

# What evaluates a step's expressions: (input table, {feature: (expression, dtype)}) →
# a table of the features, in that order, typed as given.
ExpressionEvaluator = Callable[[pa.Table, dict[str, tuple["Expr", str]]], pa.Table]
REQUEST = "request"  # the working names of request fields: "request:<field>"
# Up to this many rows, an online request's expressions and plain-Python functions run on
# Python lists (`compute_rows`): building Arrow arrays would cost more than the work.
ROWS_AS_LISTS = 16


def working_name(view: str, feature: str) -> str:
    """A column's name while a request is computed: unique, and never a user's name."""
    return f"{view}:{feature}"


@dataclass
class Step:
    """One on-demand view to compute: its inputs by the names it reads them by."""

    view: OnDemandView
    inputs: dict[str, str]  # input column name → working name
    outputs: list[Field]
    expressions: dict[str, tuple[Expr, str]] = field(default_factory=dict)
    # Closures compiled once per plan (the online path reuses cached plans): Arrow ones,
    # and row-wise ones with the dtype each computes.
    _compiled: dict[str, Callable[..., pa.Array]] = field(default_factory=dict)
    _rows: dict[str, tuple[Callable[..., list[Any]], str]] = field(default_factory=dict)
    _function: Callable[..., Any] | None = None
    # A write-time view read from the online store (not computed), and its value for an
    # entity the store has no row for (computed once).
    stored: bool = False
    stored_input_types: dict[str, str] = field(default_factory=dict)  # working name → dtype
    _null_row: dict[str, Any] | None = None

    def working(self, feature: str) -> str:
        return working_name(self.view.name, feature)


@dataclass(frozen=True, eq=False)
class OnDemandPlan:
    base: list[FeatureRef]  # stored features to fetch, `output_name` = working name
    request: dict[str, str]  # request field → dtype
    steps: list[Step]  # inputs first
    outputs: list[tuple[str, str, str]]  # (output name, working name, dtype), as requested
    request_users: dict[str, str]  # request field → the on-demand view that needs it

    @cached_property
    def row_wise(self) -> bool:
        """Whether `compute_rows` can run every step (expressions and plain-Python
        functions; a pandas, Arrow or Polars function needs its frame)."""
        return all(s.stored or s.expressions or (s.view.function and s.view.function.mode == "python") for s in self.steps)  # fmt: skip

    @cached_property
    def inputs(self) -> list[FeatureRef]:
        """The stored features some step reads (a subset of `base`)."""
        read = {work for step in self.steps if not step.stored for work in step.inputs.values()}
        return [ref for ref in self.base if ref.output_name in read]


def plan_on_demand(
    catalog: Catalog, refs: list[FeatureRef], *, stored: bool = False
) -> OnDemandPlan | None:
    """The plan for `refs`, or None when none of them is an on-demand feature. With
    `stored` (online reads), write-time views are read from the store: their features
    are `base` refs of the view itself, and their inputs are not fetched."""
    wanted = [r.view for r in refs if r.view in catalog.on_demand_views]
    if not wanted:
        return None
    from almanac.semantics.expressions import columns, parse

    base: dict[str, FeatureRef] = {}
    for ref in refs:
        if ref.view not in catalog.on_demand_views:
            name = working_name(ref.view, ref.field.name)
            base.setdefault(name, FeatureRef(ref.view, ref.field, name))
    request: dict[str, str] = {}
    request_source: dict[str, str] = {}
    request_users: dict[str, str] = {}
    steps: list[Step] = []
    for name in order(catalog, list(dict.fromkeys(wanted))):
        view = catalog.on_demand_views[name]
        available = inputs(catalog, view)
        outputs = catalog.on_demand_fields(name)
        expressions = {}
        if view.expressions:
            dtypes = {f.name: f.dtype for f in outputs}
            expressions = {f: (parse(text), dtypes[f]) for f, text in view.expressions.items()}
            used: set[str] = set().union(*(columns(e) for e, _ in expressions.values()))
        else:
            used = set(available)
        step_inputs: dict[str, str] = {}
        if stored and view.write_to_online:
            for output in outputs:
                work = working_name(name, output.name)
                base.setdefault(work, FeatureRef(name, output, work))
            # Its inputs by working name, for `null_row` (they are not fetched).
            step_inputs = {column: working_name(view.sources[0], column) for column in sorted(used)}  # fmt: skip
            types = {step_inputs[c]: available[c].dtype for c in step_inputs}
            steps.append(Step(view, step_inputs, outputs, expressions, stored=True, stored_input_types=types))  # fmt: skip
            continue
        for column in sorted(used):
            found = available[column]
            if found.kind == "request":
                if request_source.setdefault(column, found.source) != found.source:
                    raise InputError(
                        f"request field '{column}' is declared by request sources "
                        f"'{request_source[column]}' and '{found.source}': one request cannot "
                        "say which it means; request these features separately"
                    )
                request[column] = found.dtype
                request_users.setdefault(column, name)
                step_inputs[column] = working_name(REQUEST, column)
            elif found.kind == "view":
                work = working_name(found.source, column)
                feature = next(f for f in catalog.view(found.source).features if f.name == column)
                base.setdefault(work, FeatureRef(found.source, feature, work))
                step_inputs[column] = work
            else:
                step_inputs[column] = working_name(found.source, column)
        steps.append(Step(view, step_inputs, outputs, expressions))
    wanted_columns = [(r.output_name, working_name(r.view, r.field.name), r.field.dtype) for r in refs]  # fmt: skip
    return OnDemandPlan(list(base.values()), request, steps, wanted_columns, request_users)


# ---- computing -------------------------------------------------------------------------


def compute(
    plan: OnDemandPlan,
    columns: dict[str, pa.Array | pa.ChunkedArray],
    num_rows: int,
    *,
    evaluator: ExpressionEvaluator | None = None,
    repo_path: Path | None = None,
    dtypes: Mapping[str, str] | None = None,
) -> dict[str, pa.Array | pa.ChunkedArray]:
    """Run the plan's steps over `columns` (working name → column: the fetched features and
    the request fields), adding each on-demand feature under its working name. Without
    an `evaluator`, expressions run as Arrow closures compiled once per step."""
    types = dict(dtypes or {})
    for step in plan.steps:
        if not step.stored:  # a stored step's columns are the store's (`finish`)
            compute_step(step, columns, num_rows, types, evaluator, repo_path)
        for output in step.outputs:
            types[step.working(output.name)] = output.dtype
    return columns


def compute_step(
    step: Step,
    columns: dict[str, pa.Array | pa.ChunkedArray],
    num_rows: int,
    types: Mapping[str, str],
    evaluator: ExpressionEvaluator | None = None,
    repo_path: Path | None = None,
) -> None:
    """One step of `compute`: its features added to `columns` under working names."""
    names = list(step.inputs)
    step_types = {name: types.get(step.inputs[name]) or widest_dtype(columns[step.inputs[name]].type) for name in names}  # fmt: skip
    if step.expressions:
        if evaluator is None:
            produced = _evaluate_compiled(step, columns, num_rows, step_types)
        else:
            table = pa.table({name: columns[step.inputs[name]] for name in names})
            result = evaluator(table, step.expressions)
            produced = dict(zip(result.column_names, result.columns, strict=True))
    else:
        table = pa.Table.from_arrays(
            [columns[step.inputs[name]] for name in names],
            schema=pa.schema([(n, arrow_type(step_types[n])) for n in names]),
        )
        produced = call_function(step, table, repo_path)
    for output in step.outputs:
        columns[step.working(output.name)] = produced[output.name]


def null_row(step: Step, repo_path: Path | None) -> dict[str, Any]:
    """What a stored write-time view computes from a row of nulls (a feature → its
    value): its value for an entity its source view has no row for, as training sets
    compute it when the join finds none."""
    if step._null_row is None:
        types = step.stored_input_types
        columns: dict[str, Any] = {work: pa.nulls(1, arrow_type(dtype)) for work, dtype in types.items()}  # fmt: skip
        compute_step(step, columns, 1, types, None, repo_path)
        step._null_row = {f.name: columns[step.working(f.name)][0].as_py() for f in step.outputs}
    return step._null_row


def compute_rows(
    plan: OnDemandPlan,
    columns: dict[str, Any],
    num_rows: int,
    *,
    repo_path: Path | None = None,
    dtypes: Mapping[str, str],
) -> dict[str, Any]:
    """`compute` on Python lists (the values `to_pylist` gives): the same results, for a
    request of a few rows (`OnDemandPlan.row_wise` plans only)."""
    from almanac.semantics.expression_rows import compile_rows
    from almanac.semantics.expressions import infer_dtype

    types = dict(dtypes)
    for step in plan.steps:
        if step.stored:
            for output in step.outputs:
                types[step.working(output.name)] = output.dtype
            continue
        given = {name: columns[work] for name, work in step.inputs.items()}
        if step.expressions:
            for name, (expr, dtype) in step.expressions.items():
                compiled = step._rows.get(name)
                if compiled is None:
                    step_types = {n: types[w] for n, w in step.inputs.items()}
                    compiled = step._rows[name] = (compile_rows(expr, step_types), infer_dtype(expr, step_types))  # fmt: skip
                run, computed = compiled
                values = run(given, num_rows)
                if computed != dtype:  # a declared wider type: Arrow's cast, as `compute`
                    values = pa.array(values, arrow_type(computed)).cast(arrow_type(dtype)).to_pylist()  # fmt: skip
                columns[step.working(name)] = values
        else:
            # Copies: the function must not change the lists the response is built from.
            produced = _call(step, {n: list(v) for n, v in given.items()}, num_rows, repo_path)
            for output in step.outputs:
                columns[step.working(output.name)] = produced[output.name].to_pylist()
        for output in step.outputs:
            types[step.working(output.name)] = output.dtype
    return columns


def _evaluate_compiled(
    step: Step, columns: Mapping[str, Any], num_rows: int, dtypes: dict[str, str]
) -> dict[str, pa.Array]:
    from almanac.semantics.expressions import compile_arrow

    arrays = {name: columns[work] for name, work in step.inputs.items()}
    out = {}
    for name, (expr, dtype) in step.expressions.items():
        compiled = step._compiled.get(name)
        if compiled is None:
            compiled = step._compiled[name] = compile_arrow(expr, dtypes)
        out[name] = _cast(compiled(arrays, num_rows), dtype)
    return out


def _cast(array: pa.Array | pa.ChunkedArray, dtype: str) -> pa.Array | pa.ChunkedArray:
    wanted = arrow_type(dtype)
    return array if array.type == wanted else array.cast(wanted)


def call_function(step: Step, table: pa.Table, repo_path: Path | None) -> dict[str, pa.Array]:
    """The step's function over `table`, its result checked against the declared schema."""
    assert step.view.function is not None  # a step without expressions is a function view
    return _call(step, _as_mode(table, step.view.function.mode), table.num_rows, repo_path)


def _call(step: Step, batch: Any, rows: int, repo_path: Path | None) -> dict[str, pa.Array]:
    view = step.view
    reference = view.function
    assert reference is not None
    if step._function is None:
        step._function = reference.load(repo_path)
    function = step._function
    try:
        result = function(batch)
    except Exception as error:
        raise TransformationError(
            f"on-demand view '{view.name}': its function {reference.function} raised "
            f"{type(error).__name__}: {error}"
        ) from error
    return _checked(view, step.outputs, result, rows)


def _as_mode(table: pa.Table, mode: str) -> Any:
    if mode == "arrow":
        return table
    if mode == "python":
        return table.to_pydict()
    if mode == "polars":
        import polars as pl

        return pl.from_arrow(table)
    return table.to_pandas()


def _checked(view: OnDemandView, outputs: list[Field], result: Any, rows: int) -> dict[str, pa.Array]:  # fmt: skip
    label = f"on-demand view '{view.name}'"
    columns = _result_columns(label, result)
    declared = [f.name for f in outputs]
    missing = [name for name in declared if name not in columns]
    extra = [name for name in columns if name not in declared]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"did not return {', '.join(missing)}")
        if extra:
            parts.append(f"returned undeclared {', '.join(map(str, extra))}")
        raise TransformationError(f"{label}: its function {' and '.join(parts)} (declared: {', '.join(declared)})")  # fmt: skip
    out = {}
    for feature in outputs:
        value = columns[feature.name]
        try:
            array = _as_array(value, arrow_type(feature.dtype))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as error:
            raise TransformationError(
                f"{label}: feature '{feature.name}' is declared {feature.dtype}, but the "
                f"function returned values that are not: {error}"
            ) from None
        if len(array) != rows:
            raise TransformationError(
                f"{label}: feature '{feature.name}' has {len(array)} values for {rows} rows; "
                "an on-demand function returns one value per row it was given"
            )
        out[feature.name] = array
    return out


def _result_columns(label: str, result: Any) -> dict[str, Any]:
    if isinstance(result, pa.Table | pa.RecordBatch):
        return {name: result.column(name) for name in result.column_names}
    if isinstance(result, Mapping):
        return dict(result)
    if hasattr(result, "columns") and hasattr(result, "__getitem__"):  # pandas, polars
        return {str(name): result[name] for name in result.columns}
    raise TransformationError(
        f"{label}: its function returned {type(result).__name__}; return a dict of columns "
        "or a frame (pandas, Arrow, Polars)"
    )


def _as_array(value: Any, kind: pa.DataType) -> pa.Array | pa.ChunkedArray:
    if isinstance(value, pa.Array | pa.ChunkedArray):
        array = value
    elif hasattr(value, "to_arrow") and not hasattr(value, "to_numpy"):
        array = value.to_arrow()
    elif hasattr(value, "dtype") and hasattr(value, "to_numpy"):  # pandas/polars series
        array = pa.array(value, from_pandas=True) if hasattr(value, "index") else value.to_arrow()
    elif isinstance(value, list | tuple) or hasattr(value, "__array__"):
        array = pa.array(value, from_pandas=True)
    else:
        raise TypeError(f"a column must be a list, an array or a series, got {type(value).__name__}")  # fmt: skip
    if array.type == kind:
        return array
    return array.cast(kind)


# ---- training sets -----------------------------------------------------------------------


def offline_derivation(
    plan: OnDemandPlan,
    entity_columns: list[str],
    evaluator: ExpressionEvaluator | None,
    repo_path: Path | None,
) -> tuple[pa.Schema, Callable[[pa.Table, int], pa.Table]]:
    """The output schema and the batch function that turns a training set of the plan's
    stored features (working names) and the caller's columns into the requested
    features. Request fields are the entity dataframe's columns of those names."""
    for name, _, _ in plan.outputs:
        if name in entity_columns:
            raise InputError(
                f"feature '{name}' would be named like a column of entity_df; rename that "
                "column or pass full_feature_names=True"
            )
    missing = [field for field in plan.request if field not in entity_columns]
    if missing:
        field = missing[0]
        raise InputError(
            f"entity_df has no column '{field}', a request field that on-demand view "
            f"'{plan.request_users[field]}' needs: add the value each row was (or will be) "
            "scored with"
        )
    schema = pa.schema([(name, arrow_type(dtype)) for name, _, dtype in plan.outputs])
    dtypes = {ref.output_name: ref.field.dtype for ref in plan.base}
    dtypes.update({working_name(REQUEST, f): dtype for f, dtype in plan.request.items()})

    def derive(table: pa.Table, offset: int) -> pa.Table:
        columns: dict[str, Any] = {ref.output_name: table.column(ref.output_name) for ref in plan.base}  # fmt: skip
        for field, dtype in plan.request.items():
            columns[working_name(REQUEST, field)] = _request_column(table.column(field), field, dtype)  # fmt: skip
        compute(plan, columns, table.num_rows, evaluator=evaluator, repo_path=repo_path, dtypes=dtypes)  # fmt: skip
        return pa.Table.from_arrays([columns[work] for _, work, _ in plan.outputs], schema=schema)

    return schema, derive


def _request_column(column: pa.ChunkedArray, field: str, dtype: str) -> pa.ChunkedArray:
    wanted = arrow_type(dtype)
    if column.type == wanted:
        return column
    try:
        # A safe cast: a naive time is read as UTC (rule 1); a float with a fraction is
        # refused for an integer field, text for a number.
        return column.cast(wanted)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
        raise InputError(
            f"entity_df column '{field}' (a request field) must be {dtype}, got "
            f"{column.type}: {error}"
        ) from None


# ---- write-time views ------------------------------------------------------------------

_write_plans: dict[tuple[int, str], tuple[Catalog, OnDemandPlan]] = {}


def write_time_rows(
    catalog: Catalog, view: OnDemandView, rows: pa.Table, repo_path: Path | None
) -> pa.Table:
    """What to store for the write-time view `view`, from rows written online for its
    source view (join keys, features, `event_timestamp`, maybe `created_timestamp`): the
    same keys and times, and the view's features computed by the steps a training set
    runs. A failing function is a `TransformationError`, raised before anything is
    written."""
    cached = _write_plans.get((id(catalog), view.name))
    if cached is None or cached[0] is not catalog:
        refs = [FeatureRef(view.name, f, working_name(view.name, f.name)) for f in catalog.on_demand_fields(view.name)]  # fmt: skip
        found = plan_on_demand(catalog, refs)
        assert found is not None  # refs of an on-demand view
        if len(_write_plans) >= 256:
            _write_plans.clear()
        cached = _write_plans[(id(catalog), view.name)] = (catalog, found)
    plan = cached[1]
    columns: dict[str, Any] = {ref.output_name: rows.column(ref.field.name) for ref in plan.base}
    dtypes = {ref.output_name: ref.field.dtype for ref in plan.base}
    compute(plan, columns, rows.num_rows, repo_path=repo_path, dtypes=dtypes)
    keys = list(catalog.join_keys(written_from(catalog, view)))
    out = {key: rows.column(key) for key in keys}
    for _, work, _ in plan.outputs:
        out[work.split(":", 1)[1]] = columns[work]
    for stamp in (EVENT_TIMESTAMP, CREATED_TIMESTAMP):
        if stamp in rows.column_names:
            out[stamp] = rows.column(stamp)
    return pa.table(out)
