"""On-demand expressions evaluated in plain Python, for the tiny batches of online serving.

Online, an expression view computes 1-16 rows per request, where each pyarrow.compute
call costs more than its arithmetic. `compile_rows` compiles an expression once into
closures over Python lists that give what `compile_arrow(...)(...).to_pylist()` gives:
the same values, nulls, signed zeros, types and errors (docs/expressions.md).

It mirrors `almanac.semantics.expressions._Compiler` node for node, so that the rows that
are evaluated, and the error raised first, are Arrow's: the same constant folding, a
node's children evaluated before it (left to right), each node over all of its rows at
once, and `case`/`if`/`coalesce` evaluating a branch only on the rows that reach it.
Floats follow Arrow's C kernels: `/` and float `+ - *` give null for NaN; `round` is
Arrow's (half away from zero by `std::round`, but a fraction computed as exactly 0.5
goes to `floor` below zero: `round(-0.49999999999999994)` is -1.0, as in Arrow); `ceil`
and `floor` keep signed zeros; `sqrt`, `ln`, `log10`, `exp` and `pow` call the C
library through `math` (the one Arrow calls), with C's results where `math` raises.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

from almanac.errors import InputError
from almanac.semantics.expression_parse import (
    Between,
    Binary,
    Call,
    Case,
    Cast,
    Column,
    Expr,
    InList,
    IsNull,
    Literal,
    Unary,
    columns,
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
    input_type,
    typecheck,
)

__all__ = ["UTC", "RowsEvaluator", "compile_rows", "evaluate_rows"]

Env: TypeAlias = Mapping[str, Sequence[Any]]
Run: TypeAlias = Callable[[Env, int], Sequence[Any]]
RowsEvaluator: TypeAlias = Callable[[Mapping[str, Sequence[Any]], int], list[Any]]

UTC = ZoneInfo("UTC")  # the tzinfo of pyarrow's to_pylist() for timestamp[us, tz=UTC]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN, _MAX = -(2**63), 2**63 - 1
_TWO_63 = 9223372036854775808.0  # 2**63: the first float64 out of the int64 range
_NOT_CONSTANT: Any = object()
_COMPARE = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le}
_COMPARE |= {">": operator.gt, ">=": operator.ge}
_ARITHMETIC = {"+": operator.add, "-": operator.sub, "*": operator.mul}
_LOWER = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}
_UPPER = {code + 32: code for code in range(ord("A"), ord("Z") + 1)}
_DAYS_BEFORE = (0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


# -- values: Arrow's kernels, one value at a time (never called with a null) -------------


def _real(value: float) -> float | None:
    return value if value == value else None  # NaN is never a value


def _divide(x: float, y: float) -> float | None:
    if y == 0:  # 0.0 and -0.0
        return None
    quotient = x / y
    return quotient if quotient == quotient else None


def _kleene_and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def _kleene_or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def _c_round(x: float) -> float:
    """C's round(): half away from zero, the sign kept (round(-0.4) is -0.0)."""
    magnitude = abs(x)
    whole = math.floor(magnitude)
    if magnitude - whole >= 0.5:
        whole += 1
    return math.copysign(float(whole), x)


def _arrow_round(x: float, half_to_even: bool) -> float:
    """Arrow's `round` kernel with ndigits=0 (scalar_round.cc), step by step: it tells a
    tie by `x - floor(x) == 0.5` computed in float64, which a few non-ties below zero
    also pass (-0.49999999999999994)."""
    if x - x != 0:  # inf (NaN never gets here)
        return x
    fraction = x - float(math.floor(x))
    if fraction == 0:
        return x
    if fraction != 0.5:
        return _c_round(x)
    if half_to_even:
        return _c_round(x * 0.5) * 2
    return float(math.floor(x)) if x < 0 else float(math.ceil(x))


def _ceil(x: float) -> float:
    if x - x != 0:
        return x
    result = float(math.ceil(x))
    return result if result else math.copysign(0.0, x)  # ceil(-0.5) is -0.0


def _floor(x: float) -> float:
    if x - x != 0:
        return x
    result = float(math.floor(x))
    return result if result else math.copysign(0.0, x)  # floor(-0.0) is -0.0


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _odd(y: float) -> bool:
    return math.fmod(abs(y), 2.0) == 1.0


