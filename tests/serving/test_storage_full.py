"""A full disk: a push is refused with 507 naming the cause (no 500, no traceback), and
/health says so until a write succeeds again; a disk nearly full is reported before a
write fails.

The disk is real: `almanac serve` runs in its own user and mount namespaces
(`unshare`), with a 4 MiB tmpfs mounted over the repo's data folder (where the offline
store writes); the test fills it through /proc/<pid>/root, which sees that mount."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from serving_helpers import http, serving, write_repo

from almanac.errors import StorageFullError
from almanac.serving.errors import error_reply
from almanac.serving.handlers import STORAGE_FLOOR_BYTES

TMPFS_BYTES = 4 * 1024 * 1024


def _rows(count: int, width: int) -> dict[str, list]:
    return {
        "user_id": [f"u{i}" for i in range(count)],
        "event_timestamp": [datetime.now(UTC).isoformat()] * count,
        "clicks": list(range(count)),
        "spend": [1.0] * count,
        "segment": [os.urandom(width).hex() for _ in range(count)],  # incompressible
        "last_page": ["/"] * count,
    }


def test_a_full_disk_is_507_and_health_reports_it(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", "sqlite:///.almanac/online.db")
    data = repo / "data"
    data.mkdir(exist_ok=True)
    mount = 'mount -t tmpfs -o size="$1" tmpfs "$0" && shift && exec "$@"'
    prefix = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount,
              str(data), str(TMPFS_BYTES)]  # fmt: skip
    with serving(repo, prefix=prefix) as served:
        url = served.url
        filler = Path(f"/proc/{served.pid}/root") / data.relative_to("/") / "filler"

        def health() -> dict:
            status, body = http("GET", url + "/health")
            assert status == 200, body  # reads are still served: degraded, not down
            return body

        assert health()["storage"] == {"status": "ok"}
        # Nearly full: reported before any write fails.
        filler.write_bytes(b"\0" * (TMPFS_BYTES - STORAGE_FLOOR_BYTES // 2))
        body = health()
        assert body["status"] == "degraded"
        assert body["storage"]["status"] == "full"
        assert "bytes free" in body["storage"]["detail"]
        # A push that does not fit: 507, the cause named, nothing of it kept.
        push = {"push_source_name": "user_events", "to": "online_and_offline"}
        status, answer = http("POST", url + "/push", {**push, "df": _rows(3000, 200)})
        assert status == 507, answer
        assert answer["error"] == "StorageFullError"
        assert "Traceback" not in answer["detail"]
        filler.unlink()
        # Room again, but the last write failed: still reported, until one succeeds.
        body = health()
        assert body["status"] == "degraded"
        assert answer["detail"] in body["storage"]["detail"]
        status, answer = http("POST", url + "/push", {**push, "df": _rows(3, 8)})
        assert status == 200, answer
        assert health() == {**body, "status": "ok", "storage": {"status": "ok"}}
        status, answer = http(
            "POST", url + "/get-online-features",
            {"features": ["user_stats:clicks"], "entities": {"user_id": ["u2", "u2999"]}},
        )  # fmt: skip
        assert status == 200, answer
        assert answer["results"][1]["statuses"] == ["PRESENT", "NOT_FOUND"]  # the 507 kept nothing
        assert answer["results"][1]["values"] == [2, None]


def test_storage_errors_map_to_507_whichever_layer_raised_them() -> None:
    status, body, _ = error_reply(StorageFullError("offline store: disk full"))
    assert (status, body) == (
        507,
        b'{"detail":"offline store: disk full","error":"StorageFullError"}',
    )
    status, body, _ = error_reply(OSError(28, "No space left on device"))
    assert status == 507 and b"No space left on device" in body
    try:
        try:
            raise OSError(122, "Disk quota exceeded")
        except OSError as cause:
            raise RuntimeError("write failed") from cause
    except RuntimeError as wrapped:
        assert error_reply(wrapped)[0] == 507
