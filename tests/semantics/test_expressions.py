"""The on-demand expression language (docs/expressions.md): the Arrow evaluator
(`almanac.semantics.expressions`, online and engine-neutral) and DuckDB SQL
(`almanac.offline.duckdb.expressions`) compute the same values from the same trees.

Random typed expression trees over random rows (nulls, zeros, signed zeros, negatives,
ties, int64 and float extremes, NaN and inf inputs, UTC timestamps from year 1 to 9999)
are evaluated both ways and must agree bit for bit — or both raise the overflow error.
Only the transcendental functions ln, log10, exp and pow are compared within 1 ulp: each
engine calls its C library's implementation, which IEEE 754 does not require to be
correctly rounded (sqrt, + - * / and every other operation it does). Each row is also
evaluated alone, as online serving does, and must give the batch's value.
"""

from __future__ import annotations

import math
import struct
from functools import cache
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from almanac.definitions.types import arrow_type
from almanac.errors import DefinitionError, InputError
from almanac.offline.duckdb.expressions import evaluate_sql, to_sql
from almanac.semantics.expression_parse import children
from almanac.semantics.expression_types import FUNCTIONS
from almanac.semantics.expressions import (
    Between,
    Binary,
    Call,
    Case,
    Cast,
    Column,
    Expr,
    ExpressionError,
    ExpressionValueError,
    InList,
    IsNull,
    Literal,
    Unary,
    columns,
    compile_arrow,
    evaluate,
    infer_dtype,
    parse,
    to_text,
)

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,  # the same examples on every run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

INT, FLOAT, BOOL, STRING, TIMESTAMP = "int64", "float64", "bool", "string", "timestamp"
KINDS = (INT, FLOAT, BOOL, STRING, TIMESTAMP)
NAMES = {INT: ["i1", "i2", "i3"], FLOAT: ["f1", "f2", "f3"], BOOL: ["b1", "b2"]}
NAMES |= {STRING: ["s1", "s2"], TIMESTAMP: ["t1", "t2"]}
DTYPES = {name: kind for kind, names in NAMES.items() for name in names}
DTYPES |= {"i3": "int32", "f3": "float32"}  # read as int64 and float64
PARTS = ["year", "month", "day", "hour", "minute", "second", "day_of_week", "day_of_year"]
MIN_TS = -62_135_596_800_000_000  # 0001-01-01
MAX_TS = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999
YEAR_1900, YEAR_2100 = -2_208_988_800_000_000, 4_102_444_800_000_000

INT_EDGES = [0, 1, -1, 2, -2, 3, 7, -7, 10, 2**31 - 1, -(2**31), 2**53 + 1, 3_037_000_500]
INT_EDGES += [2**62, -(2**62), 2**63 - 1, -(2**63)]
FLOAT_EDGES = [0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5, 0.1, 1e16, 1e308, -1e308, 5e-324, 2.0**63]
STRING_EDGES = ["", "a", "A", "b", "B", "ab", "Ab", "é", "É", "ß", "z", "it's"]
STRING_EDGES += ["'); DROP TABLE x; --"]


# -- random rows ------------------------------------------------------------------------


def _values(dtype: str) -> st.SearchStrategy[Any]:
    strategies = {
        "int64": st.one_of(
            st.sampled_from(INT_EDGES), st.integers(-100, 100), st.integers(-(2**63), 2**63 - 1)
        ),
        "int32": st.one_of(st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]), st.integers(-9, 9)),
        "float64": st.one_of(
            st.sampled_from([*FLOAT_EDGES, math.inf, -math.inf, math.nan]),
            st.integers(-20, 20).map(lambda i: i / 4),
            st.floats(allow_nan=True, allow_infinity=True),
        ),
        "float32": st.one_of(st.sampled_from([0.0, -0.0, 1.5, -2.5]), st.floats(width=32)),
        "bool": st.booleans(),
        "string": st.one_of(st.sampled_from(STRING_EDGES), st.text(max_size=4)),
        "timestamp": st.one_of(
            st.sampled_from([0, MIN_TS, MAX_TS, -1, 1, 86_400_000_000 * 3 + 1]),
            st.integers(YEAR_1900, YEAR_2100),
            st.integers(MIN_TS, MAX_TS),
        ),
    }
    return st.one_of(st.none(), strategies[dtype], strategies[dtype])


