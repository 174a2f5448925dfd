"""The row evaluator (`almanac.semantics.expression_rows`, plain Python over lists, for the
tiny batches of online serving) gives exactly what the Arrow evaluator gives.

The random typed expression trees and rows of tests/semantics/test_expressions.py are
evaluated both ways — the rows evaluator on the columns as `to_pylist()` gives them —
and must agree bit for bit (signed zeros included, and the Python types of the values),
or both raise the same `ExpressionValueError` with the same message. ln, log10, exp and
pow are compared within 1 ulp, as the Arrow-vs-DuckDB properties do (both evaluators
call the same C library in one process, so they are bit-equal in practice). Each row is
also evaluated alone, as online serving does, and no rows evaluate nothing.
"""

from __future__ import annotations

import math
from datetime import UTC as PY_UTC
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from test_expressions import (
    CASES,
    DTYPES,
    EDGE_ROWS,
    SETTINGS,
    TRANSCENDENTAL,
    _bits,
    _nodes,
    _ulps,
    expressions,
    tables,
    trees,
)

from almanac.errors import InputError
from almanac.semantics.expression_parse import CAST_TYPES, Binary, Unary
from almanac.semantics.expression_rows import UTC, compile_rows, evaluate_rows
from almanac.semantics.expression_types import CASTS, FUNCTIONS
from almanac.semantics.expressions import (
    Between,
    Call,
    Case,
    Cast,
    Expr,
    ExpressionError,
    ExpressionValueError,
    InList,
    IsNull,
    compile_arrow,
    infer_dtype,
    parse,
    to_text,
)

FLOAT, INT = "float64", "int64"


def _lists(table: pa.Table) -> dict[str, list[Any]]:
    return {name: table.column(name).to_pylist() for name in table.column_names}


