"""SQL text a definition brings must be one read-only SELECT, in DuckDB's dialect.

Parsed by DuckDB's own parser, never bound or run: a query that would write a file,
attach a database, install an extension or change a setting is a DefinitionError naming
the definition.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import duckdb

from almanac.errors import DefinitionError

# ---- SQL text: one read-only SELECT ---------------------------------------------------

# Table functions a query may call: they read (files, generated rows, lists) and change
# nothing. Any other one is refused, deny by default: DuckDB's checkpoint(),
# force_checkpoint(), query('...') and json_execute_serialized_sql() (which run SQL text
# the parser cannot see), enable_logging(), truncate_duckdb_logs(), the
# *_external_resource() functions, and extensions' sqlite_attach(), postgres_execute() ...
_READING_TABLE_FUNCTIONS = frozenset(
    {"range", "generate_series", "unnest", "glob", "json_each", "json_tree", "sniff_csv",
     "repeat", "repeat_row", "histogram", "histogram_values", "st_read", "parquet_metadata",
     "parquet_schema", "parquet_file_metadata", "parquet_kv_metadata", "parquet_full_metadata",
     "parquet_bloom_probe"}
)  # fmt: skip
# ...plus every read_*() and *_scan() (read_parquet, read_csv, delta_scan ...) except
# these, which scan Python objects by memory address.
_INTERNAL_SCANS = frozenset(
    {"arrow_scan", "arrow_scan_dumb", "pandas_scan", "python_arrow_scan", "seq_scan"}
)
# Scalar functions that change the database's state (sequences, the random seed, logs).
_STATE_CHANGING = frozenset({"nextval", "setval", "setseed", "write_log"})
# Options of reading table functions that create tables (read_csv's rejects tables).
_WRITING_OPTIONS = frozenset({"store_rejects", "rejects_table", "rejects_scan"})

_parser_lock = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None
_CACHED_TEXT = 16 * 1024  # longer texts (relations listing many files) are not kept


def check_select(text: str, label: str) -> None:
    """DefinitionError unless `text` is exactly one SELECT statement that calls only
    reading table functions, no state-changing function and no option that creates
    tables. `label` names the definition ("SQL source 'events'"). Parsed by DuckDB's
    parser, never bound or run."""
    # Source queries are checked again by every reader: remember the short ones.
    problem = _cached_problem(text) if len(text) <= _CACHED_TEXT else _select_problem(text)
    if problem is not None:
        raise DefinitionError(f"{label}: {problem}")


def _select_problem(text: str) -> str | None:
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as error:
        return f"the query does not parse: {_first_line(error)}"
    kinds = [statement.type.name for statement in statements]
    if len(statements) != 1:
        found = f"{len(kinds)} ({', '.join(kinds)})" if kinds else "none"
        return f"a query must be exactly one SELECT statement; found {found}"
    if statements[0].type != duckdb.StatementType.SELECT:
        return (
            f"a query must be one read-only SELECT statement, not {kinds[0]} (COPY, ATTACH, "
            "INSTALL/LOAD, PRAGMA, SET, CREATE, INSERT ... are refused)"
        )
    tree = _syntax_tree(text)
    if tree.get("error"):
        return f"the query cannot be checked: {tree.get('error_message')}"
    problems = []
    for kind, name in dict.fromkeys(_functions(tree.get("statements", []))):
        if kind == "table" and not _reads_only(name):
            problems.append(
                f"the query calls table function {name}(), which is not a reading one "
                "(read_parquet, read_csv, read_json, range, unnest ... are)"
            )
        elif kind == "scalar" and name in _STATE_CHANGING:
            problems.append(f"the query calls {name}(), which changes the database's state")
        elif kind == "option" and name in _WRITING_OPTIONS:
            problems.append(f"the query sets {name}, which creates tables")
    return "; ".join(problems) or None


_cached_problem = lru_cache(maxsize=512)(_select_problem)


def _reads_only(name: str) -> bool:
    if name in _READING_TABLE_FUNCTIONS:
        return True
    return (name.startswith("read_") or name.endswith("_scan")) and name not in _INTERNAL_SCANS


def _syntax_tree(text: str) -> dict[str, Any]:
    """DuckDB's own parse of a SELECT (`json_serialize_sql`: parsed, not bound or run)."""
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = duckdb.connect(":memory:")
        rows = _parser.execute("SELECT json_serialize_sql(?)", [text]).fetchall()
    tree: dict[str, Any] = json.loads(rows[0][0])
    return tree


def _functions(node: Any) -> Iterator[tuple[str, str]]:
    """("table" | "scalar", lower-case name) of every function the parsed query calls,
    in subqueries, CTEs, joins and lambdas alike, and ("option", name) of every named
    parameter given to a table function (`read_csv(..., store_rejects = true)`)."""
    if isinstance(node, dict):
        if node.get("type") == "TABLE_FUNCTION" and isinstance(node.get("function"), dict):
            yield "table", str(node["function"].get("function_name", "")).lower()
            arguments = node["function"].get("arguments", [])
            for argument in arguments:
                option = _option_name(argument)
                if option is not None:
                    yield "option", option
            yield from _functions(arguments)
            node = {k: v for k, v in node.items() if k != "function"}
        elif isinstance(node.get("function_name"), str):
            yield "scalar", node["function_name"].lower()
        for value in node.values():
            yield from _functions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _functions(item)


def _option_name(argument: Any) -> str | None:
    """The name of a table function's named parameter (parsed as `name = value`)."""
    expression = argument.get("expression") if isinstance(argument, dict) else None
    if not isinstance(expression, dict) or expression.get("type") != "COMPARE_EQUAL":
        return None
    left = expression.get("left")
    if isinstance(left, dict) and left.get("type") == "COLUMN_REF":
        names = left.get("column_names") or []
        if len(names) == 1:
            return str(names[0]).lower()
    return None


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0]
