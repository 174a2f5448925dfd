"""On-demand expressions as DuckDB SQL: the offline engine's evaluator.

`to_sql` renders a parsed expression (`almanac.semantics.expressions`) as one DuckDB
SQL expression that computes exactly what the Arrow evaluator computes (the rules are in
that module's docstring and docs/expressions.md; tests/semantics/test_expressions.py
checks them as properties). DuckDB's own defaults differ in places, so the SQL spells
the pinned behaviour out: operands cast to BIGINT/DOUBLE, `x / NULLIF(y, 0)`, NaN turned
into null with `NULLIF(v, 'NaN')` (DuckDB orders NaN above every number and equal to
itself), logs of non-positive numbers null, times read in UTC whatever the session's
TimeZone, `case` conditions evaluated as values (see `_Sql.condition`). User text never
enters the SQL: names are validated identifiers, quoted, and every literal is a `?`
parameter (`to_sql`) or, in `evaluate_sql`, a column of its own, so that DuckDB's
optimizer cannot rewrite around its value (see `to_sql`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from almanac.semantics.expression_parse import IDENTIFIER
from almanac.semantics.expression_types import (
    BOOL,
    FLOAT,
    INT,
    NULL,
    STRING,
    TIMESTAMP,
    ExpressionValueError,
    Typed,
    check_declared,
    function,
    input_type,
    typecheck,
)
from almanac.semantics.expressions import (
    Between,
    Binary,
    Call,
    Case,
    Cast,
    Column,
    Expr,
    ExpressionError,
    InList,
    IsNull,
    Literal,
    Unary,
    cast_result,
    columns,
    input_array,
    to_text,
)

_TYPE = {INT: "BIGINT", FLOAT: "DOUBLE", BOOL: "BOOLEAN", STRING: "VARCHAR"}
_TYPE |= {TIMESTAMP: "TIMESTAMPTZ"}
_NAN = "CAST('NaN' AS DOUBLE)"
_ZERO = {INT: "CAST(0 AS BIGINT)", FLOAT: "CAST(0 AS DOUBLE)"}
_OPS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_OPS |= {"+": "+", "-": "-", "*": "*", "and": "AND", "or": "OR"}
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# ASCII only, as Arrow's ascii_lower/ascii_upper: the engines' Unicode tables differ
_CASE_MAP = {"lower": (_UPPER, _UPPER.lower()), "upper": (_UPPER.lower(), _UPPER)}
_PARTS = {name: name for name in ("year", "month", "day", "hour", "minute", "second")}
_PARTS["day_of_year"] = "dayofyear"
_ROW = "__almanac_row"
_LITERAL = "__almanac_literal_"
_ARROW = {INT: pa.int64(), FLOAT: pa.float64(), BOOL: pa.bool_(), STRING: pa.string()}
_ARROW |= {TIMESTAMP: pa.timestamp("us", tz="UTC")}
_counter = itertools.count()


def quote(name: str) -> str:
    """`name` as a quoted SQL identifier; ExpressionError unless it is an identifier (so
    it needs no escaping)."""
    if not IDENTIFIER.match(name):
        raise ExpressionError(f"'{name}' is not an identifier (letters, digits, underscores)")
    return f'"{name}"'


class _Sql:
    """Renders one expression; `literal(value, kind)` renders each literal in turn."""

    def __init__(
        self, typed: Typed, dtypes: Mapping[str, str], literal: Callable[[Any, str], str]
    ) -> None:
        self.typed = typed
        self.dtypes = dtypes
        self.param = literal

    def value(self, node: Expr, want: str | None = None) -> str:
        """`node` as SQL, of type `want` (default: its own). Children are rendered in the
        order of the text, so the literals (the `?` parameters) come in that order."""
        kind = self.typed.of(node)
        want = want or kind
        if kind == NULL:
            return self.param(None, want)
        sql = self.compile(node, kind)
        return f"CAST({sql} AS DOUBLE)" if kind == INT and want == FLOAT else sql

    def condition(self, node: Expr) -> str:
        """A `case when` condition. DuckDB evaluates a bare one in "select" mode, where
        `and`, `or` and `between` skip rows already decided, in an order it adapts at run
        time; compared with a true that is not a constant, it is evaluated like any other
        value, on every row still open, as the Arrow evaluator does."""
        return f"({self.value(node, BOOL)} = {self.param(True, BOOL)})"

    def compile(self, node: Expr, kind: str) -> str:
        if isinstance(node, Literal):
            return self.param(node.value, kind)
        if isinstance(node, Column):
            sql = quote(node.name)
            if self.dtypes[node.name] in ("int32", "float32"):  # INTEGER would overflow sooner
                sql = f"CAST({sql} AS {_TYPE[kind]})"
            return f"NULLIF({sql}, {_NAN})" if kind == FLOAT else sql
        operands = self.typed.operands(node)
        if isinstance(node, Unary):
            operand = self.value(node.operand, operands)
            return f"(NOT {operand})" if node.op == "not" else f"(-({operand}))"
        if isinstance(node, Binary):
            return self.binary(node, kind, operands)
        if isinstance(node, IsNull):
            test = "IS NOT NULL" if node.negated else "IS NULL"
            return f"({self.value(node.operand, operands)} {test})"
        if isinstance(node, InList):
            operand = self.value(node.operand, operands)
            items = ", ".join(self.value(item, operands) for item in node.items)
            return f"({operand} {'NOT IN' if node.negated else 'IN'} ({items}))"
        if isinstance(node, Between):
            operand, low, high = (
                self.value(part, operands) for part in (node.operand, node.low, node.high)
            )
            between = "NOT BETWEEN" if node.negated else "BETWEEN"
            return f"({operand} {between} {low} AND {high})"
        if isinstance(node, Case):
            parts = ["CASE"]
            for condition, then in node.branches:
                parts += ["WHEN", self.condition(condition), "THEN", self.value(then, kind)]
            if node.otherwise is not None:
                parts += ["ELSE", self.value(node.otherwise, kind)]
            return "(" + " ".join([*parts, "END"]) + ")"
        if isinstance(node, Cast):
            operand = self.value(node.operand, operands if operands != NULL else node.dtype)
            # DOUBLE -> BIGINT rounds half to even and raises out of range, as Arrow's does
            return operand if operands in (kind, NULL) else f"CAST({operand} AS {_TYPE[kind]})"
        assert isinstance(node, Call)
        return self.call(node, kind, operands)

    def binary(self, node: Binary, kind: str, operands: str) -> str:
        left, right = self.value(node.left, operands), self.value(node.right, operands)
        if node.op == "/":  # always float64; dividing by zero (or -0.0) gives null
            return f"NULLIF(({left} / NULLIF({right}, {_ZERO[FLOAT]})), {_NAN})"
        if node.op == "%":  # int64 only; truncated like C, zero divisor gives null
            return f"({left} % NULLIF({right}, {_ZERO[INT]}))"
        sql = f"({left} {_OPS[node.op]} {right})"
        return f"NULLIF({sql}, {_NAN})" if kind == FLOAT else sql

    def call(self, node: Call, kind: str, operands: str) -> str:
        spec = function(node.name)
        assert spec is not None
        name = spec.name
        if name == "if":
            condition = self.condition(node.args[0])
            then, otherwise = (self.value(arg, kind) for arg in node.args[1:])
            return f"(CASE WHEN {condition} THEN {then} ELSE {otherwise} END)"
        args = [self.value(arg, operands) for arg in node.args]
        joined = ", ".join(args)
        simple = {"coalesce", "nullif", "least", "greatest", "concat", "abs", "exp"}
        if name in simple:  # least/greatest/concat skip nulls, the pinned rule too
            return f"{name.upper()}({joined})"
        if name in ("ceil", "floor", "round"):  # DuckDB's round is half away from zero
            return joined if operands == INT else f"{name}({joined})"
        if name == "sign":
            return f"CAST(sign({joined}) AS BIGINT)"
        if name in ("sqrt", "pow"):  # sqrt(-1), pow(-8, 1/3) are NaN: null
            return f"NULLIF({name}({joined}), {_NAN})"
        if name in ("ln", "log10"):  # DuckDB gives -inf for 0, NaN below: null for both
            return f"{name}(NULLIF(GREATEST({joined}, {_ZERO[FLOAT]}), {_ZERO[FLOAT]}))"
        if name in _CASE_MAP:
            source, target = _CASE_MAP[name]
            return f"translate({joined}, '{source}', '{target}')"
        if name == "length":  # characters (code points), as Arrow's utf8_length
            return f"CAST(length({joined}) AS BIGINT)"
        # timezone('UTC', timestamptz) is the naive UTC time: independent of the session
        utc = f"timezone('UTC', {joined})"
        if name == "day_of_week":  # 0 = Monday ... 6 = Sunday
            return f"CAST(isodow({utc}) - 1 AS BIGINT)"
        if name == "epoch_seconds":
            return f"(CAST(epoch_us({joined}) AS DOUBLE) / CAST(1000000 AS DOUBLE))"
        return f"CAST({_PARTS[name]}({utc}) AS BIGINT)"


def _render(
    expr: Expr, dtypes: Mapping[str, str], literal: Callable[[Any, str], str]
) -> tuple[str, str]:
    """`expr`'s SQL, cast to its type, and that type."""
    typed = typecheck(expr, dtypes)
    sql = _Sql(typed, dtypes, literal).value(expr)
    return f"CAST({sql} AS {_TYPE[typed.result]})", typed.result


