"""On-demand expressions, evaluated with Arrow compute: the engine-neutral evaluator.

An expression (docs/expressions.md) is parsed once (`parse`), typed once (`infer_dtype`)
and compiled once (`compile_arrow`) into closures over pyarrow.compute kernels, so a
call walks no tree: online it runs for one entity within the latency budget, offline
over whole batches. The DuckDB engine renders the same trees as SQL
(`almanac.offline.duckdb.expressions`); both follow these rules, tested as properties:

* int64 arithmetic is checked: an overflow raises `ExpressionValueError`. `/` divides
  as float64, and dividing by zero gives null, as does every float operation without a
  real result (NaN: inf - inf, sqrt(-1)); NaN input values are read as null.
* A `case` (and `if`) evaluates a branch's value, and a later condition, only on the
  rows that reach it; `coalesce` evaluates an argument only where the previous ones are
  null. This is DuckDB's order, and it decides which rows can raise an overflow.
* Everything else is evaluated on every row; nulls propagate, `and`/`or` are Kleene.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from almanac.definitions.types import arrow_type, parse_dtype
from almanac.errors import InputError
from almanac.semantics.expression_parse import (
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
    columns,
    parse,
    to_text,
)
from almanac.semantics.expression_types import (
    BOOL,
    FLOAT,
    INT,
    NULL,
    STRING,
    TIMESTAMP,
    ExpressionValueError,
    Typed,
    function,
    infer_dtype,
    input_type,
    typecheck,
)

__all__ = [
    "Between",
    "Binary",
    "Call",
    "Case",
    "Cast",
    "Column",
    "Expr",
    "ExpressionError",
    "ExpressionValueError",
    "InList",
    "IsNull",
    "Literal",
    "Unary",
    "cast_result",
    "columns",
    "compile_arrow",
    "evaluate",
    "infer_dtype",
    "input_array",
    "parse",
    "to_text",
]

Value: TypeAlias = "pa.Array | pa.Scalar"  # a scalar stands for the same value on every row
Env: TypeAlias = "Mapping[str, pa.Array]"
Evaluator: TypeAlias = "Callable[[Mapping[str, pa.Array | pa.ChunkedArray], int], pa.Array]"

_ARROW = {kind: arrow_type(kind) for kind in (INT, FLOAT, BOOL, STRING, TIMESTAMP)}
_NULLS = {kind: pa.scalar(None, arrow) for kind, arrow in _ARROW.items()}
_NULL_BOOL = _NULLS[BOOL]
_ZERO = {INT: pa.scalar(0, pa.int64()), FLOAT: pa.scalar(0.0, pa.float64())}
_EMPTY_STRING = pa.scalar("", pa.string())
_MICROS = pa.scalar(1e6, pa.float64())
_ROUND = pc.RoundOptions(0, round_mode="half_towards_infinity")  # half away from zero
_ROUND_EVEN = pc.RoundOptions(0, round_mode="half_to_even")  # DuckDB's float -> int cast
_MONDAY_ZERO = pc.DayOfWeekOptions(count_from_zero=True, week_start=1)
_COMPARE = {"=": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal}
_COMPARE |= {">": pc.greater, ">=": pc.greater_equal}
_INT_OPS = {"+": pc.add_checked, "-": pc.subtract_checked, "*": pc.multiply_checked}
_FLOAT_OPS = {"+": pc.add, "-": pc.subtract, "*": pc.multiply}
_PARTS = ("year", "month", "day", "hour", "minute", "second", "day_of_year")
_KERNELS: dict[str, Callable[[Value], Value]] = {
    name: getattr(pc, name) for name in (*_PARTS, "sqrt", "ln", "log10", "exp")
}
_FAMILY: dict[str, Callable[[pa.DataType], bool]] = {
    INT: pa.types.is_integer,
    FLOAT: lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
    BOOL: pa.types.is_boolean,
    STRING: lambda t: (
        pa.types.is_string(t) or pa.types.is_large_string(t) or str(t) == "string_view"
    ),
    TIMESTAMP: pa.types.is_timestamp,
}


# -- masks and nulls, with shortcuts for the all-rows and no-rows cases ------------------


def _count_true(mask: Value, n: int) -> int:
    if isinstance(mask, pa.Scalar):
        return n if mask.as_py() else 0
    return int(mask.true_count)


def _true_only(mask: Value) -> Value:
    """`mask` with null read as false (a `case` condition, an `in` match)."""
    if isinstance(mask, pa.Scalar):
        return mask if mask.is_valid else pa.scalar(False)
    if mask.null_count == 0:
        return mask
    return pc.and_kleene(mask, pc.is_valid(mask))


def _null_where(values: Value, mask: Value, n: int, null: pa.Scalar) -> Value:
    """`values` with null where `mask` is true (a null in `mask` only where `values` is
    null already, or after `_true_only`)."""
    hits = _count_true(mask, n)
    if hits == 0:
        return values
    if hits == n:
        return null
    return pc.if_else(mask, null, values)


def _nan_to_null(values: Value, n: int) -> Value:
    if isinstance(values, pa.Scalar) or len(values) == 1:  # the online case: no kernel call
        value = values.as_py() if isinstance(values, pa.Scalar) else values.to_pylist()[0]
        return _NULLS[FLOAT] if value is not None and math.isnan(value) else values
    return _null_where(values, pc.is_nan(values), n, _NULLS[FLOAT])


def _zero_to_null(values: Value, n: int, kind: str) -> Value:
    if isinstance(values, pa.Scalar) or len(values) == 1:
        value = values.as_py() if isinstance(values, pa.Scalar) else values.to_pylist()[0]
        return _NULLS[kind] if value == 0 else values
    return _null_where(values, pc.equal(values, _ZERO[kind]), n, _NULLS[kind])


# -- compiled nodes ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    """A compiled sub-expression: `run(env, n)` over `n` rows of the columns in `env`
    (at least those of `reads`); `const` when it reads no column and was folded."""

    run: Callable[[Env, int], Value]
    reads: frozenset[str]
    const: pa.Scalar | None = None


def _constant(value: pa.Scalar) -> _Node:
    return _Node(lambda env, n: value, frozenset(), value)


def _on_rows(node: _Node, env: Env, n: int, mask: pa.Array | None, hits: int) -> Value:
    """`node` evaluated only on the rows where `mask` is true (`hits` of them; None: every
    row), null on the others: lazy, as DuckDB's `case` and `coalesce` are."""
    if node.const is not None:
        return node.const
    if mask is None or hits == n:
        return node.run(env, n)
    part = node.run({name: env[name].filter(mask) for name in node.reads}, hits)
    if isinstance(part, pa.Scalar):
        return part
    return pc.replace_with_mask(pa.nulls(n, part.type), mask, part)