@st.composite
def tables(draw: st.DrawFn, max_rows: int = 6) -> pa.Table:
    rows = draw(st.integers(1, max_rows))
    data = {
        name: pa.array(
            draw(st.lists(_values(dtype), min_size=rows, max_size=rows)), arrow_type(dtype)
        )
        for name, dtype in DTYPES.items()
    }
    return pa.table(data)


# -- random expression trees, typed as they are built ------------------------------------


def _literal(kind: str) -> st.SearchStrategy[Expr]:
    values: dict[str, st.SearchStrategy[Any]] = {
        INT: st.one_of(st.sampled_from(INT_EDGES), st.integers(-5, 5)),
        FLOAT: st.one_of(st.sampled_from(FLOAT_EDGES), st.integers(-8, 8).map(lambda i: i / 2)),
        BOOL: st.booleans(),
        STRING: st.sampled_from(STRING_EDGES),
    }
    if kind == TIMESTAMP:  # the language has no timestamp literal
        return st.just(Cast(Literal(None), TIMESTAMP))
    return values[kind].map(Literal)


def _leaf(kind: str) -> st.SearchStrategy[Expr]:
    names = st.sampled_from(NAMES[kind]).map(Column)
    return st.one_of(names, _literal(kind), names, st.just(Literal(None)))


def _tuples(strategy: st.SearchStrategy[Expr], low: int, high: int) -> st.SearchStrategy[Any]:
    return st.lists(strategy, min_size=low, max_size=high).map(tuple)


def _call(name: str, *args: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.tuples(*args).map(lambda values: Call(name, values))


@cache
def trees(kind: str, depth: int) -> st.SearchStrategy[Expr]:
    """Expressions of type `kind`, nested at most `depth` deep, using every operator and
    function but the transcendental ones (tested to 1 ulp below)."""
    if depth == 0:
        return _leaf(kind)

    def sub(k: str) -> st.SearchStrategy[Expr]:
        return trees(k, depth - 1)

    number = st.one_of(sub(INT), sub(FLOAT))
    same = [
        st.builds(
            Case,
            _tuples(st.tuples(sub(BOOL), sub(kind)), 1, 3),
            st.one_of(st.none(), sub(kind)),
        ),
        _call("if", sub(BOOL), sub(kind), sub(kind)),
        st.lists(sub(kind), min_size=1, max_size=3).map(lambda a: Call("coalesce", tuple(a))),
        _call("nullif", sub(kind), sub(kind)),
    ]
    if kind in (INT, FLOAT, STRING, TIMESTAMP):
        least = st.sampled_from(["least", "greatest"])
        args = _tuples(sub(kind) if kind != FLOAT else number, 1, 3)
        same.append(st.builds(Call, least, args))
    options: list[st.SearchStrategy[Expr]] = [_leaf(kind), *same]
    if kind == INT:
        options += [
            st.builds(Binary, st.sampled_from(["+", "-", "*", "%"]), sub(INT), sub(INT)),
            st.builds(Unary, st.just("-"), sub(INT)),
            st.builds(
                Call, st.sampled_from(["abs", "ceil", "floor", "round"]), _tuples(sub(INT), 1, 1)
            ),
            _call("sign", number),
            _call("length", sub(STRING)),
            st.builds(Call, st.sampled_from(PARTS), _tuples(sub(TIMESTAMP), 1, 1)),
            st.builds(Cast, st.one_of(sub(FLOAT), sub(BOOL)), st.just(INT)),
        ]
    elif kind == FLOAT:
        arithmetic = st.sampled_from(["+", "-", "*"])
        options += [
            st.builds(Binary, arithmetic, sub(FLOAT), number),
            st.builds(Binary, arithmetic, number, sub(FLOAT)),
            st.builds(Binary, st.just("/"), number, number),
            st.builds(Unary, st.just("-"), sub(FLOAT)),
            st.builds(
                Call, st.sampled_from(["abs", "ceil", "floor", "round"]), _tuples(sub(FLOAT), 1, 1)
            ),
            _call("sqrt", number),
            _call("epoch_seconds", sub(TIMESTAMP)),
            st.builds(Cast, st.one_of(sub(INT), sub(BOOL)), st.just(FLOAT)),
        ]
    elif kind == BOOL:
        comparison = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])
        pairs = [
            st.tuples(number, number),
            *(st.tuples(sub(k), sub(k)) for k in (BOOL, STRING, TIMESTAMP)),
        ]
        options += [
            st.builds(lambda op, pair: Binary(op, *pair), comparison, st.one_of(*pairs)),
            st.builds(Binary, st.sampled_from(["and", "or"]), sub(BOOL), sub(BOOL)),
            st.builds(Unary, st.just("not"), sub(BOOL)),
            st.builds(IsNull, st.one_of(*(sub(k) for k in KINDS)), st.booleans()),
            st.sampled_from([INT, FLOAT, STRING, BOOL, TIMESTAMP]).flatmap(
                lambda k: st.builds(InList, sub(k), _tuples(sub(k), 1, 3), st.booleans())
            ),
            st.builds(Between, number, number, number, st.booleans()),
            st.sampled_from([STRING, TIMESTAMP]).flatmap(
                lambda k: st.builds(Between, sub(k), sub(k), sub(k), st.booleans())
            ),
            st.builds(Cast, sub(INT), st.just(BOOL)),
        ]
    elif kind == STRING:
        options += [
            st.builds(Call, st.sampled_from(["lower", "upper"]), _tuples(sub(STRING), 1, 1)),
            st.builds(Call, st.just("concat"), _tuples(sub(STRING), 1, 3)),
            st.builds(Cast, st.one_of(sub(INT), sub(BOOL)), st.just(STRING)),
        ]
    return st.one_of(*options)