def to_sql(expr: Expr, dtypes: Mapping[str, str]) -> tuple[str, list[Any]]:
    """`expr` as a DuckDB SQL expression over columns of Almanac `dtypes`, and the values
    of its `?` parameters, in order. Its value has the SQL type of `infer_dtype`'s dtype
    (BIGINT, DOUBLE, BOOLEAN, VARCHAR, TIMESTAMPTZ); a timestamp column must be
    TIMESTAMPTZ. ExpressionError if the expression is invalid for these inputs.

    DuckDB plans a query with its parameters' values as constants, and its optimizer
    then rewrites around them (`x + 1 = 5` becomes `x = 4`, `x * 2 + NULL` becomes NULL),
    which can skip an int64 overflow the Arrow evaluator raises. `evaluate_sql` therefore
    passes the literals as columns instead; this SQL agrees exactly except there."""
    params: list[Any] = []

    def parameter(value: Any, kind: str) -> str:
        # typed: DuckDB binds a Python int as INTEGER (int32 arithmetic), None untyped
        params.append(value)
        return f"CAST(? AS {_TYPE[kind]})"

    return _render(expr, dtypes, parameter)[0], params


def _dtype(arrow: pa.DataType) -> str | None:
    """The Almanac dtype an Arrow column is read as by expressions, if any."""
    checks = [
        (pa.types.is_int32, "int32"),
        (pa.types.is_integer, "int64"),
        (pa.types.is_float32, "float32"),
        (pa.types.is_floating, "float64"),
        (pa.types.is_boolean, BOOL),
        (pa.types.is_timestamp, TIMESTAMP),
    ]
    for check, dtype in checks:
        if check(arrow):
            return dtype
    if pa.types.is_string(arrow) or pa.types.is_large_string(arrow):
        return STRING
    if str(arrow) == "string_view":
        return STRING
    return "bytes" if pa.types.is_binary(arrow) or pa.types.is_large_binary(arrow) else None