class _Compiler:
    def __init__(self, typed: Typed) -> None:
        self.typed = typed
        self.text = to_text(typed.root)

    def fail(self, node: Expr, problem: str) -> ExpressionValueError:
        where = "" if node is self.typed.root else f" in '{to_text(node)}'"
        return ExpressionValueError(f"expression '{self.text}': {problem}{where}")

    def value(self, node: Expr, want: str | None = None) -> _Node:
        """`node` compiled, its value brought to type `want` (an int64 to float64, a bare
        null to a typed null); constant sub-expressions are evaluated here, once."""
        kind = self.typed.of(node)
        want = want or kind
        if kind == NULL:  # null, or an operation on nulls only: nothing to evaluate
            return _constant(_NULLS[want])
        compiled = self.compile(node, kind)
        if kind == INT and want == FLOAT:
            compiled = self.map(compiled, lambda v: pc.cast(v, pa.float64(), safe=False))
        if not compiled.reads and compiled.const is None:
            try:
                folded = compiled.run({}, 1)
            except ExpressionValueError:
                pass  # raises only if a row evaluates it (none may: a case branch)
            else:
                compiled = _constant(folded if isinstance(folded, pa.Scalar) else folded[0])
        return compiled

    def map(self, node: _Node, apply: Callable[[Value], Value]) -> _Node:
        run = node.run  # a constant is folded by `value`, where an overflow may wait
        return _Node(lambda env, n: apply(run(env, n)), node.reads)

    def combine(self, nodes: list[_Node], apply: Callable[[list[Value], int], Value]) -> _Node:
        reads = frozenset().union(*(node.reads for node in nodes))
        runs = [node.run for node in nodes]
        return _Node(lambda env, n: apply([run(env, n) for run in runs], n), reads)

    def checked(
        self, node: Expr, kernel: Callable[..., Value], problem: str
    ) -> Callable[..., Value]:
        def run(*args: Value) -> Value:
            try:
                return kernel(*args)
            except pa.ArrowInvalid:
                raise self.fail(node, problem) from None

        return run

    def compile(self, node: Expr, kind: str) -> _Node:
        if isinstance(node, Literal):
            return _constant(pa.scalar(node.value, _ARROW[kind]))
        if isinstance(node, Column):
            name = node.name
            return _Node(lambda env, n: env[name], frozenset([name]))
        operands = self.typed.operands(node)
        if isinstance(node, Unary):
            operand = self.value(node.operand, operands)
            if node.op == "not":
                return self.map(operand, pc.invert)
            if kind == INT:
                return self.map(operand, self.checked(node, pc.negate_checked, "int64 overflow"))
            return self.map(operand, pc.negate)
        if isinstance(node, Binary):
            return self.binary(node, kind, operands)
        if isinstance(node, IsNull):
            test = pc.is_valid if node.negated else pc.is_null
            return self.map(self.value(node.operand, operands), test)
        if isinstance(node, InList):
            return self.in_list(node, operands)
        if isinstance(node, Between):
            operand, low, high = (
                self.value(part, operands) for part in (node.operand, node.low, node.high)
            )

            def between(values: list[Value], n: int) -> Value:
                x, lo, hi = values
                inside = pc.and_kleene(pc.greater_equal(x, lo), pc.less_equal(x, hi))
                return pc.invert(inside) if node.negated else inside

            return self.combine([operand, low, high], between)
        if isinstance(node, Case):
            branches = [(self.value(c, BOOL), self.value(v, kind)) for c, v in node.branches]
            otherwise = None if node.otherwise is None else self.value(node.otherwise, kind)
            return self.case(branches, otherwise, kind)
        if isinstance(node, Cast):
            return self.cast(node, operands)
        assert isinstance(node, Call)
        return self.call(node, kind, operands)

    def binary(self, node: Binary, kind: str, operands: str) -> _Node:
        left, right = self.value(node.left, operands), self.value(node.right, operands)
        op = node.op
        if op in ("and", "or"):
            kleene = pc.and_kleene if op == "and" else pc.or_kleene
            return self.combine([left, right], lambda v, n: kleene(v[0], v[1]))
        if op in _COMPARE:
            compare = _COMPARE[op]
            return self.combine([left, right], lambda v, n: compare(v[0], v[1]))
        if op == "/":

            def divide(v: list[Value], n: int) -> Value:
                quotient = pc.divide(v[0], _zero_to_null(v[1], n, FLOAT))
                return _nan_to_null(quotient, n)

            return self.combine([left, right], divide)
        if op == "%":
            overflow = self.checked(node, pc.divide_checked, "int64 overflow")

            def modulo(v: list[Value], n: int) -> Value:
                x, y = v[0], _zero_to_null(v[1], n, INT)
                # truncated, like C and DuckDB: x - trunc(x / y) * y
                return pc.subtract(x, pc.multiply(overflow(x, y), y))

            return self.combine([left, right], modulo)
        if kind == INT:
            kernel = self.checked(node, _INT_OPS[op], "int64 overflow")
            return self.combine([left, right], lambda v, n: kernel(v[0], v[1]))
        float_op = _FLOAT_OPS[op]
        return self.combine([left, right], lambda v, n: _nan_to_null(float_op(v[0], v[1]), n))

    def in_list(self, node: InList, operands: str) -> _Node:
        operand = self.value(node.operand, operands)
        items = [self.value(item, operands) for item in node.items]
        constants = [item.const for item in items]
        negated = node.negated
        if operands != FLOAT and all(c is not None for c in constants):
            # a hash lookup; not for floats, where it tells -0.0 from 0.0 and '=' does not
            values = [c.as_py() for c in constants if c is not None and c.is_valid]
            options = pc.SetLookupOptions(pa.array(values, _ARROW[operands]))
            has_null = len(values) < len(constants)

            def lookup(values: list[Value], n: int) -> Value:
                x = values[0]
                found = pc.is_in(x, options=options)  # false, not null, for a null x
                if x.null_count if isinstance(x, pa.Array) else not x.is_valid:
                    found = _null_where(found, pc.is_null(x), n, _NULL_BOOL)
                if has_null:  # x in (1, null) is null, not false, when x is not 1
                    found = _null_where(found, pc.invert(found), n, _NULL_BOOL)
                return pc.invert(found) if negated else found

            return self.combine([operand], lookup)

        def chain(values: list[Value], n: int) -> Value:
            x, found = values[0], None
            for item in values[1:]:
                equal = pc.equal(x, item)
                found = equal if found is None else pc.or_kleene(found, equal)
            assert found is not None
            return pc.invert(found) if negated else found

        return self.combine([operand, *items], chain)

    def case(
        self, branches: list[tuple[_Node, _Node]], otherwise: _Node | None, kind: str
    ) -> _Node:
        reads = frozenset().union(*(c.reads | v.reads for c, v in branches))
        reads |= otherwise.reads if otherwise is not None else frozenset()
        null = _NULLS[kind]

        def run(env: Env, n: int) -> Value:
            taken: pa.Array | None = None  # rows a branch took; the others are `open_`
            open_: pa.Array | None = None  # None: every row
            left = n
            masks: list[pa.Array] = []
            values: list[Value] = []
            for condition, then in branches:
                chosen = _true_only(_on_rows(condition, env, n, open_, left))
                if isinstance(chosen, pa.Scalar):
                    if not chosen.as_py():
                        continue
                    chosen, hits = open_, left  # every open row
                else:
                    hits = _count_true(chosen, n)
                    if hits == 0:
                        continue
                value = _on_rows(then, env, n, chosen, hits)
                if hits == left and not masks:  # this branch takes every row
                    return value
                assert chosen is not None  # None (every row) was returned just above
                masks.append(chosen)
                values.append(value)
                taken = chosen if taken is None else pc.or_(taken, chosen)
                left -= hits
                if left == 0:
                    break
                open_ = pc.invert(taken)
            if left and otherwise is not None:
                value = _on_rows(otherwise, env, n, open_, left)
                if not masks:
                    return value
                assert open_ is not None
                masks.append(open_)
                values.append(value)
            if not masks:
                return null
            names = [str(i) for i in range(len(masks))]
            return pc.case_when(pc.make_struct(*masks, field_names=names), *values)

        return _Node(run, reads)

    def coalesce(self, args: list[_Node]) -> _Node:
        reads = frozenset().union(*(arg.reads for arg in args))

        def run(env: Env, n: int) -> Value:
            result = _on_rows(args[0], env, n, None, n)
            for arg in args[1:]:
                if isinstance(result, pa.Scalar):
                    if result.is_valid:
                        return result
                    missing, count = None, n
                else:
                    count = result.null_count
                    if count == 0:
                        return result
                    missing = pc.is_null(result) if count < n else None
                later = _on_rows(arg, env, n, missing, count)
                result = later if missing is None else pc.coalesce(result, later)
            return result

        return _Node(run, reads)

    def cast(self, node: Cast, source: str) -> _Node:
        operand = self.value(node.operand, source if source != NULL else node.dtype)
        target = node.dtype
        if source in (target, NULL):
            return operand
        if target == INT and source == FLOAT:  # as DuckDB: half to even, out of range raises
            to_int = self.checked(node, pc.cast, "float64 value out of the int64 range")
            return self.map(operand, lambda v: to_int(pc.round(v, options=_ROUND_EVEN), pa.int64()))
        arrow = _ARROW[target]
        return self.map(operand, lambda v: pc.cast(v, arrow, safe=False))

    def call(self, node: Call, kind: str, operands: str) -> _Node:
        spec = function(node.name)
        assert spec is not None
        name = spec.name
        if name == "if":
            condition = self.value(node.args[0], BOOL)
            then, otherwise = (self.value(arg, kind) for arg in node.args[1:])
            return self.case([(condition, then)], otherwise, kind)
        args = [self.value(arg, operands) for arg in node.args]
        if name == "coalesce":
            return self.coalesce(args)
        if name == "nullif":

            def nullif(v: list[Value], n: int) -> Value:
                return _null_where(v[0], _true_only(pc.equal(v[0], v[1])), n, _NULLS[kind])

            return self.combine(args, nullif)
        if name in ("least", "greatest"):  # nulls are skipped, as in DuckDB
            pick = pc.min_element_wise if name == "least" else pc.max_element_wise
            if operands == TIMESTAMP:  # no kernel for zoned timestamps: compare the integers
                timestamp = _ARROW[TIMESTAMP]

                def pick_time(v: list[Value], n: int) -> Value:
                    chosen = pick(*(pc.cast(part, pa.int64()) for part in v), skip_nulls=True)
                    return pc.cast(chosen, timestamp)

                return self.combine(args, pick_time)
            if operands == FLOAT:  # ties of 0.0 and -0.0: the first argument wins, as in
                # DuckDB, only if scalars are arrays (Arrow takes scalars first)

                def pick_float(v: list[Value], n: int) -> Value:
                    parts = [p if isinstance(p, pa.Array) else pa.repeat(p, n) for p in v]
                    return pick(*parts, skip_nulls=True)

                return self.combine(args, pick_float)
            return self.combine(args, lambda v, n: pick(*v, skip_nulls=True))
        if name == "concat":  # nulls are skipped, as in DuckDB (concat(null) is '')

            def concat(v: list[Value], n: int) -> Value:
                parts = [pc.coalesce(part, _EMPTY_STRING) for part in v]
                return pc.binary_join_element_wise(*parts, "")

            return self.combine(args, concat)
        if name == "pow":
            return self.combine(args, lambda v, n: _nan_to_null(pc.power(v[0], v[1]), n))
        return self.map(args[0], self.unary_function(node, name, operands))

    def unary_function(self, node: Call, name: str, operands: str) -> Callable[[Value], Value]:
        if name in ("ceil", "floor", "round") and operands == INT:
            return lambda v: v
        if name == "abs":
            return self.checked(node, pc.abs_checked, "int64 overflow")
        if name == "sign":
            return lambda v: pc.cast(pc.sign(v), pa.int64())
        simple: dict[str, Callable[[Value], Value]] = {
            "ceil": pc.ceil,
            "floor": pc.floor,
            "round": lambda v: pc.round(v, options=_ROUND),
            "exp": pc.exp,  # overflows to inf, as in DuckDB
            "lower": pc.ascii_lower,  # ASCII only: the engines' Unicode tables differ
            "upper": pc.ascii_upper,
            "length": lambda v: pc.cast(pc.utf8_length(v), pa.int64()),
            "day_of_week": lambda v: pc.day_of_week(v, options=_MONDAY_ZERO),
            "epoch_seconds": lambda v: pc.divide(
                pc.cast(pc.cast(v, pa.int64()), pa.float64(), safe=False), _MICROS
            ),
        }
        if name in simple:
            return simple[name]
        kernel = _KERNELS[name]
        if name in _PARTS:
            return kernel
        if name == "sqrt":  # sqrt(-1) is NaN, so null
            return lambda v: _nan_to_null(kernel(v), len(v) if isinstance(v, pa.Array) else 1)
        if name in ("ln", "log10"):  # null for 0 (not -inf) and below

            def log(v: Value) -> Value:
                n = len(v) if isinstance(v, pa.Array) else 1
                return _null_where(kernel(v), pc.less_equal(v, _ZERO[FLOAT]), n, _NULLS[FLOAT])

            return log
        return kernel


