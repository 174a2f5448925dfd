"""Where a view's rows live, as something DuckDB can scan.

`scan_source` turns a source definition into a `SourceScan`: the SQL text of a relation
(`read_parquet([...])`, `read_csv([...])` or a subquery), the columns it has and their
DuckDB types, and how rows are ordered among exact ties (see `point_in_time`). File lists
are built here, sorted, so "file order" is well defined: later path (by string order), then
later row in the file. Paths that do not exist or cannot be read are InputErrors naming
the path.

SQL text that a definition brings (a `SqlSource` query; a SQL transformation, which
reaches DuckDB through `describe`) must be one read-only SELECT (`check_select`), and is
checked by DuckDB's own parser before anything runs: every reader of a source (plan's
schema check, training sets, materialization, value history) goes through `scan_source`
and `describe`, so a query that would write a file, attach a database, install an
extension or change a setting is a DefinitionError naming the source, and never runs.
"""

from __future__ import annotations

import glob
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb

from almanac.config import RepoConfig
from almanac.definitions.sources import FileSource, PushSource, SqlSource
from almanac.errors import DefinitionError, InputError

Source = FileSource | SqlSource | PushSource

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
_GLOB_CHARS = ("*", "?", "[")


@dataclass(frozen=True)
class SourceScan:
    """A scannable relation for one source."""

    relation: str  # SQL usable after FROM
    columns: dict[str, str]  # column name → DuckDB type, as the source has them
    file_order: bool  # rows carry `file_index` and `file_row_number` (Parquet files)
    empty: bool = False  # no data yet (an empty folder or push dataset)
    label: str = ""  # for error messages: the source and its path


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def push_folder(config: RepoConfig, source: PushSource) -> Path:
    """The Almanac-managed Parquet dataset of a push source."""
    return config.resolve_path(config.offline.data_path) / str(source.name)


def has_glob(path: str) -> bool:
    return any(char in path for char in _GLOB_CHARS)


def _visible(path: Path, root: Path) -> bool:
    # Temp files being written (".x.tmp") and "_SUCCESS"-style markers are not data.
    parts = path.relative_to(root).parts if path.is_relative_to(root) else (path.name,)
    return not any(part.startswith((".", "_")) for part in parts)


def list_files(config: RepoConfig, source: FileSource | PushSource) -> tuple[list[Path], str]:
    """The data files of a file or push source, sorted, and a label for messages."""
    if isinstance(source, PushSource):
        folder = push_folder(config, source)
        label = f"push source '{source.name}' ({folder})"
        if not folder.is_dir():
            return [], label
        return _files_in(folder, PARQUET_SUFFIXES), label
    path = config.resolve_path(source.path)
    label = f"source '{source.name}' ({path})"
    suffixes = CSV_SUFFIXES if source.format == "csv" else PARQUET_SUFFIXES
    if has_glob(source.path):
        root = Path(glob_root(str(path)))
        files = sorted(
            Path(p)
            for p in glob.glob(str(path), recursive=True)
            if Path(p).is_file() and _visible(Path(p), root)
        )
        if not files:
            raise InputError(f"{label}: no files match this pattern")
        return files, label
    if path.is_dir():
        return _files_in(path, suffixes), label
    if path.is_file():
        return [path], label
    raise InputError(f"{label}: {path} does not exist")


def _files_in(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.name.lower().endswith(suffixes) and _visible(p, folder)
    )


def glob_root(pattern: str) -> str:
    """The folder part of a glob before its first wildcard."""
    head = pattern
    while has_glob(head):
        head = os.path.dirname(head)
    return head or "."


def scan_source(con: duckdb.DuckDBPyConnection, config: RepoConfig, source: Source) -> SourceScan:
    """Build the scan of a source and read its schema (file footers only, no data)."""
    if isinstance(source, SqlSource):
        label = f"SQL source '{source.name}'"
        check_select(source.query, label)
        # A newline before the parenthesis: a trailing "-- comment" must not swallow it.
        relation = f"({source.query.strip().rstrip(';')}\n)"
        return SourceScan(relation, describe(con, relation, label), False, label=label)
    files, label = list_files(config, source)
    if not files:
        return SourceScan("", {}, True, empty=True, label=label)
    paths = "[" + ", ".join(sql_string(str(p)) for p in files) + "]"
    many = ", union_by_name = true" if len(files) > 1 else ""
    if isinstance(source, FileSource) and source.format == "csv":
        relation = f"read_csv({paths}{many})"
        return SourceScan(relation, describe(con, relation, label), False, label=label)
    relation = f"read_parquet({paths}, file_row_number = true{many})"
    columns = describe(con, relation, label)
    columns.pop("file_row_number", None)
    return SourceScan(relation, columns, True, label=label)


def describe(con: duckdb.DuckDBPyConnection, relation: str, label: str) -> dict[str, str]:
    """The columns and DuckDB types of `relation` (its plan, not its data). A relation
    in parentheses holds a definition's SQL (a source query, a SQL transformation):
    the SELECT over it must be one read-only statement, checked before DuckDB sees it
    (the relations built here from file lists, and registered tables, are not text
    anyone wrote)."""
    if relation.lstrip().startswith("("):
        check_select(f"SELECT * FROM {relation}", label)
    try:
        rows = con.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    except duckdb.Error as error:
        message = str(error).strip().splitlines()[0]
        if "magic bytes" in message or "not a parquet file" in message.lower():
            message = f"not a Parquet file ({message})"
        raise InputError(f"{label}: cannot be read: {message}") from None
    return {name: dtype for name, dtype, *_ in rows}


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
    return json.loads(rows[0][0])


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
