"""A push is all or nothing across both stores: one that fails (the online store is down,
the disk is full) leaves neither store changed, so retrying until it succeeds records the
rows once offline and once online."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "serving"))
from serving_helpers import write_repo

from almanac import FeatureStore
from almanac.errors import StorageFullError, StoreUnavailableError
from servers import RedisServer, start_redis

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
ROW = {"user_id": ["u1"], "event_timestamp": [NOW], "clicks": [3], "spend": [1.5],
       "segment": ["gold"], "last_page": ["/cart"]}  # fmt: skip


def offline_rows(store: FeatureStore) -> int:
    """How many rows of u1 the offline store holds."""
    view = store.catalog.view("user_stats")
    return store.offline.value_history(store.catalog, view, {"user_id": "u1"}).num_rows


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = start_redis()  # its own server: the test stops it
    yield server
    server.stop()


@pytest.mark.redis
def test_a_push_refused_by_a_down_online_store_leaves_the_offline_store_unchanged(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    with FeatureStore(write_repo(tmp_path / "repo", own_redis.url)) as store:
        push_folder = store.config.resolve_path(store.config.offline.data_path)
        own_redis.stop()
        for _ in range(3):  # a client retrying while Redis is down
            with pytest.raises(StoreUnavailableError):
                store.push("user_events", ROW)
        assert offline_rows(store) == 0
        assert files_in(push_folder) == []  # no data, and no temporary file left behind
        own_redis.start()
        assert store.push("user_events", ROW) == 1
        assert offline_rows(store) == 1  # once, not once per attempt
        online = store.get_online_features(["user_stats:clicks"], [{"user_id": "u1"}])
        assert online.values["clicks"] == [3]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (the tests run as root, as CI does): a disk that fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_refuses_the_push_with_a_clear_error_and_changes_nothing(
    tmp_path: Path, tiny_disk: Path
) -> None:
    repo = write_repo(tmp_path / "repo", "sqlite:///.almanac/online.db")
    config = (repo / "almanac.yaml").read_text()
    (repo / "almanac.yaml").write_text(config + f"offline:\n  data_path: {tiny_disk}/offline\n")
    (tiny_disk / "filler").write_bytes(b"\0" * 250 * 1024)  # almost full
    with FeatureStore(repo) as store:
        big = {key: values * 2000 for key, values in ROW.items()}
        big["user_id"] = [f"u{i}" for i in range(2000)]
        with pytest.raises(StorageFullError, match="no room left") as refused:
            store.push("user_events", big)
        assert "free disk space" in str(refused.value)
        assert files_in(tiny_disk / "offline") == []
        online = store.get_online_features(["user_stats:clicks"], [{"user_id": "u1"}])
        assert [str(s) for s in online.statuses["clicks"]] == ["NOT_FOUND"]
        (tiny_disk / "filler").unlink()  # room again: the same push goes through, once
        assert store.push("user_events", big) == 2000
        assert offline_rows(store) == 1
