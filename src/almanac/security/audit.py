"""The audit log: one JSON line per request the server answers — time, request id,
principal, method, endpoint, what it touched (features, source, entity count), decision
(allowed, denied, unauthenticated), status and latency — and one per operation the SDK
or CLI runs on the registry, the stores or materialization (`operation`: its action,
views or sources, rows, decision, status "ok" or "error"). Never feature values, keys
or tokens.

To `audit.path`, rotated by `logging`'s rotating file handler at `max_bytes` with
`backups` kept. The server buffers its lines in memory and writes them twice a second
(and at exit): a process killed with SIGKILL loses at most its last half second. An
SDK process writes each operation's line at once (one append: the lines of processes
sharing the file do not interleave). `almanac audit` reads it back.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import logging.handlers
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from almanac.config import AuditConfig

FLUSH_SECONDS = 0.5
# What a handler adds to its request's audit line (features read, source pushed to ...).
DETAIL: ContextVar[dict[str, Any] | None] = ContextVar("almanac_audit_detail", default=None)


def note(**fields: Any) -> None:
    """Add to the current request's audit line (a no-op outside a request)."""
    detail = DETAIL.get()
    if detail is not None:
        detail.update(fields)


class AuditLog:
    def __init__(self, config: AuditConfig, repo_path: Path, *, buffered: bool = True) -> None:
        path = Path(config.path)
        self.path = path if path.is_absolute() else repo_path / path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The standard library's rotation (rename .1 → .2 …); the lines themselves are
        # buffered in a list (a request appends one: no lock, no system call) and
        # written by a thread every FLUSH_SECONDS, and at exit.
        self._file = logging.handlers.RotatingFileHandler(
            self.path, maxBytes=config.max_bytes, backupCount=config.backups, encoding="utf-8"
        )
        self.max_bytes = config.max_bytes
        # Deques: an append (request thread) and a popleft (flush) never lose a line,
        # where swapping a list could drop one appended during the swap.
        self._lines: deque[str] = deque()  # operations, formatted
        self._requests: deque[tuple[Any, ...]] = deque()  # server requests, formatted at flush
        self._lock = threading.Lock()  # one writer at a time (the thread, a flush, close)
        self._process, self._numbers = uuid.uuid4().hex[:8], itertools.count(1)  # request ids
        self._stop = threading.Event()
        self.buffered = buffered
        if buffered:
            flusher = threading.Thread(target=self._flush_periodically, name="almanac-audit", daemon=True)  # fmt: skip
            flusher.start()
        atexit.register(self.close)

    def request(self, *, principal: str | None, method: str, endpoint: str, status: int, seconds: float, detail: dict[str, Any] | None) -> None:  # fmt: skip
        # On the request path: the fields only (a tuple append); the line is formatted
        # when it is written.
        self._requests.append((time.time(), next(self._numbers), principal, method, endpoint, status, seconds, detail))  # fmt: skip

    def _request_line(self, at: float, number: int, principal: str | None, method: str, endpoint: str, status: int, seconds: float, detail: dict[str, Any] | None) -> str:  # fmt: skip
        decision = "unauthenticated" if status == 401 else "denied" if status == 403 else "allowed"
        what = {"method": method, "endpoint": endpoint}
        return self._line(at, number, principal, what, decision, status, seconds, detail or {})

    def _line(self, at: float, number: int, principal: str | None, what: dict[str, Any], decision: str, status: int | str, seconds: float, detail: dict[str, Any]) -> str:  # fmt: skip
        """One line: the fields every line has, then what is particular to it."""
        line = {
            "at": datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds"),
            "request_id": f"{self._process}-{number}", "principal": principal, **what,
            "decision": decision, "status": status, "latency_ms": round(seconds * 1000, 3),
            **detail,
        }  # fmt: skip
        return orjson.dumps(line, default=str).decode()

    def operation(self, *, principal: str, name: str, status: str, seconds: float, denied: bool = False, **detail: Any) -> None:  # fmt: skip
        """One SDK/CLI operation (`name`: apply, materialize, push ...): `status` "ok" or
        "error" (with `error`: the denial, or the exception's class)."""
        decision = "denied" if denied else "allowed"
        line = self._line(time.time(), next(self._numbers), principal, {"operation": name}, decision, status, seconds, detail)  # fmt: skip
        self._lines.append(line)
        if not self.buffered:
            self.flush()

    def _flush_periodically(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines = [self._lines.popleft() for _ in range(len(self._lines))]
            requests = [self._requests.popleft() for _ in range(len(self._requests))]
            lines += [self._request_line(*fields) for fields in requests]
            if not lines:
                return
            stream = self._file.stream
            if stream is None:  # closed
                return
            stream.write("\n".join(lines) + "\n")
            stream.flush()
            if self.max_bytes and stream.tell() >= self.max_bytes:
                self._file.doRollover()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        with self._lock:
            self._file.close()


def read(path: Path, principal: str | None = None, since: datetime | None = None) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The audit lines of `path` and its rotated files, oldest first."""
    files = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)  # fmt: skip
    for file in [*files, path]:
        if not file.is_file():
            continue
        with file.open(encoding="utf-8") as handle:
            for text in handle:
                line = json.loads(text)
                if principal is not None and line.get("principal") != principal:
                    continue
                if since is not None and datetime.fromisoformat(line["at"]) < since:
                    continue
                yield line
