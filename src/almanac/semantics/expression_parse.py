"""The on-demand expression language: its syntax tree, parser and printer.

An expression is text a user writes in a definition (docs/expressions.md), so it is
parsed here by hand — a tokenizer and a precedence-climbing parser, never `eval` or
Python's `ast` — into immutable nodes that both evaluators (`almanac.semantics.expressions`
for Arrow, `almanac.offline.duckdb.expressions` for SQL) compile. `str(node)` prints an
expression back as text that parses to the same tree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

from almanac.errors import DefinitionError

MAX_LENGTH = 10_000  # characters of expression text
MAX_DEPTH = 64  # nesting; keeps the recursive parser and compilers far from Python's limit

_KEYWORD_LIST = "and or not is null true false in between case when then else end cast as"
KEYWORDS = frozenset(_KEYWORD_LIST.split(" "))
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# The only type names a cast accepts: the types expressions compute with.
CAST_TYPES = ("int64", "float64", "bool", "string", "timestamp")


class ExpressionError(DefinitionError):
    """An expression is invalid: bad syntax, an unknown column or function, a type
    mismatch. The message quotes the expression and names the position or the part."""


# -- syntax tree -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expr:
    """A node of an expression's syntax tree."""

    def __str__(self) -> str:
        return to_text(self)


@dataclass(frozen=True, slots=True, eq=False)
class Literal(Expr):
    """A constant: an int64, float64, bool, string, or untyped null. `dtype` is derived
    from the value when omitted."""

    value: bool | int | float | str | None
    dtype: str = ""

    def __post_init__(self) -> None:
        value = self.value
        if value is None:
            dtype = "null"
        elif isinstance(value, bool):
            dtype = "bool"
        elif isinstance(value, int):
            if not -(2**63) <= value < 2**63:
                raise ExpressionError(f"integer literal {value} is out of the int64 range")
            dtype = "int64"
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ExpressionError(f"number literal {value} is not finite")
            dtype = "float64"
        elif isinstance(value, str):
            dtype = "string"
        else:
            raise ExpressionError(f"unsupported literal {value!r}")
        if self.dtype and self.dtype != dtype:
            raise ExpressionError(f"literal {value!r} is a {dtype}, not {self.dtype}")
        object.__setattr__(self, "dtype", dtype)

    # 1 == 1.0 == True and 0.0 == -0.0 in Python, but not here: they are different
    # expressions (types, signed zeros), and compiled expressions are cached by node.
    def _key(self) -> tuple[str, str]:
        return self.dtype, repr(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Literal) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


@dataclass(frozen=True, slots=True)
class Column(Expr):
    """An input column: a request field or a feature."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not IDENTIFIER.match(self.name):
            raise ExpressionError(
                f"column name {self.name!r} is not an identifier (letters, digits, underscores)"
            )


@dataclass(frozen=True, slots=True)
class Unary(Expr):
    """`-x` or `not x`."""

    op: str
    operand: Expr

    OPS: ClassVar[tuple[str, ...]] = ("-", "not")


@dataclass(frozen=True, slots=True)
class Binary(Expr):
    """Arithmetic (`+ - * / %`), a comparison (`= != < <= > >=`) or `and`/`or`."""

    op: str
    left: Expr
    right: Expr

    ARITHMETIC: ClassVar[tuple[str, ...]] = ("+", "-", "*", "/", "%")
    COMPARISONS: ClassVar[tuple[str, ...]] = ("=", "!=", "<", "<=", ">", ">=")
    LOGIC: ClassVar[tuple[str, ...]] = ("and", "or")


@dataclass(frozen=True, slots=True)
class Call(Expr):
    """A function call; `name` is lower case (see `almanac.semantics.expression_types`)."""

    name: str
    args: tuple[Expr, ...] = ()


@dataclass(frozen=True, slots=True)
class Case(Expr):
    """`case when c1 then v1 ... [else e] end`: the first branch whose condition is true."""

    branches: tuple[tuple[Expr, Expr], ...]
    otherwise: Expr | None = None


@dataclass(frozen=True, slots=True)
class IsNull(Expr):
    """`x is null` (or `x is not null` when negated)."""

    operand: Expr
    negated: bool = False


@dataclass(frozen=True, slots=True)
class InList(Expr):
    """`x in (a, b, ...)` (or `not in`)."""

    operand: Expr
    items: tuple[Expr, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Between(Expr):
    """`x between low and high`, bounds included (or `not between`)."""

    operand: Expr
    low: Expr
    high: Expr
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Cast(Expr):
    """`cast(x as dtype)`, dtype one of `CAST_TYPES`."""

    operand: Expr
    dtype: str


def children(expr: Expr) -> tuple[Expr, ...]:
    """The direct sub-expressions of `expr`, in evaluation order."""
    if isinstance(expr, Unary | Cast | IsNull):
        return (expr.operand,)
    if isinstance(expr, Binary):
        return expr.left, expr.right
    if isinstance(expr, Call):
        return expr.args
    if isinstance(expr, Case):
        inner = [part for branch in expr.branches for part in branch]
        return (*inner, expr.otherwise) if expr.otherwise is not None else tuple(inner)
    if isinstance(expr, InList):
        return expr.operand, *expr.items
    if isinstance(expr, Between):
        return expr.operand, expr.low, expr.high
    return ()


def columns(expr: Expr) -> set[str]:
    """The input columns `expr` reads."""
    found: set[str] = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Column):
            found.add(node.name)
        stack.extend(children(node))
    return found


# -- tokenizer ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # number, string, name, quoted, keyword, op, end
    text: str  # the source text (keywords lower-cased)
    start: int  # 0-based offset into the expression
    value: object = field(default=None, compare=False)


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^']|'')*')
  | (?P<quoted>"[^"]*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><>|!=|==|<=|>=|[-+*/%(),=<>])
    """,
    re.VERBOSE,
)