expressions = st.sampled_from(KINDS).flatmap(lambda kind: trees(kind, 3))


# -- the two evaluators, and how results are compared ------------------------------------


@pytest.fixture(scope="module")
def con() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'America/New_York'")  # results must not depend on it
    return connection


def _arrow_eval(expr: Expr, table: pa.Table) -> pa.Array | ExpressionValueError:
    try:
        return evaluate(
            expr, {n: table.column(n) for n in table.column_names}, table.num_rows, DTYPES
        )
    except ExpressionValueError as error:
        return error


def _duckdb_eval(
    con: duckdb.DuckDBPyConnection, expr: Expr, table: pa.Table
) -> pa.Array | ExpressionValueError:
    try:
        result = evaluate_sql(con, table, {"out": (expr, infer_dtype(expr, DTYPES))})
    except ExpressionValueError as error:
        return error
    return result.column("out").combine_chunks()


def _bits(value: float) -> int:
    return int.from_bytes(struct.pack("<d", value), "little", signed=True)


def _ulps(a: float, b: float) -> int:
    if math.isinf(a) or math.isinf(b):
        return 0 if a == b else 2**63
    ia, ib = _bits(a), _bits(b)
    ia, ib = (ia if ia >= 0 else -(2**63) - ia), (ib if ib >= 0 else -(2**63) - ib)
    return abs(ia - ib)


def _agree(a: list[Any], b: list[Any], ulps: int = 0) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, float) and isinstance(y, float):
            if math.isnan(x) or math.isnan(y):
                return False  # NaN is never a value: it reads as null
            if (_bits(x) != _bits(y)) if ulps == 0 else _ulps(x, y) > ulps:
                return False
        elif x != y or type(x) is not type(y):
            return False
    return True


def check_agree(con: duckdb.DuckDBPyConnection, expr: Expr, table: pa.Table, ulps: int = 0) -> None:
    try:
        dtype = infer_dtype(expr, DTYPES)
    except ExpressionError:
        reject()  # a bare null at the root, or a case whose branches are all null
    ours, theirs = _arrow_eval(expr, table), _duckdb_eval(con, expr, table)
    where = f"{to_text(expr)}\nSQL: {to_sql(expr, DTYPES)}\nrows: {table.to_pylist()}"
    if isinstance(ours, Exception) or isinstance(theirs, Exception):
        assert type(ours) is type(theirs), f"{ours!r} vs {theirs!r}\n{where}"
        assert "expression" in str(ours)
        return
    assert ours.type == arrow_type(dtype) == theirs.type, where
    assert _agree(ours.to_pylist(), theirs.to_pylist(), ulps), (
        f"Arrow  {ours.to_pylist()}\nDuckDB {theirs.to_pylist()}\n{where}"
    )
    # online serving evaluates one entity at a time: each row alone gives the same value
    function = compile_arrow(expr, DTYPES)
    for row in range(table.num_rows):
        one = table.slice(row, 1)
        alone = function({n: one.column(n) for n in one.column_names}, 1)
        assert _agree(alone.to_pylist(), ours.to_pylist()[row : row + 1]), where


# -- properties --------------------------------------------------------------------------


@SETTINGS
@given(expr=expressions, table=tables())
def test_arrow_and_duckdb_agree_exactly(
    con: duckdb.DuckDBPyConnection, expr: Expr, table: pa.Table
) -> None:
    check_agree(con, expr, table)


