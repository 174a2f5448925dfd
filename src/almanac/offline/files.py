"""Where a file or push source's rows live: the sorted list of its data files.

Engine-neutral: every engine reads the same files in the same order, so "file order"
(rule 2's last tie-breaker for Parquet) is one definition. Later path (by string order),
then later row in the file; Almanac's own appends sort last. Paths that do not exist or
cannot be listed are InputErrors naming the path.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pyarrow.parquet as pq

from almanac.config import RepoConfig
from almanac.definitions.sources import FileSource, PushSource, SqlSource
from almanac.errors import InputError

Source = FileSource | SqlSource | PushSource

PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
_GLOB_CHARS = ("*", "?", "[")

# Almanac's own files: `part-<ns>-<random>[-k<key tag>].parquet`, and compacted ones
# `part-<ns>-zc<random>.parquet` (see `almanac.offline.compaction`).
COMPACTED_MARK = "zc"
REPLACES_META, KEYS_META = b"almanac.replaces", b"almanac.keys"
_NAME = re.compile(r"part-(\d{20})-(zc)?[0-9a-f]{8}(?:-k([0-9a-f]{32}))?\.parquet")


def file_time_ns(name: str) -> int | None:
    """When an Almanac file was staged (its name's nanoseconds); None for other names."""
    match = _NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def key_of_name(name: str) -> str | None:
    """The idempotency key tag a pushed file's name carries, if any."""
    match = _NAME.fullmatch(name)
    return match.group(3) if match else None


@dataclass(frozen=True)
class Compacted:
    replaces: tuple[str, ...]  # the file names it holds the rows of
    keys: dict[str, list[int]]  # idempotency key tag -> [rows, pushed at ns]


def compaction_of(path: Path) -> Compacted | None:
    """What a compacted file replaces (None for other files)."""
    match = _NAME.fullmatch(path.name)
    if not match or not match.group(2):
        return None
    try:
        stat = path.stat()
    except FileNotFoundError:  # deleted by a later compaction: what it held is listed anew
        return None
    return _compacted(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=1024)
def _compacted(path: str, mtime_ns: int, size: int) -> Compacted:
    # Keyed by mtime and size too: a compacted file is never rewritten, but a path may be
    # reused after a delete.
    metadata = pq.read_schema(path).metadata or {}
    replaces = tuple(json.loads(metadata.get(REPLACES_META, b"[]")))
    return Compacted(replaces, json.loads(metadata.get(KEYS_META, b"{}")))


def live_files(files: list[Path]) -> list[Path]:
    """`files` (of one push source's folder) without those a compacted file replaces."""
    replaced: set[str] = set()
    for path in files:
        compacted = compaction_of(path)
        if compacted is not None:
            replaced.update(compacted.replaces)
    return [path for path in files if path.name not in replaced] if replaced else files


def push_folder(config: RepoConfig, source: PushSource) -> Path:
    """The Almanac-managed Parquet dataset of a push source."""
    return config.resolve_path(config.offline.data_path) / str(source.name)


def quarantine_folder(config: RepoConfig, view: str) -> Path:
    """Where a view's quarantined rows are kept (a hidden folder: no source scans it)."""
    return config.resolve_path(config.offline.data_path) / ".quarantine" / view


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
        return live_files(_files_in(folder, PARQUET_SUFFIXES)), label
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