def _tokens(text: str, fail: _Fail) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            if text[position] == "'":
                raise fail("unterminated string", position)
            if text[position] == '"':
                raise fail('unterminated quoted name (missing ")', position)
            raise fail(f"unexpected character {text[position]!r}", position)
        kind, raw = match.lastgroup or "", match.group()
        start, position = position, match.end()
        if kind == "space":
            continue
        if kind == "number":
            tokens.append(_Token(kind, raw, start, _number(raw, start, fail)))
        elif kind == "string":
            tokens.append(_Token(kind, raw, start, raw[1:-1].replace("''", "'")))
        elif kind == "quoted":
            if not IDENTIFIER.match(raw[1:-1]):
                raise fail(
                    f"{raw} is not a column name (letters, digits, underscores; "
                    "not starting with a digit)",
                    start,
                )
            tokens.append(_Token(kind, raw, start, raw[1:-1]))
        elif kind == "name" and raw.lower() in KEYWORDS:
            tokens.append(_Token("keyword", raw.lower(), start))
        else:
            tokens.append(_Token(kind, raw, start, raw))
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _number(raw: str, start: int, fail: _Fail) -> int | float:
    if re.fullmatch(r"\d+", raw):
        return int(raw)  # the range is checked once a leading minus is known
    value = float(raw)
    if not math.isfinite(value):
        raise fail(f"number {raw} is out of the float64 range", start)
    return value


# -- parser ------------------------------------------------------------------------------