TRANSCENDENTAL = ["ln", "log10", "exp", "pow"]


@settings(SETTINGS, max_examples=120)
@given(
    name=st.sampled_from(TRANSCENDENTAL),
    args=st.tuples(trees(FLOAT, 1), st.one_of(trees(FLOAT, 1), trees(INT, 1))),
    table=tables(),
)
def test_transcendental_functions_agree_within_one_ulp(
    con: duckdb.DuckDBPyConnection, name: str, args: tuple[Expr, Expr], table: pa.Table
) -> None:
    expr = Call(name, args if name == "pow" else args[:1])
    check_agree(con, expr, table, ulps=1)


@settings(SETTINGS, max_examples=300)
@given(expr=expressions)
def test_text_parses_back_to_the_same_tree(expr: Expr) -> None:
    assert parse(to_text(expr)) == expr


@settings(SETTINGS, max_examples=100)
@given(expr=expressions, table=tables())
def test_every_literal_is_a_parameter(expr: Expr, table: pa.Table) -> None:
    try:
        sql, params = to_sql(expr, DTYPES)
    except ExpressionError:
        reject()
    literals = [node.value for node in _nodes(expr) if isinstance(node, Literal)]
    assert sql.count("?") == len(params)
    # in tree order, each case condition compared with a true (a sub-expression of
    # nulls only, such as null + null, is one null parameter)
    conditions = sum(len(n.branches) for n in _nodes(expr) if isinstance(n, Case))
    conditions += sum(1 for n in _nodes(expr) if isinstance(n, Call) and n.name == "if")
    sent = [repr(v) for v in params if v is not None]
    expected = [repr(v) for v in literals if v is not None]
    assert len(sent) == len(expected) + conditions
    remaining = iter(sent)
    assert all(any(v == g for g in remaining) for v in expected)  # a subsequence
    for value in literals:
        if isinstance(value, str) and len(value) > 2:
            assert value not in sql


def _nodes(expr: Expr) -> list[Expr]:
    """`expr` and its sub-expressions, in the order of the text."""
    return [expr, *(node for child in children(expr) for node in _nodes(child))]


# -- every operator and function, on rows chosen for their edges --------------------------

EDGE_ROWS = pa.table(
    {
        "i1": pa.array([0, 1, -7, 2**63 - 1, None, -(2**63), 6], pa.int64()),
        "i2": pa.array([0, 0, 2, -1, 3, 1, -4], pa.int64()),
        "i3": pa.array([1, -1, 0, None, 2**31 - 1, 5, 0], pa.int32()),
        "f1": [0.0, -0.0, 2.5, -2.5, None, math.nan, 1e308],
        "f2": [0.0, 1.5, -0.5, math.inf, 4.0, 0.1, -1e308],
        "f3": pa.array([0.5, -0.0, None, 3.0, 1.0, -2.5, 0.0], pa.float32()),
        "b1": [True, False, None, True, False, None, True],
        "b2": [True, True, True, False, False, None, None],
        "s1": ["a", "B", "", None, "é", "it's", "ß"],
        "s2": ["a", "b", "ab", "x", None, "", "Z"],
        "t1": pa.array(
            [0, -1, MIN_TS, MAX_TS, None, 1_700_000_000_123_456, YEAR_1900],
            pa.timestamp("us", "UTC"),
        ),
        "t2": pa.array(
            [0, 0, None, 1, 2, 1_700_000_000_123_456, YEAR_2100], pa.timestamp("us", "UTC")
        ),
    }
)
SAFE = "case when abs(i2) < 3 then i2 else 0 end"  # an int64 that cannot overflow with i2
CASES = [
    "i2 + 1 - 2 * i3",
    "-i2",
    "i1 / i2",
    "f1 / f2",
    "i1 % nullif(i2, -1)",
    "i1 = i2 or f1 == f2 or s1 != s2 or t1 <> t2",
    "i1 < f1 and f1 <= f2 and s1 > s2 and t1 >= t2",
    "b1 < b2",
    "not b1",
    "b1 and b2",
    "b1 or b2",
    "f1 is null",
    "s1 is not null",
    "i2 in (0, 2, null)",
    "f1 not in (0.0, 2.5)",
    "s1 in (s2, 'a')",
    "t1 in (t2)",
    "i2 between -1 and i3",
    "s1 not between 'a' and 'b'",
    "t1 between t2 and t2",
    "case when f1 > 0 then 'pos' when f1 < 0 then 'neg' else 'zero' end",
    "case when b1 then i2 end",
    "coalesce(f1, f2, i2)",
    "coalesce(s1, s2)",
    "nullif(i2, 0)",
    "nullif(f1, -0.0)",
    "if(b1, f2, i2)",
    "abs(" + SAFE + ") + abs(f2)",
    "sign(i2) + sign(f1)",
    "ceil(f2)",
    "floor(f1 * 2)",
    "round(f2 * 10)",
    "round(i2)",
    "sqrt(f2)",
    "ln(f2)",
    "log10(f2 + 1)",
    "exp(f2)",
    "pow(f2, i2)",
    "power(2, -1074)",
    "least(i2, i3, null)",
    "greatest(f1, f2)",
    "least(f1, 0)",  # of tied zeros (0.0, -0.0), the first argument wins
    "greatest(0.0, f1, null)",
    "least(s1, s2)",
    "greatest(t1, t2)",
    "lower(s1)",
    "upper(s2)",
    "length(s1)",
    "concat(s1, '-', s2)",
    "year(t1) * 10000 + month(t1) * 100 + day(t1)",
    "hour(t1) * 3600 + minute(t1) * 60 + second(t1)",
    "day_of_week(t1)",
    "day_of_year(t2)",
    "epoch_seconds(t1)",
    "cast(i3 * 1.5 as int64)",
    "cast(i2 as float64) / 3",
    "cast(b1 as int64)",
    "cast(i2 as bool)",
    "cast(i3 as string)",
    "cast(b2 as string)",
    "cast(null as timestamp)",
]


