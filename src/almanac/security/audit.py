"""The audit log: one JSON line per request the server answers — time, request id,
principal, method, endpoint, what it touched (features, source, entity count), decision
(allowed, denied, unauthenticated), status and latency. Never feature values, keys or
tokens. Written through `logging`'s rotating file handler (`server.audit.path`, rotated
at `max_bytes`, `backups` kept), so a write is one buffered line and rotation is the
standard library's; `almanac audit` reads it back.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from almanac.config import AuditConfig

# What a handler adds to its request's audit line (features read, source pushed to ...).
DETAIL: ContextVar[dict[str, Any] | None] = ContextVar("almanac_audit_detail", default=None)


def note(**fields: Any) -> None:
    """Add to the current request's audit line (a no-op outside a request)."""
    detail = DETAIL.get()
    if detail is not None:
        detail.update(fields)


class AuditLog:
    def __init__(self, config: AuditConfig, repo_path: Path) -> None:
        path = Path(config.path)
        self.path = path if path.is_absolute() else repo_path / path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._logger = logging.getLogger(f"almanac.audit.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handler = logging.handlers.RotatingFileHandler(
            self.path, maxBytes=config.max_bytes, backupCount=config.backups, encoding="utf-8"
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(self._handler)

    def request(self, *, principal: str | None, method: str, endpoint: str, status: int, seconds: float, detail: dict[str, Any] | None) -> None:  # fmt: skip
        decision = "unauthenticated" if status == 401 else "denied" if status == 403 else "allowed"
        line = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "request_id": uuid.uuid4().hex[:16], "principal": principal, "method": method,
            "endpoint": endpoint, "decision": decision, "status": status,
            "latency_ms": round(seconds * 1000, 3), **(detail or {}),
        }  # fmt: skip
        self._logger.info(json.dumps(line, default=str, separators=(",", ":")))

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._handler.close()


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