class _Fail:
    """Builds the ExpressionError of a position in the text."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self, problem: str, start: int) -> ExpressionError:
        where = f"at position {start + 1}" + (" (the end)" if start >= len(self.text) else "")
        return ExpressionError(f"expression '{self.text}': {problem} {where}")


_COMPARISON_OPS = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<="}
_COMPARISON_OPS |= {">": ">", ">=": ">="}


class _Parser:
    def __init__(self, text: str) -> None:
        self.fail = _Fail(text)
        self.tokens = _tokens(text, self.fail)
        self.index = 0
        self.depth = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def found(self, token: _Token) -> str:
        return "" if token.kind == "end" else f", found '{token.text}'"

    def at(self, kind: str, *texts: str) -> bool:
        token = self.token
        return token.kind == kind and (not texts or token.text in texts)

    def take(self, kind: str, *texts: str) -> _Token | None:
        if self.at(kind, *texts):
            self.index += 1
            return self.tokens[self.index - 1]
        return None

    def expect(self, kind: str, text: str) -> _Token:
        token = self.take(kind, text)
        if token is None:
            raise self.fail(f"expected '{text}'{self.found(self.token)}", self.token.start)
        return token

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"expression nests deeper than {MAX_DEPTH} levels", self.token.start)

    def parse(self) -> Expr:
        expr = self.expression()
        if not self.at("end"):
            raise self.fail(f"unexpected '{self.token.text}'", self.token.start)
        return expr

    def expression(self) -> Expr:
        self.nested()
        left = self.conjunction()
        while self.take("keyword", "or"):
            left = Binary("or", left, self.conjunction())
        self.depth -= 1
        return left

    def conjunction(self) -> Expr:
        left = self.negation()
        while self.take("keyword", "and"):
            left = Binary("and", left, self.negation())
        return left

    def negation(self) -> Expr:
        if self.take("keyword", "not"):
            self.nested()
            operand = self.negation()
            self.depth -= 1
            return Unary("not", operand)
        return self.predicate()

    def predicate(self) -> Expr:
        left = self.additive()
        token = self.token
        if token.kind == "op" and token.text in _COMPARISON_OPS:
            self.index += 1
            right = self.additive()
            if self.at("op", *_COMPARISON_OPS):
                raise self.fail(
                    "comparisons do not chain (write 'a < b and b < c')", self.token.start
                )
            return Binary(_COMPARISON_OPS[token.text], left, right)
        if self.take("keyword", "is"):
            negated = self.take("keyword", "not") is not None
            self.expect("keyword", "null")
            return IsNull(left, negated)
        negated = False
        if self.at("keyword", "not") and self.tokens[self.index + 1].text in ("in", "between"):
            self.index += 1
            negated = True
        if self.take("keyword", "in"):
            self.expect("op", "(")
            items = [self.expression()]
            while self.take("op", ","):
                items.append(self.expression())
            self.expect("op", ")")
            return InList(left, tuple(items), negated)
        if self.take("keyword", "between"):
            low = self.additive()
            self.expect("keyword", "and")
            return Between(left, low, self.additive(), negated)
        return left

    def additive(self) -> Expr:
        left = self.multiplicative()
        while (token := self.take("op", "+", "-")) is not None:
            left = Binary(token.text, left, self.multiplicative())
        return left

    def multiplicative(self) -> Expr:
        left = self.unary()
        while (token := self.take("op", "*", "/", "%")) is not None:
            left = Binary(token.text, left, self.unary())
        return left

    def unary(self) -> Expr:
        if self.take("op", "-"):
            token = self.token
            if token.kind == "number":  # -9223372036854775808 is a literal, in range
                self.index += 1
                return self.literal(-token.value, token)  # type: ignore[operator]
            self.nested()
            operand = self.unary()
            self.depth -= 1
            return Unary("-", operand)
        return self.primary()

    def literal(self, value: int | float, token: _Token) -> Literal:
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise self.fail(f"integer {token.text} is out of the int64 range", token.start)
        return Literal(value)

    def primary(self) -> Expr:
        token = self.token
        self.index += 1
        if token.kind == "number":
            return self.literal(token.value, token)  # type: ignore[arg-type]
        if token.kind == "string":
            return Literal(str(token.value))
        if token.kind == "quoted":
            return Column(str(token.value))
        if token.kind == "name":
            if self.take("op", "("):
                return self.call(token)
            return Column(token.text)
        if token.kind == "keyword":
            if token.text in ("true", "false"):
                return Literal(token.text == "true")
            if token.text == "null":
                return Literal(None)
            if token.text == "case":
                return self.case()
            if token.text == "cast":
                return self.cast()
        if token.kind == "op" and token.text == "(":
            inner = self.expression()
            self.expect("op", ")")
            return inner
        self.index -= 1
        raise self.fail(f"expected a value{self.found(token)}", token.start)

    def call(self, name: _Token) -> Call:
        args: list[Expr] = []
        if not self.take("op", ")"):
            args.append(self.expression())
            while self.take("op", ","):
                args.append(self.expression())
            self.expect("op", ")")
        return Call(name.text.lower(), tuple(args))

    def case(self) -> Case:
        branches = []
        while self.take("keyword", "when"):
            condition = self.expression()
            self.expect("keyword", "then")
            branches.append((condition, self.expression()))
        if not branches:
            raise self.fail(f"expected 'when'{self.found(self.token)}", self.token.start)
        otherwise = self.expression() if self.take("keyword", "else") else None
        self.expect("keyword", "end")
        return Case(tuple(branches), otherwise)

    def cast(self) -> Cast:
        self.expect("op", "(")
        operand = self.expression()
        self.expect("keyword", "as")
        token = self.token
        if token.kind != "name" or token.text.lower() not in CAST_TYPES:
            raise self.fail(
                f"expected a type ({', '.join(CAST_TYPES)}){self.found(token)}",
                token.start,
            )
        self.index += 1
        self.expect("op", ")")
        return Cast(operand, token.text.lower())


def parse(text: str) -> Expr:
    """The syntax tree of `text`; ExpressionError naming the position if it is invalid.

    Keywords and function names are case-insensitive; column names are identifiers,
    optionally double-quoted (to use a keyword as a name: ``"end"``)."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression is text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise ExpressionError("expression is empty")
    expr = _Parser(text).parse()
    check_depth(expr, text)
    return expr