@pytest.mark.parametrize("text", CASES)
def test_every_operator_and_function(con: duckdb.DuckDBPyConnection, text: str) -> None:
    expr = parse(text)
    calls = {n.name for n in _nodes(expr) if isinstance(n, Call)}
    ulps = 1 if calls & {*TRANSCENDENTAL, "power"} else 0
    ours = _arrow_eval(expr, EDGE_ROWS)
    assert not isinstance(ours, Exception), ours
    check_agree(con, expr, EDGE_ROWS, ulps=ulps)
    # to_sql's SQL, with its ? parameters, runs as it is (its optimizer caveat aside)
    sql, params = to_sql(expr, DTYPES)
    con.register("edge_rows", EDGE_ROWS)
    theirs = con.sql(f"SELECT {sql} AS out FROM edge_rows", params=params).to_arrow_table()
    con.unregister("edge_rows")
    values = theirs.column("out").cast(ours.type)  # a TIMESTAMPTZ is in the session's zone
    assert _agree(ours.to_pylist(), values.to_pylist(), ulps=ulps)


def test_the_cases_cover_every_function() -> None:
    called = {n.name for text in CASES for n in _nodes(parse(text)) if isinstance(n, Call)}
    assert set(FUNCTIONS) | {"power"} <= called


def _both(con: duckdb.DuckDBPyConnection, text: str, table: pa.Table = EDGE_ROWS) -> list[Any]:
    expr = parse(text)
    check_agree(con, expr, table)
    result = _arrow_eval(expr, table)
    assert not isinstance(result, Exception)
    return result.to_pylist()


# -- the pinned semantics -----------------------------------------------------------------


def test_division_by_zero_gives_null(con: duckdb.DuckDBPyConnection) -> None:
    assert _both(con, "i1 / i2")[:2] == [None, None]  # 0 / 0 and 1 / 0
    assert _both(con, "f2 / f1")[:2] == [None, None]  # 0.0 / 0.0 and 1.5 / -0.0
    assert _both(con, "f2 / 0")[3] is None  # inf / 0
    assert _both(con, "f2 / f2")[3] is None  # inf / inf is NaN: null
    assert _both(con, "i1 % i2")[:2] == [None, None]
    assert _both(con, "i3 / 2")[:2] == [0.5, -0.5]


def test_nulls_propagate(con: duckdb.DuckDBPyConnection) -> None:
    for text in ["i1 + null", "null * f1", "-cast(null as int64)", "null = s1", "sqrt(null)"]:
        assert set(_both(con, text)) == {None}, text
    assert _both(con, "f1 + 0")[5] is None  # a NaN input reads as null
    assert _both(con, "null is null") == [True] * 7
    assert _both(con, "concat(null, s2)")[4] == ""  # concat skips nulls, as DuckDB's