# -- inputs and results ------------------------------------------------------------------


def input_array(values: pa.Array | pa.ChunkedArray, kind: str) -> pa.Array:
    """`values` as one Arrow array of the type expressions compute with for expression
    type `kind` (int32 widened, timestamps as UTC microseconds; a naive one is UTC)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    target = _ARROW[kind]
    if values.type == target:
        return values
    if not _FAMILY[kind](values.type):  # a cast would parse text, or read bools as 0/1
        raise InputError(f"a {values.type} array cannot be read as {kind}")
    if kind == TIMESTAMP and pa.types.is_timestamp(values.type) and values.type.tz is None:
        values = values.cast(pa.timestamp(values.type.unit, tz="UTC"))
    return values.cast(target)


def _read(
    inputs: Mapping[str, pa.Array | pa.ChunkedArray], name: str, kind: str, rows: int, text: str
) -> pa.Array:
    if name not in inputs:
        raise InputError(f"expression '{text}': no input column '{name}'")
    try:
        values = input_array(inputs[name], kind)
    except (InputError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise InputError(f"expression '{text}': column '{name}': {error}") from None
    if len(values) != rows:
        raise InputError(
            f"expression '{text}': column '{name}' has {len(values)} rows, expected {rows}"
        )
    if kind == FLOAT:  # NaN is read as null (see the module docstring)
        values = _nan_to_null(values, rows)
        if isinstance(values, pa.Scalar):
            values = pa.nulls(rows, pa.float64())
    return values


def cast_result(values: pa.Array, dtype: str, label: str = "expression") -> pa.Array:
    """An expression's result converted to the dtype its definition declares (e.g. an
    int64 result declared int32 or float64); InputError if a value does not fit."""
    target = arrow_type(parse_dtype(dtype))
    if values.type == target:
        return values
    try:
        return values.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise InputError(f"{label}: a value does not fit {dtype}: {error}") from None


@lru_cache(maxsize=1024)
def _compile(expr: Expr, inputs: tuple[tuple[str, str], ...]) -> Evaluator:
    typed = typecheck(expr, dict(inputs))
    compiler = _Compiler(typed)
    root = compiler.value(expr)
    text = compiler.text
    kinds = [(name, input_type(name, dtype)) for name, dtype in inputs]
    target = _ARROW[typed.result]
    run = root.run

    def evaluate(inputs: Mapping[str, pa.Array | pa.ChunkedArray], num_rows: int) -> pa.Array:
        if num_rows == 0:  # nothing is evaluated, so nothing can raise (as in DuckDB)
            return pa.array([], target)
        env = {name: _read(inputs, name, kind, num_rows, text) for name, kind in kinds}
        result = run(env, num_rows)
        if isinstance(result, pa.Scalar):
            return pa.repeat(result, num_rows) if result.is_valid else pa.nulls(num_rows, target)
        return result

    return evaluate


def compile_arrow(expr: Expr, dtypes: Mapping[str, str]) -> Evaluator:
    """`expr` compiled for input columns of Almanac `dtypes`: a function of
    (inputs, num_rows) returning the values as one Arrow array of `infer_dtype`'s type.
    Compiled once per (expression, input dtypes) and cached; ExpressionError if invalid.
    Inputs are Arrow arrays (or chunked arrays) of `num_rows` values; an overflow raises
    `ExpressionValueError`."""
    names = sorted(columns(expr))
    if not set(names) <= dtypes.keys():
        typecheck(expr, dtypes)  # names the unknown column, and the known ones
    return _compile(expr, tuple((name, dtypes[name]) for name in names))


def evaluate(
    expr: Expr,
    inputs: Mapping[str, pa.Array | pa.ChunkedArray],
    num_rows: int,
    dtypes: Mapping[str, str],
) -> pa.Array:
    """The values of `expr` over `num_rows` rows of `inputs` (columns of Almanac
    `dtypes`), typed as `infer_dtype` says. Hot paths keep `compile_arrow`'s function."""
    return compile_arrow(expr, dtypes)(inputs, num_rows)