def check_depth(expr: Expr, text: str = "") -> None:
    """ExpressionError if `expr` nests deeper than MAX_DEPTH: every compiler recurses."""
    stack = [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise ExpressionError(f"expression '{shown}' nests deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children(node))


# -- printer -----------------------------------------------------------------------------

# Binding strength, loosest first; a child printed below its slot's level gets parentheses.
_OR, _AND, _NOT, _PREDICATE, _ADD, _MULTIPLY, _UNARY, _PRIMARY = range(1, 9)
_BINARY_LEVEL = {"or": _OR, "and": _AND, "+": _ADD, "-": _ADD, "*": _MULTIPLY, "/": _MULTIPLY}
_BINARY_LEVEL |= {"%": _MULTIPLY} | dict.fromkeys(Binary.COMPARISONS, _PREDICATE)


def _level(expr: Expr) -> int:
    if isinstance(expr, Binary):
        return _BINARY_LEVEL[expr.op]
    if isinstance(expr, IsNull | InList | Between):
        return _PREDICATE
    if isinstance(expr, Unary):
        return _NOT if expr.op == "not" else _UNARY
    if isinstance(expr, Literal) and isinstance(expr.value, int | float):
        is_negative = math.copysign(1.0, expr.value) < 0 and not isinstance(expr.value, bool)
        return _UNARY if is_negative else _PRIMARY
    return _PRIMARY


def _name(name: str) -> str:
    return f'"{name}"' if name.lower() in KEYWORDS else name


def to_text(expr: Expr) -> str:
    """`expr` as canonical expression text (`parse(to_text(e)) == e`)."""

    def at(child: Expr, level: int) -> str:
        text = to_text(child)
        return f"({text})" if _level(child) < level else text

    if isinstance(expr, Literal):
        value = expr.value
        if value is None or isinstance(value, bool):
            return str(value).lower() if value is not None else "null"
        if isinstance(value, str):
            return "'" + value.replace("'", "''") + "'"
        return repr(value)
    if isinstance(expr, Column):
        return _name(expr.name)
    if isinstance(expr, Unary):
        if expr.op == "not":
            return f"not {at(expr.operand, _NOT)}"
        operand = at(expr.operand, _UNARY)
        # -(5) negates a literal (-5 is the literal); "--" would start an SQL comment
        wrap = isinstance(expr.operand, Literal) or operand.startswith("-")
        return f"-({operand})" if wrap else f"-{operand}"
    if isinstance(expr, Binary):
        level = _BINARY_LEVEL[expr.op]
        right_level = level + 1 if level != _PREDICATE else _ADD
        left = at(expr.left, level if level != _PREDICATE else _ADD)
        return f"{left} {expr.op} {at(expr.right, right_level)}"
    if isinstance(expr, IsNull):
        return f"{at(expr.operand, _ADD)} is {'not ' if expr.negated else ''}null"
    if isinstance(expr, InList):
        items = ", ".join(to_text(item) for item in expr.items)
        return f"{at(expr.operand, _ADD)} {'not ' if expr.negated else ''}in ({items})"
    if isinstance(expr, Between):
        operand, low, high = (at(part, _ADD) for part in (expr.operand, expr.low, expr.high))
        return f"{operand} {'not ' if expr.negated else ''}between {low} and {high}"
    if isinstance(expr, Call):
        return f"{expr.name}({', '.join(to_text(arg) for arg in expr.args)})"
    if isinstance(expr, Case):
        parts = ["case"]
        for condition, result in expr.branches:
            parts += ["when", to_text(condition), "then", to_text(result)]
        if expr.otherwise is not None:
            parts += ["else", to_text(expr.otherwise)]
        return " ".join([*parts, "end"])
    if isinstance(expr, Cast):
        return f"cast({to_text(expr.operand)} as {expr.dtype})"
    raise TypeError(f"not an expression node: {expr!r}")