def test_least_and_greatest_skip_nulls_and_keep_the_first_of_ties(
    con: duckdb.DuckDBPyConnection,
) -> None:
    assert [math.copysign(1, v) for v in _both(con, "least(f1, 0)")[:2]] == [1, -1]
    assert [math.copysign(1, v) for v in _both(con, "greatest(0, f1)")[:2]] == [1, 1]
    assert _both(con, "greatest(i2, null)") == EDGE_ROWS.column("i2").to_pylist()
    assert _both(con, "least(cast(null as int64), null)") == [None] * 7


def test_and_or_not_are_kleene(con: duckdb.DuckDBPyConnection) -> None:
    values = [True, False, None]
    rows = [{**dict.fromkeys(DTYPES), "b1": a, "b2": b} for a in values for b in values]
    table = pa.Table.from_pylist(rows, schema=EDGE_ROWS.schema)

    def kleene_and(a: bool | None, b: bool | None) -> bool | None:
        return False if a is False or b is False else None if None in (a, b) else True

    def kleene_or(a: bool | None, b: bool | None) -> bool | None:
        return True if a is True or b is True else None if None in (a, b) else False

    pairs = [(a, b) for a in values for b in values]
    assert _both(con, "b1 and b2", table) == [kleene_and(a, b) for a, b in pairs]
    assert _both(con, "b1 or b2", table) == [kleene_or(a, b) for a, b in pairs]
    assert _both(con, "not b1", table) == [None if a is None else not a for a, _ in pairs]


def test_in_and_between_follow_sql(con: duckdb.DuckDBPyConnection) -> None:
    assert _both(con, "1 in (2, null)")[0] is None
    assert _both(con, "1 not in (2, null)")[0] is None
    assert _both(con, "1 in (1, null)")[0] is True
    assert _both(con, "cast(null as int64) in (1)")[0] is None
    assert _both(con, "5 between null and 3")[0] is False
    assert _both(con, "-0.0 in (0.0)")[0] is True  # compared with '=', not by bits
    assert _both(con, "2 between 2 and 2")[0] is True


def test_case_takes_the_first_true_branch(con: duckdb.DuckDBPyConnection) -> None:
    text = "case when b1 then 1 when b2 then 2 end"
    expected = [1, 2, 2, 1, None, None, 1]
    assert _both(con, text) == expected
    assert _both(con, "if(b1, 1, 2)") == [1, 2, 2, 1, 2, 2, 1]  # a null condition is false
    assert _both(con, "case when b1 then 1 else 2.5 end")[1] == 2.5


def test_rounding_is_half_away_from_zero(con: duckdb.DuckDBPyConnection) -> None:
    values = [0.5, 1.5, 2.5, -0.5, -2.5, 0.49999999999999994, -0.4]
    table = EDGE_ROWS.set_column(EDGE_ROWS.schema.get_field_index("f1"), "f1", pa.array(values))
    assert _both(con, "round(f1)", table) == [1.0, 2.0, 3.0, -1.0, -3.0, 0.0, -0.0]
    # cast to int64 rounds half to even, as DuckDB's cast does
    assert _both(con, "cast(f1 as int64)", table) == [0, 2, 2, 0, -2, 0, 0]


def test_domain_errors_give_null(con: duckdb.DuckDBPyConnection) -> None:
    assert _both(con, "sqrt(-1)")[0] is None
    assert _both(con, "sqrt(-0.0)")[0] == 0.0
    assert _both(con, "ln(0)")[0] is None
    assert _both(con, "log10(-5)")[0] is None
    assert _both(con, "pow(-8, 1.0 / 3)")[0] is None
    assert _both(con, "exp(1000)")[0] == math.inf  # overflow is inf, not an error
    assert _both(con, "pow(0, -1)")[0] == math.inf


def test_time_functions_read_utc(con: duckdb.DuckDBPyConnection) -> None:
    # 2023-11-14T22:13:20.123456Z, a Tuesday; the DuckDB session is in New York
    got = [_both(con, f"{part}(t1)")[5] for part in PARTS]
    assert got == [2023, 11, 14, 22, 13, 20, 1, 318]
    assert _both(con, "epoch_seconds(t1)")[5] == 1_700_000_000.123456
    assert _both(con, "day_of_week(t1)")[0] == 3  # 1970-01-01, a Thursday; 0 = Monday