def _pow(x: float, y: float) -> float | None:
    """C's pow(), which `math.pow` calls but raises where C returns NaN or inf."""
    try:
        result = math.pow(x, y)
    except ValueError:  # a negative ** a non-integer (NaN), or 0 ** a negative (inf)
        if x != 0:
            return None
        return math.copysign(math.inf, x) if _odd(y) else math.inf
    except OverflowError:
        return -math.inf if x < 0 and _odd(y) else math.inf
    return result if result == result else None


def _day_of_year(t: datetime) -> int:
    year, month = t.year, t.month
    leap = month > 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return _DAYS_BEFORE[month] + t.day + leap


def _epoch_seconds(t: datetime) -> float:
    # as Arrow: the int64 microseconds, converted to float64, divided by 1e6
    delta = t - _EPOCH
    return float((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds) / 1e6


_UNARY: dict[str, Callable[[Any], Any]] = {
    "sign": _sign,
    "sqrt": lambda x: math.sqrt(x) if x >= 0 else None,  # sqrt(-0.0) is -0.0
    "ln": lambda x: math.log(x) if x > 0 else None,
    "log10": lambda x: math.log10(x) if x > 0 else None,
    "exp": _exp,
    "lower": lambda text: text.lower() if text.isascii() else text.translate(_LOWER),
    "upper": lambda text: text.upper() if text.isascii() else text.translate(_UPPER),
    "length": len,  # in code points, as Arrow's utf8_length
    "day_of_week": datetime.weekday,  # 0 = Monday
    "day_of_year": _day_of_year,
    "epoch_seconds": _epoch_seconds,
}
_UNARY |= {part: operator.attrgetter(part) for part in ("year", "month", "day", "hour")}
_UNARY |= {part: operator.attrgetter(part) for part in ("minute", "second")}  # UTC fields


# -- compiled nodes ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Node:
    """A compiled sub-expression: `run(env, n)` gives its `n` values from the columns in
    `env` (at least those of `reads`); `const` is its value if it was folded."""

    run: Run
    reads: frozenset[str]
    const: Any = _NOT_CONSTANT


def _constant(value: Any) -> _Node:
    return _Node(lambda env, n: [value] * n, frozenset(), value)


def _on_rows(node: _Node, env: Env, n: int, rows: list[int] | None) -> Sequence[Any]:
    """`node`'s values on the `rows` (None: every row), null on the others."""
    if node.const is not _NOT_CONSTANT:
        return [node.const] * n
    if rows is None or len(rows) == n:
        return node.run(env, n)
    part = node.run({name: [env[name][i] for i in rows] for name in node.reads}, len(rows))
    values: list[Any] = [None] * n
    for row, value in zip(rows, part, strict=True):
        values[row] = value
    return values


def _mapped(run: Run, apply: Callable[[Any], Any]) -> Run:
    return lambda env, n: [None if v is None else apply(v) for v in run(env, n)]


def _zipped(left: _Node, right: _Node, apply: Callable[[Any, Any], Any]) -> Run:
    """`apply` on the pairs of non-null values; null where either is null."""
    run_left, run_right, const = left.run, right.run, right.const
    if const is None:  # evaluated for its errors only
        return lambda env, n: [None] * len(run_left(env, n))
    if const is not _NOT_CONSTANT:
        return lambda env, n: [None if a is None else apply(a, const) for a in run_left(env, n)]
    return lambda env, n: [
        None if a is None or b is None else apply(a, b)
        for a, b in zip(run_left(env, n), run_right(env, n), strict=True)
    ]


class _Compiler:
    def __init__(self, typed: Typed) -> None:
        self.typed = typed
        self.text = to_text(typed.root)

    def message(self, node: Expr, problem: str) -> str:
        where = "" if node is self.typed.root else f" in '{to_text(node)}'"
        return f"expression '{self.text}': {problem}{where}"

    def int64(self, node: Expr, apply: Callable[..., int]) -> Callable[..., int]:
        """`apply` checked for int64 overflow, raising Arrow's error for `node`."""
        message = self.message(node, "int64 overflow")

        def checked(*args: int) -> int:
            result = apply(*args)
            if _MIN <= result <= _MAX:
                return result
            raise ExpressionValueError(message)

        return checked

    def value(self, node: Expr, want: str | None = None) -> _Node:
        """`node` compiled, its value brought to type `want`; constants folded, as
        `_Compiler.value` of the Arrow evaluator does."""
        kind = self.typed.of(node)
        want = want or kind
        if kind == NULL:
            return _constant(None)
        compiled = self.compile(node, kind)
        if kind == INT and want == FLOAT:
            compiled = self.map(compiled, float)
        if not compiled.reads and compiled.const is _NOT_CONSTANT:
            try:
                folded = compiled.run({}, 1)[0]
            except ExpressionValueError:
                pass  # raises only if a row evaluates it (none may: a case branch)
            else:
                compiled = _constant(folded)
        return compiled

    def map(self, node: _Node, apply: Callable[[Any], Any]) -> _Node:
        return _Node(_mapped(node.run, apply), node.reads)

    def zip(self, left: _Node, right: _Node, apply: Callable[[Any, Any], Any]) -> _Node:
        return _Node(_zipped(left, right, apply), left.reads | right.reads)

    def rows(self, nodes: list[_Node], apply: Callable[..., Any]) -> _Node:
        """`apply` on each row's values of `nodes` (nulls included)."""
        runs = [node.run for node in nodes]
        reads = frozenset().union(*(node.reads for node in nodes))
        if len(runs) == 1:
            (only,) = runs
            return _Node(lambda env, n: [apply(v) for v in only(env, n)], reads)
        return _Node(
            lambda env, n: [
                apply(*row) for row in zip(*[run(env, n) for run in runs], strict=True)
            ],
            reads,
        )

    def compile(self, node: Expr, kind: str) -> _Node:
        if isinstance(node, Literal):
            return _constant(node.value)
        if isinstance(node, Column):
            name = node.name
            return _Node(lambda env, n: env[name], frozenset([name]))
        operands = self.typed.operands(node)
        if isinstance(node, Unary):
            operand = self.value(node.operand, operands)
            if node.op == "not":
                return self.map(operand, operator.not_)
            if kind == INT:
                return self.map(operand, self.int64(node, operator.neg))
            return self.map(operand, operator.neg)
        if isinstance(node, Binary):
            return self.binary(node, kind, operands)
        if isinstance(node, IsNull):
            test = (lambda v: v is not None) if node.negated else (lambda v: v is None)
            return self.rows([self.value(node.operand, operands)], test)
        if isinstance(node, InList):
            return self.in_list(node, operands)
        if isinstance(node, Between):
            parts = [self.value(part, operands) for part in (node.operand, node.low, node.high)]
            negated = node.negated

            def between(x: Any, low: Any, high: Any) -> bool | None:
                above = None if x is None or low is None else x >= low
                below = None if x is None or high is None else x <= high
                inside = _kleene_and(above, below)
                return not inside if negated and inside is not None else inside

            return self.rows(parts, between)
        if isinstance(node, Case):
            branches = [(self.value(c, BOOL), self.value(v, kind)) for c, v in node.branches]
            otherwise = None if node.otherwise is None else self.value(node.otherwise, kind)
            return self.case(branches, otherwise)
        if isinstance(node, Cast):
            return self.cast(node, operands)
        assert isinstance(node, Call)
        return self.call(node, kind, operands)

    def binary(self, node: Binary, kind: str, operands: str) -> _Node:
        left, right = self.value(node.left, operands), self.value(node.right, operands)
        op = node.op
        if op in ("and", "or"):
            return self.rows([left, right], _kleene_and if op == "and" else _kleene_or)
        if op in _COMPARE:
            return self.zip(left, right, _COMPARE[op])
        if op == "/":
            return self.zip(left, right, _divide)
        if op == "%":
            message = self.message(node, "int64 overflow")

            def modulo(x: int, y: int) -> int | None:
                if y == 0:
                    return None
                if y == -1 and x == _MIN:
                    raise ExpressionValueError(message)
                remainder = abs(x) % abs(y)  # truncated: the sign of the dividend
                return -remainder if x < 0 else remainder

            return self.zip(left, right, modulo)
        arithmetic = _ARITHMETIC[op]
        if kind == INT:
            return self.zip(left, right, self.int64(node, arithmetic))
        return self.zip(left, right, lambda x, y: _real(arithmetic(x, y)))

    def in_list(self, node: InList, operands: str) -> _Node:
        operand = self.value(node.operand, operands)
        items = [self.value(item, operands) for item in node.items]
        negated = node.negated
        if all(item.const is not _NOT_CONSTANT for item in items):
            # a set compares as '=' does (-0.0 finds 0.0), as Arrow's chain of '=' for floats
            values = frozenset(item.const for item in items if item.const is not None)
            missing: bool | None = None if any(i.const is None for i in items) else False

            def lookup(x: Any) -> bool | None:
                found = True if x in values else missing
                return not found if negated and found is not None else found

            return self.map(operand, lookup)

        def chain(x: Any, *candidates: Any) -> bool | None:
            if x is None:
                return None
            found: bool | None = False
            for candidate in candidates:
                if candidate is None:
                    found = None
                elif x == candidate:
                    found = True
                    break
            return not found if negated and found is not None else found

        return self.rows([operand, *items], chain)

    def case(self, branches: list[tuple[_Node, _Node]], otherwise: _Node | None) -> _Node:
        reads = frozenset().union(*(c.reads | v.reads for c, v in branches))
        reads |= otherwise.reads if otherwise is not None else frozenset()

        def run(env: Env, n: int) -> Sequence[Any]:
            result: list[Any] = [None] * n
            open_: list[int] | None = None  # the rows no branch took; None: every row
            for condition, then in branches:
                tested = _on_rows(condition, env, n, open_)
                candidates = range(n) if open_ is None else open_
                chosen = [row for row in candidates if tested[row] is True]
                if not chosen:
                    continue
                values = _on_rows(then, env, n, chosen)
                for row in chosen:
                    result[row] = values[row]
                open_ = [row for row in candidates if tested[row] is not True]
                if not open_:
                    return result
            if otherwise is not None:
                values = _on_rows(otherwise, env, n, open_)
                for row in range(n) if open_ is None else open_:
                    result[row] = values[row]
            return result

        return _Node(run, reads)

    def coalesce(self, args: list[_Node]) -> _Node:
        reads = frozenset().union(*(arg.reads for arg in args))

        def run(env: Env, n: int) -> Sequence[Any]:
            result = _on_rows(args[0], env, n, None)
            for arg in args[1:]:
                missing = [row for row, value in enumerate(result) if value is None]
                if not missing:
                    return result
                later = _on_rows(arg, env, n, missing)
                result = [
                    value if value is not None else other
                    for value, other in zip(result, later, strict=True)
                ]
            return result

        return _Node(run, reads)

    def cast(self, node: Cast, source: str) -> _Node:
        operand = self.value(node.operand, source if source != NULL else node.dtype)
        target = node.dtype
        if source in (target, NULL):
            return operand
        if target == INT and source == FLOAT:  # half to even; out of range raises
            message = self.message(node, "float64 value out of the int64 range")

            def to_int(x: float) -> int:
                rounded = _arrow_round(x, half_to_even=True)
                if -_TWO_63 <= rounded < _TWO_63:
                    return int(rounded)
                raise ExpressionValueError(message)

            return self.map(operand, to_int)
        convert: Callable[[Any], Any] = {
            INT: int,  # from bool
            FLOAT: float,  # from int64 (the nearest float64) or bool
            BOOL: bool,  # from int64
        }.get(target, str)
        if target == STRING and source == BOOL:
            convert = {True: "true", False: "false"}.__getitem__
        return self.map(operand, convert)

    def call(self, node: Call, kind: str, operands: str) -> _Node:
        spec = function(node.name)
        assert spec is not None
        name = spec.name
        if name == "if":
            condition = self.value(node.args[0], BOOL)
            then, otherwise = (self.value(arg, kind) for arg in node.args[1:])
            return self.case([(condition, then)], otherwise)
        args = [self.value(arg, operands) for arg in node.args]
        if name == "coalesce":
            return self.coalesce(args)
        if name == "nullif":
            return self.rows(
                args, lambda a, b: None if a is not None and b is not None and a == b else a
            )
        if name in ("least", "greatest"):  # nulls skipped; of ties, the first argument
            better = operator.lt if name == "least" else operator.gt

            def pick(*values: Any) -> Any:
                best = None
                for value in values:
                    if value is not None and (best is None or better(value, best)):
                        best = value
                return best

            return self.rows(args, pick)
        if name == "concat":  # nulls are skipped: concat(null) is ''
            return self.rows(args, lambda *parts: "".join([p for p in parts if p is not None]))
        if name == "pow":
            return self.zip(args[0], args[1], _pow)
        if name in ("ceil", "floor", "round") and operands == INT:
            return self.map(args[0], lambda v: v)
        if name == "abs":
            return self.map(args[0], self.int64(node, abs) if operands == INT else abs)
        if name in ("ceil", "floor", "round"):
            rounding = {"ceil": _ceil, "floor": _floor}.get(name)
            return self.map(args[0], rounding or (lambda x: _arrow_round(x, half_to_even=False)))
        return self.map(args[0], _UNARY[name])


# -- inputs and the compiled function ----------------------------------------------------


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:  # naive: read as UTC
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _floats(values: Sequence[Any]) -> Sequence[Any]:
    return [None if v is None or v != v else float(v) for v in values]


def _times(values: Sequence[Any]) -> Sequence[Any]:
    return [v if v is None or v.tzinfo is UTC else _utc(v) for v in values]


_CONVERT: dict[str, Callable[[Sequence[Any]], Sequence[Any]]] = {FLOAT: _floats, TIMESTAMP: _times}


def _reader(
    name: str, kind: str, text: str
) -> Callable[[Mapping[str, Sequence[Any]], int], Sequence[Any]]:
    """Reads column `name` as the Arrow evaluator's `_read` does: its presence and length
    checked, NaN as null (a float column), timestamps in UTC."""

    convert = _CONVERT.get(kind)

    def read(inputs: Mapping[str, Sequence[Any]], rows: int) -> Sequence[Any]:
        try:
            values = inputs[name]
        except KeyError:
            raise InputError(f"expression '{text}': no input column '{name}'") from None
        if len(values) != rows:
            raise InputError(
                f"expression '{text}': column '{name}' has {len(values)} rows, expected {rows}"
            )
        return values if convert is None else convert(values)

    return read


@lru_cache(maxsize=1024)
def _compile(expr: Expr, inputs: tuple[tuple[str, str], ...]) -> RowsEvaluator:
    typed = typecheck(expr, dict(inputs))
    compiler = _Compiler(typed)
    root = compiler.value(expr)
    kinds = [(name, input_type(name, dtype)) for name, dtype in inputs]
    readers = [(name, _reader(name, kind, compiler.text)) for name, kind in kinds]
    shared = [name for name, kind in kinds if kind in (INT, BOOL, STRING)]  # read as given
    run, const = root.run, root.const

    def evaluate(inputs: Mapping[str, Sequence[Any]], num_rows: int) -> list[Any]:
        if num_rows == 0:  # nothing is evaluated, so nothing can raise (as in Arrow)
            return []
        env = {name: read(inputs, num_rows) for name, read in readers}
        if const is not _NOT_CONSTANT:
            return [const] * num_rows
        result = run(env, num_rows)
        if type(result) is not list:
            return list(result)
        for name in shared:
            if result is env[name]:
                return list(result)  # never the caller's own list
        return result

    return evaluate


def compile_rows(expr: Expr, dtypes: Mapping[str, str]) -> RowsEvaluator:
    """`expr` compiled for input columns of Almanac `dtypes`: a function of
    (inputs, num_rows) returning the `num_rows` values as a list, exactly as
    `compile_arrow(expr, dtypes)(...).to_pylist()` gives them. Inputs are sequences of
    Python values as `pyarrow.Array.to_pylist()` gives them (None: null; a NaN reads as
    null; timestamps are datetimes, naive ones read as UTC). Compiled once per
    (expression, input dtypes) and cached; ExpressionError if invalid; an int64 overflow
    raises `ExpressionValueError`, for the same inputs and with the same message."""
    names = sorted(columns(expr))
    if not set(names) <= dtypes.keys():
        typecheck(expr, dtypes)  # names the unknown column, and the known ones
    return _compile(expr, tuple((name, dtypes[name]) for name in names))


def evaluate_rows(
    expr: Expr, inputs: Mapping[str, Sequence[Any]], num_rows: int, dtypes: Mapping[str, str]
) -> list[Any]:
    """The values of `expr` over `num_rows` rows of `inputs` (lists of Python values of
    Almanac `dtypes`). Hot paths keep `compile_rows`'s function."""
    return compile_rows(expr, dtypes)(inputs, num_rows)
