"""The real Feast client against `almanac serve`: a Feast 0.67 `FeatureStore` with
`online_store: type: remote` writes (`write_to_online_store`), pushes and reads
(feature lists and a feature service) through Almanac, with an API key.

Feast runs in its own venv (.tools/feast-venv, from tests/serving/feast-client.txt):
its pins conflict with Almanac's lock file. `make test` builds it first; run alone, this
test builds it (once, about a minute) through the same Makefile target."""

from __future__ import annotations

import fcntl
import json
import subprocess
from pathlib import Path

import pytest
from serving_helpers import serving, write_repo

from almanac import FeatureStore

ROOT = Path(__file__).resolve().parents[2]
FEAST_VENV = ROOT / ".tools" / "feast-venv"
CLIENT = Path(__file__).with_name("feast_client.py")
KEY = "feast-key"


@pytest.fixture(scope="session")
def feast_python() -> Path:
    """The Feast venv's python, built by `make` when missing or out of date."""
    FEAST_VENV.parent.mkdir(exist_ok=True)
    with open(FEAST_VENV.parent / "feast-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers build it once
        subprocess.run(
            ["make", "--no-print-directory", "-s", str(FEAST_VENV.relative_to(ROOT) / ".installed")],
            cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return FEAST_VENV / "bin" / "python"


@pytest.mark.redis
def test_a_feast_client_writes_pushes_and_reads_through_almanac(
    feast_python: Path, tmp_path: Path, redis_url: str
) -> None:
    repo = write_repo(tmp_path / "repo", redis_url, api_keys=[KEY])
    with serving(repo) as served:
        done = subprocess.run(
            [str(feast_python), str(CLIENT), served.url, KEY, str(tmp_path)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["write"] == "ok", out
    assert out["push"] == "ok", out
    assert out["read"] == {
        "user_id": ["f1", "f2", "nobody"],
        "clicks": [11, 22, None],
        "spend": [1.5, 2.5, None],
        "segment": ["gold", "tin", None],
        "last_page": [None, "/cart", None],  # write_to_online_store wrote user_stats only
    }
    assert out["read_service"] == {
        "user_id": ["f1", "f2", "nobody"],
        "clicks": [11, 22, None],
        "segment": ["gold", "tin", None],
    }
    assert "401" in out["wrong_key"], out["wrong_key"]
    # What Feast wrote is in Almanac's online store, typed, and only there (to=ONLINE).
    with FeatureStore(repo) as store:
        values = store.get_online_features(
            ["user_stats:clicks", "user_recent:last_page"], [{"user_id": "f1"}, {"user_id": "f2"}]
        ).to_dict(include_statuses=True)
    assert values["clicks"] == [11, 22]
    assert values["last_page"] == [None, "/cart"]
    offline = repo / "data" / "offline"
    assert not offline.exists() or not any(offline.rglob("*.parquet"))