def test_int64_overflow_raises_in_both(con: duckdb.DuckDBPyConnection) -> None:
    for text in ["i1 + 1", "i1 * 2", "-i1", "abs(i1)", "i1 - 1", "i1 % -1", "cast(f1 as int64)"]:
        expr = parse(text)
        ours, theirs = _arrow_eval(expr, EDGE_ROWS), _duckdb_eval(con, expr, EDGE_ROWS)
        assert isinstance(ours, ExpressionValueError), text
        assert isinstance(theirs, ExpressionValueError), text
        assert isinstance(ours, InputError)
        assert f"expression '{text}'" in str(ours)


def test_unselected_branches_do_not_raise(con: duckdb.DuckDBPyConnection) -> None:
    # DuckDB evaluates a case branch (and a coalesce argument) only where it is needed
    assert _both(con, "case when i1 < 2 then i1 + 1 else 0 end")[3] == 0
    assert _both(con, "if(i1 > 100, 0, i1 * 1)")[3] == 0
    assert _both(con, "coalesce(i2, i1 * 2)")[0] == 0
    assert _both(con, "case when false then 9223372036854775807 + 1 else 1 end")[0] == 1


def test_no_rows_evaluate_nothing(con: duckdb.DuckDBPyConnection) -> None:
    empty = EDGE_ROWS.slice(0, 0)
    expr = parse("9223372036854775807 + i2 + 1")
    assert _arrow_eval(expr, empty).to_pylist() == []  # type: ignore[union-attr]
    assert _duckdb_eval(con, expr, empty).to_pylist() == []  # type: ignore[union-attr]


def test_literals_are_parameters_never_sql(con: duckdb.DuckDBPyConnection) -> None:
    attack = "'); DROP TABLE x; --"
    expr = parse("concat(s1, '" + attack.replace("'", "''") + "', 'it''s')")
    sql, params = to_sql(expr, DTYPES)
    assert params == [attack, "it's"] and "DROP" not in sql and "it's" not in sql
    assert _both(con, to_text(expr))[0] == "a" + attack + "it's"
    sql, params = to_sql(parse("i2 + 12345 > 6.5"), DTYPES)
    assert "12345" not in sql and "6.5" not in sql and params == [12345, 6.5]


# -- errors users see ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("amount / nullif(avg, 0", "expected ')' at position 23 (the end)"),
        ("a +", "expected a value at position 4 (the end)"),
        ("a < b < c", "comparisons do not chain"),
        ("a @ b", "unexpected character '@' at position 3"),
        ("'abc", "unterminated string at position 1"),
        ('"a b"', "is not a column name"),
        ("9223372036854775808", "out of the int64 range at position 1"),
        ("1e999", "out of the float64 range"),
        ("case end", "expected 'when', found 'end' at position 6"),
        ("cast(a as text)", "expected a type (int64, float64, bool, string, timestamp)"),
        ("a b", "unexpected 'b' at position 3"),
        ("", "expression is empty"),
        ("(" * 70 + "a" + ")" * 70, "nests deeper than 64 levels"),
    ],
)
def test_parse_errors_name_the_position(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(text)
    assert message in str(caught.value)
    assert isinstance(caught.value, DefinitionError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("s1 + 1", "'+' needs numbers, got string"),
        ("i1 % 1.5", "'%' needs integers (int64), got float64"),
        ("s1 = i1", "'=' cannot compare string with int64"),
        ("b1 and i1", "'and' needs bools, got int64"),
        ("sqrt(s1)", "sqrt() needs numbers, got string"),
        ("coalesce(i1, s1)", "coalesce() needs values of one type, got int64, string"),
        ("case when i1 then 1 end", "'case when' needs bool conditions, got int64"),
        ("case when b1 then 1 else 'x' end", "'case' needs values of one type"),
        ("case when b1 then null end", "'case' gives null in every branch"),
        ("least(b1, b2)", "least() needs numbers, strings or timestamps, got bool"),
        ("hour(i1)", "hour() needs a timestamp, got int64"),
        ("cast(s1 as int64)", "cannot cast string to int64"),
        ("null", "its value is always null"),
        ("round(f1, 2)", "round() takes 1 argument, got 2"),
        ("nullif(i1)", "nullif() takes 2 arguments, got 1"),
        ("greatest()", "greatest() takes at least 1 argument, got 0"),
    ],
)
def test_type_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        infer_dtype(parse(text), DTYPES)
    assert message in str(caught.value)
    assert f"expression '{text}'" in str(caught.value)