def evaluate_sql(
    con: duckdb.DuckDBPyConnection,
    table: pa.Table,
    expressions: Mapping[str, tuple[Expr, str]],
) -> pa.Table:
    """`SELECT <expr> AS "<name>", ... FROM table` in DuckDB: one column per entry of
    `expressions` (name -> (expression, declared dtype)), its values cast to the declared
    dtype, in the rows' order. The input columns' dtypes are read from `table`'s schema.
    ExpressionError for an invalid expression, ExpressionValueError for an overflow."""
    dtypes = {
        field.name: dtype for field in table.schema if (dtype := _dtype(field.type)) is not None
    }
    literals: dict[str, pa.Array] = {}
    rows = table.num_rows

    def literal(value: Any, kind: str) -> str:
        # A column of one run: never a constant, so the plan is the SQL as written.
        name = f"{_LITERAL}{len(literals)}"
        values = pa.array([value], _ARROW[kind])
        literals[name] = (
            pa.RunEndEncodedArray.from_arrays(pa.array([rows], pa.int32()), values)
            if rows
            else values.slice(0, 0)
        )
        return quote(name)

    selects, used = [], set()
    for name, (expr, declared) in expressions.items():
        sql, kind = _render(expr, dtypes, literal)
        check_declared(kind, declared, f"expression '{name}'")
        selects.append(f"{sql} AS {quote(name)}")
        used |= columns(expr)
    if not selects:
        return table.select([])
    view = f"__almanac_expressions_{next(_counter)}"
    query = f"SELECT {', '.join(selects)} FROM {quote(view)}"
    setting = con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()
    ordered = bool(setting[0][0])
    if not ordered:  # then DuckDB may return the rows in any order
        query += f" ORDER BY {_ROW}"
    con.register(view, _relation(table, used, dtypes, ordered, literals))
    try:
        result = con.sql(query).to_arrow_table()
    except (duckdb.OutOfRangeException, duckdb.ConversionException) as error:
        names = ", ".join(f"'{name}'" for name in expressions)
        raise ExpressionValueError(f"expressions {names}: {error}") from None
    finally:
        con.unregister(view)
    out = {}
    for name, (expr, declared) in expressions.items():
        out[name] = cast_result(
            result.column(name).combine_chunks(), declared, f"expression '{to_text(expr)}'"
        )
    return pa.table(out)


def _relation(
    table: pa.Table,
    used: set[str],
    dtypes: Mapping[str, str],
    ordered: bool,
    literals: Mapping[str, pa.Array],
) -> pa.Table:
    """The columns the expressions read, in the types the SQL expects (timestamps as UTC
    microseconds: TIMESTAMPTZ), then the literals; with a row number to order by unless
    DuckDB keeps the order. A table without columns still has its rows."""
    arrays = {
        name: input_array(table.column(name), input_type(name, dtypes[name]))
        if dtypes[name] == TIMESTAMP
        else table.column(name)
        for name in sorted(used)
    }
    arrays.update(literals)
    if not ordered or not arrays:
        arrays[_ROW] = pa.array(np.arange(table.num_rows, dtype=np.int64))
    return pa.table(arrays)
