"""Group commit for concurrent pushes: the pushes to one source that arrive while one is
being written are written together, as one push (one offline file, one online round
trip per view), and each caller is answered once the group is durable in both stores.

Under load a group grows by itself: while a group is written, the next one gathers. A
quiet server writes each push alone, with no added wait. If the group is refused (one
push's rows break a rule), each of its pushes is written alone, so a bad push fails
alone and the good ones still land — each push stays all or nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from almanac.errors import InputError
from almanac.ingest.push import to_arrow

# (source, df, to) -> rows written; runs in a worker thread
Writer = Callable[[str, Any, str], int]


@dataclass
class _Group:
    items: list[tuple[pa.Table, asyncio.Future[int]]] = field(default_factory=list)
    running: bool = False
    task: asyncio.Task[None] | None = None  # kept: the loop holds tasks only weakly


class GroupCommit:
    """`groupable(source)`: whether a source's pushes may be written together (not when
    a view of it quarantines rows: a push's own count of written rows would be lost)."""

    def __init__(self, write: Writer, groupable: Callable[[str], bool], max_rows: int = 50_000) -> None:  # fmt: skip
        self._write = write
        self._groupable = groupable
        self.max_rows = max_rows
        self._groups: dict[tuple[str, str], _Group] = {}

    async def push(self, source: str, df: Any, to: str) -> int:
        if not self._groupable(source):
            return await asyncio.to_thread(self._write, source, df, to)
        table = to_arrow(df, f"push to '{source}'")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        group = self._groups.setdefault((source, to), _Group())
        group.items.append((table, future))
        if not group.running:
            group.running = True
            group.task = asyncio.create_task(self._drain(source, to, group))
        return await future

    async def _drain(self, source: str, to: str, group: _Group) -> None:
        try:
            while group.items:
                taken: list[tuple[pa.Table, asyncio.Future[int]]] = []
                rows = 0
                while group.items and (not taken or rows + group.items[0][0].num_rows <= self.max_rows):  # fmt: skip
                    item = group.items.pop(0)
                    taken.append(item)
                    rows += item[0].num_rows
                results = await asyncio.to_thread(self._write_group, source, to, [t for t, _ in taken])  # fmt: skip
                for (_, future), result in zip(taken, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            group.running = False

    def _write_group(self, source: str, to: str, tables: list[pa.Table]) -> list[int | BaseException]:  # fmt: skip
        if len(tables) > 1:
            try:
                combined = pa.concat_tables(tables, promote_options="permissive")
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                combined = None
            if combined is not None:
                try:
                    written = self._write(source, combined, to)
                except InputError:
                    written = -1  # one push's rows are refused: each alone, below
                except Exception as error:  # the store is down: every push of the group fails
                    return [error] * len(tables)
                if written >= 0:  # every row was written (quarantining sources are not grouped)
                    return [t.num_rows for t in tables]
        out: list[int | BaseException] = []
        for table in tables:
            try:
                out.append(self._write(source, table, to))
            except Exception as error:
                out.append(error)
        return out
