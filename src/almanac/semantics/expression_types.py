"""The types of the expression language, and the functions it knows.

An expression computes with five types — int64, float64, bool, string, timestamp (UTC) —
plus the type of a bare `null`, which takes the type its context needs. Narrow input
dtypes widen on the way in (int32 → int64, float32 → float64). `typecheck` types every
node of a tree once and is what both evaluators compile from, so they cannot disagree
on a type; docs/expressions.md is the user's view of the same rules.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

from almanac.definitions.types import parse_dtype
from almanac.errors import InputError
from almanac.semantics.expression_parse import (
    CAST_TYPES,
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
    check_depth,
    children,
    to_text,
)

INT, FLOAT, BOOL, STRING, TIMESTAMP, NULL = (
    "int64",
    "float64",
    "bool",
    "string",
    "timestamp",
    "null",
)
NUMBERS = (INT, FLOAT)
_WIDEN = {"int32": INT, "int64": INT, "float32": FLOAT, "float64": FLOAT}
_WIDEN |= {BOOL: BOOL, STRING: STRING, TIMESTAMP: TIMESTAMP}

# What `cast(x as <to>)` accepts, by target: only conversions both engines do alike
# (text is parsed and floats are printed differently, so neither is offered).
CASTS: dict[str, tuple[str, ...]] = {
    INT: (INT, FLOAT, BOOL),
    FLOAT: (INT, FLOAT, BOOL),
    STRING: (STRING, INT, BOOL),
    BOOL: (BOOL, INT),
    TIMESTAMP: (TIMESTAMP,),
}
assert set(CASTS) == set(CAST_TYPES)


class ExpressionValueError(InputError):
    """The values made an expression fail: an int64 overflow, or a float out of the
    int64 range in a cast. Both evaluators raise it, for the same rows."""


# The dtypes a definition may declare for an expression's value, by the value's type.
_DECLARABLE = {INT: ("int32", INT, "float32", FLOAT), FLOAT: ("float32", FLOAT)}
_DECLARABLE |= {kind: (kind,) for kind in (BOOL, STRING, TIMESTAMP)}


def check_declared(result: str, declared: str, label: str = "expression") -> str:
    """The canonical form of `declared`, the dtype a definition gives an expression whose
    value is of type `result`; ExpressionError unless that value converts to it (an int64
    narrows to int32 or widens to a float, a float64 narrows to float32)."""
    try:
        canonical = parse_dtype(declared)
    except ValueError as error:
        raise ExpressionError(f"{label}: {error}") from None
    if canonical not in _DECLARABLE.get(result, ()):
        raise ExpressionError(
            f"{label}: its value is {result}, which cannot be declared {canonical}"
        )
    return canonical


def input_type(name: str, dtype: str) -> str:
    """The expression type a column of Almanac dtype `dtype` is read as."""
    try:
        canonical = parse_dtype(dtype)
    except ValueError as error:
        raise ExpressionError(f"column '{name}': {error}") from None
    if canonical not in _WIDEN:
        known = ", ".join(_WIDEN)
        raise ExpressionError(
            f"column '{name}' is {canonical}; expressions read only {known} columns"
        )
    return _WIDEN[canonical]


def unify(types: Sequence[str]) -> str | None:
    """The one type values of `types` are compared or combined as (int64 with float64 is
    float64; null takes any type), or None if they have none."""
    concrete = {t for t in types if t != NULL}
    if not concrete:
        return NULL
    if concrete <= set(NUMBERS):
        return FLOAT if FLOAT in concrete else INT
    return concrete.pop() if len(concrete) == 1 else None


# -- functions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Function:
    """A function's arity and typing. `params` says what the arguments must be: each a
    "number", "string" or "timestamp"; "same" (all of one type, which `ordered` restricts
    to numbers, strings and timestamps); or "if" (a bool, then two of one type).
    `result` is a type, "same" (that one type) or "arg" (the first argument's type)."""

    name: str
    min_args: int
    max_args: int | None
    params: str
    result: str
    ordered: bool = False


def _functions() -> dict[str, Function]:
    specs = [
        Function("coalesce", 1, None, "same", "same"),
        Function("nullif", 2, 2, "same", "same"),
        Function("if", 3, 3, "if", "same"),
        Function("least", 1, None, "same", "same", ordered=True),
        Function("greatest", 1, None, "same", "same", ordered=True),
        Function("sign", 1, 1, "number", INT),
        Function("sqrt", 1, 1, "number", FLOAT),
        Function("ln", 1, 1, "number", FLOAT),
        Function("log10", 1, 1, "number", FLOAT),
        Function("exp", 1, 1, "number", FLOAT),
        Function("pow", 2, 2, "number", FLOAT),
        Function("lower", 1, 1, "string", STRING),
        Function("upper", 1, 1, "string", STRING),
        Function("length", 1, 1, "string", INT),
        Function("concat", 1, None, "string", STRING),
        Function("epoch_seconds", 1, 1, "timestamp", FLOAT),
    ]
    specs += [Function(name, 1, 1, "number", "arg") for name in ("abs", "ceil", "floor", "round")]
    parts = ("year", "month", "day", "hour", "minute", "second", "day_of_week", "day_of_year")
    specs += [Function(name, 1, 1, "timestamp", INT) for name in parts]
    return {spec.name: spec for spec in specs}


FUNCTIONS = _functions()
ALIASES = {"power": "pow"}


def function(name: str) -> Function | None:
    """The function called `name` (lower case, aliases resolved), or None."""
    return FUNCTIONS.get(ALIASES.get(name, name))


# -- type checking -----------------------------------------------------------------------


class Typed:
    """The type of every node of one expression (`of`), and the type its operands are
    brought to before the operation (`operands`: comparisons, `in`, `between`, `case`,
    arithmetic and the functions whose arguments unify)."""

    def __init__(self, root: Expr, result: str) -> None:
        self.root = root
        self.result = result
        self._types: dict[int, str] = {}
        self._operands: dict[int, str] = {}

    def of(self, node: Expr) -> str:
        return self._types[id(node)]

    def operands(self, node: Expr) -> str:
        return self._operands[id(node)]


def typecheck(expr: Expr, inputs: Mapping[str, str]) -> Typed:
    """Type every node of `expr` given its input columns' Almanac dtypes; ExpressionError
    naming the problem (unknown column or function, type mismatch, wrong arity)."""
    if not isinstance(expr, Expr):
        raise ExpressionError(f"not an expression: {expr!r}")
    check_depth(expr)
    checker = _Checker(expr, inputs)
    result = checker.visit(expr)
    typed = checker.typed
    typed.result = result
    if result == NULL:
        checker.fail("its value is always null; give it a type, e.g. cast(null as float64)")
    return typed


def infer_dtype(expr: Expr, inputs: Mapping[str, str]) -> str:
    """The Almanac dtype of `expr`'s value given its input columns' dtypes."""
    return typecheck(expr, inputs).result


def _describe(types: Sequence[str]) -> str:
    return ", ".join(dict.fromkeys(types))


class _Checker:
    def __init__(self, root: Expr, inputs: Mapping[str, str]) -> None:
        self.text = to_text(root)
        self.inputs = inputs
        self.typed = Typed(root, NULL)

    def fail(self, problem: str) -> NoReturn:
        raise ExpressionError(f"expression '{self.text}': {problem}")

    def visit(self, node: Expr) -> str:
        kinds = [self.visit(child) for child in children(node)]
        result, operands = self.check(node, kinds)
        self.typed._types[id(node)] = result
        if operands is not None:
            self.typed._operands[id(node)] = operands
        return result

    def unified(self, kinds: Sequence[str], what: str, ordered: bool = False) -> str:
        common = unify(kinds)
        if common is None:
            self.fail(f"{what} needs values of one type, got {_describe(kinds)}")
        if ordered and common not in (*NUMBERS, STRING, TIMESTAMP, NULL):
            self.fail(f"{what} needs numbers, strings or timestamps, got {common}")
        return common

    def expect(self, kinds: Sequence[str], allowed: tuple[str, ...], what: str, noun: str) -> None:
        wrong = [kind for kind in kinds if kind not in (*allowed, NULL)]
        if wrong:
            self.fail(f"{what} needs {noun}, got {_describe(wrong)}")

    def check(self, node: Expr, kinds: list[str]) -> tuple[str, str | None]:
        if isinstance(node, Literal):
            return node.dtype, None
        if isinstance(node, Column):
            if node.name not in self.inputs:
                self.fail(_unknown("column", node.name, self.inputs))
            return input_type(node.name, self.inputs[node.name]), None
        if isinstance(node, Unary):
            if node.op == "not":
                self.expect(kinds, (BOOL,), "'not'", "a bool")
                return BOOL, BOOL
            if node.op != "-":
                self.fail(f"unknown operator '{node.op}'")
            self.expect(kinds, NUMBERS, "'-'", "a number")
            return kinds[0], kinds[0]
        if isinstance(node, Binary):
            return self.binary(node.op, kinds)
        if isinstance(node, IsNull):
            return BOOL, (kinds[0] if kinds[0] != NULL else BOOL)
        if isinstance(node, InList | Between):
            what = "'in'" if isinstance(node, InList) else "'between'"
            common = self.unified(kinds, what, ordered=isinstance(node, Between))
            return BOOL, (common if common != NULL else BOOL)
        if isinstance(node, Case):
            conditions = kinds[0 : 2 * len(node.branches) : 2]
            self.expect(conditions, (BOOL,), "'case when'", "bool conditions")
            values = kinds[1 : 2 * len(node.branches) : 2] + kinds[2 * len(node.branches) :]
            common = self.unified(values, "'case'")
            if common == NULL:
                self.fail("'case' gives null in every branch")
            return common, common
        if isinstance(node, Cast):
            if node.dtype not in CASTS:
                self.fail(f"cannot cast to '{node.dtype}' (types: {', '.join(CASTS)})")
            if kinds[0] not in (*CASTS[node.dtype], NULL):
                self.fail(
                    f"cannot cast {kinds[0]} to {node.dtype} (the engines convert it differently)"
                )
            return node.dtype, kinds[0]
        if isinstance(node, Call):
            return self.call(node, kinds)
        raise TypeError(f"not an expression node: {node!r}")

    def binary(self, op: str, kinds: list[str]) -> tuple[str, str | None]:
        if op in Binary.LOGIC:
            self.expect(kinds, (BOOL,), f"'{op}'", "bools")
            return BOOL, BOOL
        if op in Binary.COMPARISONS:
            common = unify(kinds)
            if common is None:
                self.fail(f"'{op}' cannot compare {kinds[0]} with {kinds[1]}")
            return BOOL, (common if common != NULL else BOOL)
        if op not in Binary.ARITHMETIC:
            self.fail(f"unknown operator '{op}'")
        if op == "%":
            self.expect(kinds, (INT,), "'%'", "integers (int64)")
            return (INT if INT in kinds else NULL), INT
        self.expect(kinds, NUMBERS, f"'{op}'", "numbers")
        if op == "/":
            return FLOAT, FLOAT
        common = self.unified(kinds, f"'{op}'")
        return common, common

    def call(self, node: Call, kinds: list[str]) -> tuple[str, str | None]:
        spec = function(node.name)
        if spec is None:
            self.fail(_unknown("function", node.name, [*FUNCTIONS, *ALIASES]))
        what = f"{node.name}()"
        count, low, high = len(kinds), spec.min_args, spec.max_args
        if count < low or (high is not None and count > high):
            wanted = (
                str(low) if low == high else f"at least {low}" if high is None else f"{low}-{high}"
            )
            plural = "" if low == 1 and high in (1, None) else "s"
            self.fail(f"{what} takes {wanted} argument{plural}, got {count}")
        if spec.params == "same":
            common = self.unified(kinds, what, spec.ordered)
            return common, common
        if spec.params == "if":
            self.expect(kinds[:1], (BOOL,), what, "a bool condition")
            common = self.unified(kinds[1:], what)
            if common == NULL:
                self.fail(f"{what} gives null in both branches")
            return common, common
        allowed = {"number": NUMBERS, "string": (STRING,), "timestamp": (TIMESTAMP,)}
        noun = {"number": "numbers", "string": "strings", "timestamp": "a timestamp"}
        self.expect(kinds, allowed[spec.params], what, noun[spec.params])
        if spec.result == "arg":
            return kinds[0], kinds[0]
        if spec.params != "number":
            return spec.result, allowed[spec.params][0]
        # sqrt() and the like compute in float64; sign() in its argument's type
        return spec.result, FLOAT if spec.result == FLOAT else (
            kinds[0] if kinds[0] != NULL else INT
        )


def _unknown(kind: str, name: str, known: Mapping[str, str] | Sequence[str]) -> str:
    names = sorted(known)
    message = f"unknown {kind} '{name}'"
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    if close:
        message += "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    if kind == "column":
        message += f" (known: {', '.join(names) or 'none'})"
    return message