def test_unknown_names_are_suggested() -> None:
    with pytest.raises(
        ExpressionError, match=r"unknown column 'i4'; did you mean .*known: b1, b2, f1"
    ):
        infer_dtype(parse("i4 + 1"), DTYPES)
    with pytest.raises(ExpressionError, match=r"unknown function 'sqr'; did you mean 'sqrt'"):
        infer_dtype(parse("sqr(f1)"), DTYPES)
    with pytest.raises(ExpressionError, match="column 'x' is bytes"):
        infer_dtype(parse("x"), {"x": "bytes"})


# -- the API around the evaluators -----------------------------------------------------------


def test_types_and_columns() -> None:
    assert infer_dtype(parse("i3 + 1"), DTYPES) == "int64"  # int32 computes as int64
    assert infer_dtype(parse("f3 * 2"), DTYPES) == "float64"
    assert infer_dtype(parse("i1 / i2"), DTYPES) == "float64"
    assert infer_dtype(parse("coalesce(i1, f1)"), DTYPES) == "float64"
    assert infer_dtype(parse("t1 > t2"), DTYPES) == "bool"
    assert infer_dtype(parse("least(t1, null)"), DTYPES) == "timestamp"
    assert columns(parse('amount / nullif("avg", 0) + "end"')) == {"amount", "avg", "end"}
    assert parse("CASE WHEN A IS NOT NULL THEN Coalesce(A, 1) END") == parse(
        "case when A is not null then coalesce(A, 1) end"
    )  # keywords and functions in any case; names as written


def test_inputs_are_normalized() -> None:
    dtypes = {"n": "int32", "x": "float32", "t": "timestamp"}
    inputs = {
        "n": pa.chunked_array([pa.array([1, 2], pa.int32()), pa.array([3], pa.int32())]),
        "x": pa.array([1.5, float("nan"), 2.0], pa.float32()),
        "t": pa.array([0, 1_000, 3_600_000_000_000], pa.timestamp("ns")),  # naive: UTC
    }
    got = evaluate(parse("n * 2 + coalesce(x, 0) + hour(t)"), inputs, 3, dtypes)
    assert got.type == pa.float64() and got.to_pylist() == [3.5, 4.0, 9.0]
    assert evaluate(parse("1 + 1"), inputs, 2, dtypes).to_pylist() == [2, 2]
    with pytest.raises(InputError, match="has 3 rows, expected 2"):
        evaluate(parse("n + 1"), inputs, 2, dtypes)
    with pytest.raises(InputError, match="no input column 'n'"):
        evaluate(parse("n + 1"), {}, 1, dtypes)
    with pytest.raises(InputError, match="a string array cannot be read as int64"):
        evaluate(parse("n + 1"), {"n": pa.array(["1"])}, 1, dtypes)


def test_evaluate_sql_casts_to_the_declared_dtype_and_keeps_order(
    con: duckdb.DuckDBPyConnection,
) -> None:
    rows = 200_000  # several DuckDB vectors and threads
    table = pa.table(
        {
            "n": pa.array(range(rows), pa.int64()),
            "t": pa.array(range(rows), pa.timestamp("us", "UTC")),
        }
    )
    result = evaluate_sql(
        con,
        table,
        {
            "half": (parse("n / 2"), "float32"),
            "same": (parse("n"), "int32"),
            "later": (parse("coalesce(t, t)"), "timestamp"),
            "odd": (parse("n % 2 = 1"), "bool"),
        },
    )
    assert result.schema == pa.schema(
        [
            ("half", pa.float32()),
            ("same", pa.int32()),
            ("later", pa.timestamp("us", "UTC")),
            ("odd", pa.bool_()),
        ]
    )
    assert result.column("same").to_pylist() == list(range(rows))
    assert result.column("later") == table.column("t")
    assert evaluate_sql(con, table, {}).num_rows == rows
    with pytest.raises(
        ExpressionError, match="its value is int64, which cannot be declared string"
    ):
        evaluate_sql(con, table, {"n": (parse("n"), "string")})
    with pytest.raises(ExpressionError, match="'bad name' is not an identifier"):
        evaluate_sql(con, table, {"bad name": (parse("n"), "int64")})


def test_compiled_expressions_are_reused() -> None:
    expr = parse("f1 * 2 + 1")
    assert compile_arrow(expr, DTYPES) is compile_arrow(parse("f1 * 2 + 1"), DTYPES)
    assert compile_arrow(parse("f1 * 2 + 1.0"), DTYPES) is not compile_arrow(expr, DTYPES)
    assert parse("-0.0") != parse("0.0") and parse("1") != parse("1.0") != parse("true")