def _same(a: list[Any], b: list[Any], ulps: int = 0) -> bool:
    """Equal value for value: floats by their bits (or within `ulps`), never NaN; other
    values of the same Python type; datetimes in the same tzinfo."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            if math.isnan(x) or math.isnan(y):
                return False
            if _bits(x) != _bits(y) and (ulps == 0 or _ulps(x, y) > ulps):
                return False
        elif x != y or (isinstance(x, datetime) and x.tzinfo is not y.tzinfo):
            return False
    return True


def _outcome(run: Any) -> list[Any] | ExpressionValueError:
    try:
        result: list[Any] = run()
    except ExpressionValueError as error:
        return error
    return result


def check_same(expr: Expr, table: pa.Table, ulps: int = 0) -> list[Any]:
    """`expr` over `table` by both evaluators, and over each row alone: the same values,
    or the same error. Returns the values (or [] when both raised)."""
    try:
        infer_dtype(expr, DTYPES)
    except ExpressionError:
        reject()  # a bare null at the root, or a case whose branches are all null
    arrow, rows = compile_arrow(expr, DTYPES), compile_rows(expr, DTYPES)
    where = f"{to_text(expr)}\nrows: {table.to_pylist()}"
    for part in [table, *(table.slice(i, 1) for i in range(table.num_rows))]:
        arrays, n = {name: part.column(name) for name in part.column_names}, part.num_rows
        theirs = _outcome(lambda: arrow(arrays, n).to_pylist())  # noqa: B023
        ours = _outcome(lambda: rows(_lists(part), n))  # noqa: B023
        if isinstance(theirs, Exception) or isinstance(ours, Exception):
            assert type(ours) is type(theirs), f"rows {ours!r}\narrow {theirs!r}\n{where}"
            assert str(ours) == str(theirs), where
        else:
            assert _same(ours, theirs, ulps), f"rows  {ours}\narrow {theirs}\n{where}"
    assert rows(_lists(table.slice(0, 0)), 0) == []  # nothing is evaluated
    full = _outcome(lambda: rows(_lists(table), table.num_rows))
    return [] if isinstance(full, Exception) else full


# -- properties --------------------------------------------------------------------------


@SETTINGS
@given(expr=expressions, table=tables())
def test_rows_and_arrow_agree_exactly(expr: Expr, table: pa.Table) -> None:
    check_same(expr, table)


number = st.one_of(trees(FLOAT, 1), trees(INT, 1))


@st.composite
def transcendental(draw: st.DrawFn) -> Expr:
    name = draw(st.sampled_from([*TRANSCENDENTAL, "power"]))
    args = (draw(number), draw(number))
    call = Call(name, args if name in ("pow", "power") else args[:1])
    # alone, or as an operand (a NaN or inf result then meets arithmetic and ties)
    return draw(
        st.sampled_from(
            [
                call,
                Binary("*", call, args[1]),
                Call("least", (call, args[1])),
                Case(((Binary(">", call, args[1]), call),), Unary("-", call)),
            ]
        )
    )


@settings(SETTINGS, max_examples=120)
@given(expr=transcendental(), table=tables())
def test_transcendental_functions_agree_within_one_ulp(expr: Expr, table: pa.Table) -> None:
    check_same(expr, table, ulps=1)


# -- every operator and function, on rows chosen for their edges ---------------------------

EXTRA = [
    "i1 + 1",  # the overflows, each raising Arrow's message
    "i1 * 2",
    "-i1",
    "abs(i1)",
    "i1 - 1",
    "i1 % -1",
    "i2 % 3 + -7 % 2 + 7 % -2",
    "cast(f1 as int64)",
    "cast(f2 * 1e300 as int64)",
    "case when i1 < 2 then i1 + 1 else 0 end",  # lazy: only the rows that reach a branch
    "if(i1 > 100, 0, i1 * 1)",
    "coalesce(i2, i1 * 2)",
    "case when false then 9223372036854775807 + 1 else 1 end",
    "case when b1 then i1 + 1 when b2 then -i1 else i1 * 0 end",
    "(i1 + 1) * (i2 - 9223372036854775807 - 1)",  # two nodes fail: Arrow's first is named
    "f1 * f2 - f2 / f1",
    "-f1 + -f2",
    "f2 * 10 + f1 * 1e300",  # infinities are values; inf - inf is null
    "not (b1 and b2) or b1 is null",
    "i2 not in (0, 2, null)",
    "f1 in (f2, -0.0, null)",
    "i2 not between i3 and 2",
    "case when b1 then f1 else i2 end",
    "case when b1 then 'x' when b2 then s1 end",
    "least(i2, -1) + greatest(null, i2, i3)",
    "least(0.0, f1, -0.0)",
    "greatest(f3, -0.0, f1)",
    "round(f1 * 3 - 0.5) + round(-f2) + ceil(-f1 / 4) + floor(f3)",
    "round(f1 / 5 - 0.49999999999999994)",
    "sign(f1) + sign(-f1) + sign(i1)",
    "sqrt(-f1) + sqrt(f3)",
    "ln(f1) + log10(f3) + exp(f2 * 1000)",
    "pow(f1, -1) + pow(i2, 0.5) + power(f2, 3)",
    "pow(f1, -3)",
    "upper(concat(s1, 'É', s2)) > lower(concat('Éa', s2))",
    "length(concat(s2, null, 'é'))",
    "cast(i2 as string) < cast(b1 as string)",
    "cast(cast(i2 as bool) as float64) + cast(b2 as float64)",
    "cast(cast(b2 as int64) as int64) + cast(i2 as int64)",
    "cast(cast(null as string) as string) = cast(s1 as string)",
    "cast(f1 as float64) + cast(cast(b1 as bool) as float64)",
    "cast(t1 as timestamp) = t2",
    "coalesce(t1, cast(null as timestamp), t2) > t2 or t1 <= t2",
    "epoch_seconds(t1) - epoch_seconds(t2)",
    "day_of_week(t2) * 1000 + day_of_year(t1)",
]


@pytest.mark.parametrize("rows", [0, 1, 5, 7])
@pytest.mark.parametrize("text", [*CASES, *EXTRA])
def test_every_operator_and_function(text: str, rows: int) -> None:
    expr = parse(text)
    calls = {n.name for n in _nodes(expr) if isinstance(n, Call)}
    check_same(expr, EDGE_ROWS.slice(0, rows), ulps=1 if calls & {*TRANSCENDENTAL, "power"} else 0)


def test_the_cases_cover_every_operator_function_and_cast() -> None:
    nodes = [node for text in [*CASES, *EXTRA] for node in _nodes(parse(text))]
    calls = {n.name for n in nodes if isinstance(n, Call)}
    assert set(FUNCTIONS) | {"power"} <= calls
    ops = {n.op for n in nodes if isinstance(n, Binary | Unary)}
    assert {*Binary.ARITHMETIC, *Binary.COMPARISONS, *Binary.LOGIC, *Unary.OPS} <= ops
    for kind in (IsNull, InList, Between):
        assert {n.negated for n in nodes if isinstance(n, kind)} == {False, True}
    assert {n.otherwise is None for n in nodes if isinstance(n, Case)} == {False, True}
    casts = {
        (infer_dtype(n.operand, DTYPES) if str(n.operand) != "null" else "null", n.dtype)
        for n in nodes
        if isinstance(n, Cast)
    }
    wanted = {(source, target) for target in CAST_TYPES for source in CASTS[target]}
    assert wanted <= casts


# -- the pinned rules, and the API ---------------------------------------------------------


def _values(text: str, table: pa.Table = EDGE_ROWS) -> list[Any]:
    return check_same(parse(text), table)


def test_signed_zeros_nan_and_infinity() -> None:
    def sign_bits(values: list[Any]) -> list[float]:
        return [math.copysign(1, v) for v in values]

    assert sign_bits(_values("-f1")[:2]) == [-1, 1]
    assert sign_bits(_values("round(f1 - 0.4)")[:2]) == [-1, -1]  # round(-0.4) is -0.0
    assert sign_bits(_values("ceil(f1 - 0.5)")[:2]) == [-1, -1]
    assert sign_bits(_values("least(f1, 0)")[:2]) == [1, -1]  # of ties, the first argument
    assert sign_bits(_values("sqrt(f1)")[:2]) == [1, -1]
    assert _values("f2 / f1")[:2] == [None, None]  # 0.0 / 0.0, 1.5 / -0.0
    assert _values("f1 + 0")[5] is None  # a NaN input reads as null
    assert _values("f2 * 10")[6] == -math.inf and _values("f2 - f2")[3] is None
    # Arrow's round takes x - floor(x) == 0.5 as a tie: so does this evaluator
    assert _values("round(-0.49999999999999994 + f1)")[:2] == [-1.0, -1.0]


SPECIAL = [0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 1 / 3, 10.0, -10.0, 309.0]
SPECIAL += [310.0, 709.78, 709.79, -745.2, -1074.0, 1024.0, 5e-324, 1e308, -1e308, math.inf]
SPECIAL += [-math.inf, None]


@pytest.mark.parametrize(
    "text", ["pow(f1, f2)", "exp(f1)", "ln(f1)", "log10(f1)", "sqrt(f1)", "f1 / f2", "f1 * f2"]
)
def test_c_library_functions_on_special_values(text: str) -> None:
    # every pair: 0 ** negative is inf (-inf for -0.0 ** odd), overflow is inf with C's
    # sign, a negative ** a non-integer is null; exp overflows to inf; ln(0) is null
    pairs = [(x, y) for x in SPECIAL for y in SPECIAL]
    table = pa.table({"f1": [x for x, _ in pairs], "f2": [y for _, y in pairs]})
    ulps = 0 if text.startswith(("sqrt", "f1")) else 1
    assert len(check_same(parse(text), table, ulps)) == len(pairs)


def test_overflow_raises_arrows_error_for_the_same_rows() -> None:
    one_bad = EDGE_ROWS.slice(3, 1)  # i1 is 9223372036854775807
    for text, message in [
        ("i1 + 1", "int64 overflow"),
        ("abs(-i1 - 1) + 1", "int64 overflow in 'abs(-i1 - 1)'"),
        ("cast(f2 * 1e10 as int64)", "float64 value out of the int64 range"),
    ]:
        with pytest.raises(ExpressionValueError) as caught:
            evaluate_rows(parse(text), _lists(one_bad), 1, DTYPES)
        assert str(caught.value) == f"expression '{to_text(parse(text))}': {message}"
        assert isinstance(caught.value, InputError)
    lazy = parse("case when i1 < 100 then i1 * 2 else i1 end")
    assert evaluate_rows(lazy, _lists(one_bad), 1, DTYPES) == [2**63 - 1]
    assert evaluate_rows(parse("i1 + 1"), _lists(one_bad.slice(0, 0)), 0, DTYPES) == []


def test_time_functions_read_utc() -> None:
    # 2023-11-14T22:13:20.123456Z, a Tuesday
    got = [_values(f"{part}(t1)")[5] for part in ("year", "month", "day", "hour", "minute")]
    assert got == [2023, 11, 14, 22, 13]
    assert _values("second(t1) * 10 + day_of_week(t1)")[5] == 201
    assert _values("day_of_year(t1)")[5] == 318
    assert _values("epoch_seconds(t1)")[5] == 1_700_000_000.123456
    # an aware datetime in another zone, and a naive one, are the same instant in UTC
    instant = datetime(2023, 11, 14, 22, 13, 20, tzinfo=PY_UTC)
    inputs = {
        "t1": [instant.astimezone(timezone(timedelta(hours=-5))), instant.replace(tzinfo=None)],
        "t2": [instant, None],
    }
    dtypes = {"t1": "timestamp", "t2": "timestamp"}
    assert evaluate_rows(parse("hour(t1)"), inputs, 2, dtypes) == [22, 22]
    assert evaluate_rows(parse("t1 = t2"), inputs, 2, dtypes) == [True, None]
    first = evaluate_rows(parse("coalesce(t1, t2)"), inputs, 2, dtypes)
    assert first == [instant, instant] and all(t.tzinfo is UTC for t in first)
    arrow = pa.array([instant], pa.timestamp("us", "UTC")).to_pylist()[0]
    assert arrow.tzinfo is UTC  # the tzinfo pyarrow's to_pylist() gives


def test_inputs_are_checked_like_arrows() -> None:
    dtypes = {"n": "int32", "x": "float32"}
    inputs = {"n": [1, 2, 3], "x": [1.5, math.nan, 2.0]}
    assert evaluate_rows(parse("n * 2 + coalesce(x, 0)"), inputs, 3, dtypes) == [3.5, 4.0, 8.0]
    assert evaluate_rows(parse("1 + 1"), inputs, 2, dtypes) == [2, 2]
    with pytest.raises(InputError, match="column 'n' has 3 rows, expected 2"):
        evaluate_rows(parse("n + 1"), inputs, 2, dtypes)
    with pytest.raises(InputError, match="no input column 'n'"):
        evaluate_rows(parse("n + 1"), {}, 1, dtypes)
    with pytest.raises(ExpressionError, match="unknown column 'm'"):
        compile_rows(parse("m + 1"), dtypes)
    result = evaluate_rows(parse("coalesce(n, 0)"), inputs, 3, dtypes)
    assert result == inputs["n"] and result is not inputs["n"]  # never the caller's list


def test_compiled_expressions_are_reused() -> None:
    expr = parse("f1 * 2 + 1")
    assert compile_rows(expr, DTYPES) is compile_rows(parse("f1 * 2 + 1"), DTYPES)
    assert compile_rows(parse("f1 * 2 + 1.0"), DTYPES) is not compile_rows(expr, DTYPES)
