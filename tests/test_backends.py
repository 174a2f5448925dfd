"""Backends are plug-ins: a package that Almanac has never heard of adds an engine or an
online store by entry point alone, with its own settings section, validated by its own
model; Almanac's built-ins are found the same way."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from almanac import backends
from almanac.errors import ConfigError
from almanac.starter import create_starter_repo

PLUGIN = '''
"""A third-party package: an offline engine that counts the training sets it computes,
and an online store reached at memo:// that is SQLite under another name."""
from pydantic import BaseModel, ConfigDict

from almanac.offline.duckdb.engine import DuckDBEngine
from almanac.online.sqlite.store import SqliteOnlineStore


class CountingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str
    limit: int = 10


class CountingEngine(DuckDBEngine):
    settings = CountingSettings
    calls = 0

    def __init__(self, config):
        super().__init__(config)
        self.own = config.backend_settings("offline", "counting", CountingSettings)

    def get_historical_features(self, *args, **kwargs):
        type(self).calls += 1
        print(f"counting[{self.own.label}] call {type(self).calls}")
        return super().get_historical_features(*args, **kwargs)


class MemoStore(SqliteOnlineStore):
    @classmethod
    def from_config(cls, config):
        path = config.resolve_path(config.online.url.removeprefix("memo://"))
        return cls(path)

    @property
    def backend(self):
        return "memo"
'''

ENTRY_POINTS = """
[almanac.backends]
offline.counting = almanac_counting:CountingEngine
online.memo = almanac_counting:MemoStore
"""


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    """An installed-looking distribution on a path of its own: a module and dist-info."""
    site = tmp_path / "site"
    (site / "almanac_counting-0.1.dist-info").mkdir(parents=True)
    (site / "almanac_counting.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "almanac_counting-0.1.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: almanac-counting\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


def test_the_built_in_backends_are_registered_by_entry_point() -> None:
    assert {"duckdb", "spark"} <= set(backends.names("offline"))
    assert {"sqlite", "redis", "rediss"} <= set(backends.names("online"))
    assert backends.load("offline", "duckdb").__name__ == "DuckDBEngine"


def test_an_unknown_backend_names_the_setting_and_the_choices() -> None:
    with pytest.raises(ConfigError) as raised:
        backends.load("offline", "oracle")
    assert "offline.engine" in str(raised.value)
    assert "duckdb" in str(raised.value)


def test_a_third_party_package_adds_an_engine_and_a_store(
    tmp_path: Path, plugin_path: Path
) -> None:
    """The starter repo, pointed at the plug-in's engine and store by configuration
    alone, runs apply, materialize, a training set and an online read."""
    starter_repo = tmp_path / "repo"
    create_starter_repo(starter_repo, users=20, events=400)
    config = starter_repo / "almanac.yaml"
    text = re.sub(
        r"  engine: duckdb.*\n",
        "  engine: counting\n  counting:\n    label: team-a\n",
        config.read_text(),
    )
    config.write_text(text)
    env = {
        **os.environ,
        "PYTHONPATH": str(plugin_path),
        "ALMANAC_ONLINE_URL": "memo://.almanac/memo.db",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(Path(sys.executable).parent / "almanac"), "--repo", str(starter_repo), *args],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    assert run("apply").returncode == 0
    done = run("materialize-incremental")
    assert done.returncode == 0, done.stderr
    assert (starter_repo / ".almanac" / "memo.db").is_file()
    online = run("get-online", "-f", "user_stats", "-k", "user_id=0001")
    assert online.returncode == 0, online.stderr
    spine = starter_repo / "spine.csv"
    spine.write_text("user_id,event_timestamp\n0001,2024-05-30T00:00:00Z\n")
    out = str(tmp_path / "t.parquet")
    historical = run("historical", "--entities", str(spine), "-f", "user_stats", "--out", out)
    assert historical.returncode == 0, historical.stderr
    assert "counting[team-a] call 1" in historical.stdout

    # Its section is checked by its own model: a missing required setting is named.
    config.write_text(text.replace("    label: team-a\n", "    limt: 3\n"))
    bad = run("historical", "--entities", str(spine), "-f", "user_stats", "--out", out)
    assert bad.returncode != 0
    assert "'offline.counting.label'" in bad.stderr
    assert "'offline.counting.limt'" in bad.stderr
    assert "Traceback" not in bad.stderr
