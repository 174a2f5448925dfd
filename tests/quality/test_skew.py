"""The skew report finds a planted skew exactly and reports none on a clean run; the
serving log keeps whole entities."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from almanac import FeatureStore
from almanac.errors import InputError
from almanac.quality.serving_log import sampled
from almanac.serving.app import create_app

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
USERS = list(range(200))
FEATURES = """
from almanac import Entity, FeatureService, FeatureView, Field, FileSource, Float64, String

user = Entity(name="user", join_keys=["user_id"], dtype="int64")
profile = FeatureView(
    name="profile", entities=[user], source=FileSource(name="profile_source", path="data/profile/"),
    schema=[Field("score", Float64), Field("tier", String)],
)
ranker = FeatureService(name="ranker", features=[profile])
"""


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    url = "sqlite:///.almanac/online.db" if request.param == "sqlite" else request.getfixturevalue("redis_url")  # fmt: skip
    repo = tmp_path / "repo"
    (repo / "data" / "profile").mkdir(parents=True)
    (repo / "almanac.yaml").write_text(
        f"project: skew\nonline:\n  url: {url}\nserver:\n  log_sample_rate: {{rate}}\n"
    )
    (repo / "features.py").write_text(FEATURES)
    return repo


def serve(repo: Path, rate: float, plant: list[int]) -> FeatureStore:
    (repo / "almanac.yaml").write_text((repo / "almanac.yaml").read_text().replace("{rate}", str(rate)))  # fmt: skip
    store = FeatureStore(repo)
    store.apply()
    store.write_to_offline_store("profile", {
        "user_id": USERS, "event_timestamp": [T0] * len(USERS),
        "score": [u / 10 for u in USERS], "tier": ["free" if u % 3 else "pro" for u in USERS],
    })  # fmt: skip
    store.materialize(None, T0 + timedelta(hours=1))
    if plant:  # values written straight into the online store, behind the offline store's back
        later = pa.array([T0 + timedelta(minutes=5)] * len(plant), pa.timestamp("us", tz="UTC"))
        rows = pa.table({"user_id": plant, "event_timestamp": later, "score": [-1.0] * len(plant),
                         "tier": ["free" if u % 3 else "pro" for u in plant]})  # fmt: skip
        store.online.write_batch(store.project, "profile", ["user_id"], ["score", "tier"], rows)
    with TestClient(create_app(repo)) as client:
        for half in (USERS[:100], USERS[100:]):
            answer = client.post("/get-online-features", json={"feature_service": "ranker", "entities": {"user_id": half}})  # fmt: skip
            assert answer.status_code == 200
    return store


def test_a_planted_skew_is_reported_exactly(repo: Path) -> None:
    planted = USERS[::33][:6]  # 3% of the entities
    store = serve(repo, 1.0, planted)
    report = {f.feature: f for f in store.skew("ranker").features}
    assert report["score"].compared == 200 and report["score"].mismatches == 6
    assert report["score"].rate == pytest.approx(0.03)
    assert sorted(e["entity"]["user_id"] for e in report["score"].examples) == planted[:5]
    assert report["tier"].rate == 0  # the same text was written


def test_a_clean_run_reports_no_skew(repo: Path) -> None:
    store = serve(repo, 1.0, [])
    report = store.skew("ranker")
    assert report.rows == 200 and all(f.rate == 0 for f in report.features)
    with pytest.raises(InputError, match="no logged reads"):
        store.skew("ranker", start=datetime.now(UTC) + timedelta(hours=1))


def test_an_entity_is_sampled_alike_in_any_batch() -> None:
    """The vectorized path (large batches) and the per-row path agree, for both key kinds."""
    for keys in (list(range(500)), [f"user-{i}" for i in range(500)], list(range(-2**63, -2**63 + 500))):  # fmt: skip
        alone = [i for i, key in enumerate(keys) if sampled({"user_id": [key]}, 0.25)]
        assert alone == sampled({"user_id": keys}, 0.25)
        assert 80 < len(alone) < 170
    composite = {"shop": [f"s{i % 7}" for i in range(500)], "item": list(range(500))}
    alone = [i for i in range(500) if sampled({k: [v[i]] for k, v in composite.items()}, 0.25)]
    assert alone == sampled(composite, 0.25)


def test_sampling_keeps_whole_entities(repo: Path) -> None:
    import pyarrow.parquet as pq

    from almanac.quality.serving_log import log_folder

    store = serve(repo, 0.3, [])
    expected = {USERS[i] for i in sampled({"user_id": USERS}, 0.3)}
    assert 30 < len(expected) < 90
    import json

    files = sorted(log_folder(store.config).glob("*.parquet"))
    logged = [u for path in files for text in pq.read_table(path).column("entity").to_pylist()
              for u in json.loads(text)["user_id"]]  # fmt: skip
    assert sorted(logged) == sorted(expected)  # each sampled entity once, no other


def test_the_sdk_logs_its_own_reads_when_asked(repo: Path) -> None:
    """`online.log_sample_rate`: reads through `get_online_features` in this process
    are logged and replayed like the server's (the server logs nothing here)."""
    store = serve(repo, 0.0, USERS[:4])  # 4 of 200 entities skewed
    with pytest.raises(InputError, match="no logged reads"):
        store.skew("ranker")
    config = (repo / "almanac.yaml").read_text()
    (repo / "almanac.yaml").write_text(config.replace("online:\n", "online:\n  log_sample_rate: 1.0\n"))  # fmt: skip
    with FeatureStore(repo) as sdk:
        sdk.get_online_features(feature_service="ranker", entity_rows={"user_id": USERS[:50]})
        sdk.get_online_features(feature_service="ranker", entity_rows={"user_id": USERS[50:]})
        report = {f.feature: f for f in sdk.skew("ranker").features}  # flushed in process
    assert report["score"].compared == 200 and report["score"].mismatches == 4


def test_a_process_that_exits_without_closing_the_store_still_writes_its_log(repo: Path) -> None:
    import subprocess
    import sys

    from almanac.quality.serving_log import log_folder

    store = serve(repo, 0.0, [])
    config = (repo / "almanac.yaml").read_text()
    (repo / "almanac.yaml").write_text(config.replace("online:\n", "online:\n  log_sample_rate: 1.0\n"))  # fmt: skip
    script = (
        "from almanac import FeatureStore\n"
        f"store = FeatureStore({str(repo)!r})\n"
        "store.get_online_features(feature_service='ranker', entity_rows={'user_id': [1, 2, 3]})\n"
    )  # no close: the records wait in memory until the interpreter exits
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "not written" not in done.stderr, done.stderr
    assert len(list(log_folder(store.config).glob("*.parquet"))) == 1
    assert store.skew("ranker").rows == 3


def test_drift_of_what_was_served(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The serving log as drift's current sample: served = stored gives ok; values
    overwritten online for 30% of the entities show up as drift of that feature only."""
    import json

    from almanac.cli import main
    from almanac.quality.served import Served

    store = serve(repo, 1.0, USERS[::10][:6])  # 3%: within noise
    calm = {d.feature: d for d in store.drift("profile", (None, None), Served())}
    assert calm["score"].current_rows == 200 and calm["score"].status == "ok"
    assert calm["tier"].psi == pytest.approx(0, abs=1e-9)
    skewed = store.online
    later = pa.array([T0 + timedelta(minutes=9)] * 60, pa.timestamp("us", tz="UTC"))
    rows = pa.table({"user_id": USERS[:60], "event_timestamp": later, "score": [-1.0] * 60,
                     "tier": ["free" if u % 3 else "pro" for u in USERS[:60]]})  # fmt: skip
    skewed.write_batch(store.project, "profile", ["user_id"], ["score", "tier"], rows)
    read_at = datetime.now(UTC)
    store.get_online_features(
        feature_service="ranker", entity_rows={"user_id": USERS}
    )  # not logged: the SDK's rate is 0
    with TestClient(create_app(repo)) as client:
        client.post("/get-online-features", json={"feature_service": "ranker", "entities": {"user_id": USERS}})  # fmt: skip
    moved = {
        d.feature: d.status for d in store.drift("profile", (None, None), Served(start=read_at))
    }
    assert moved == {"score": "drift", "tier": "ok"}
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--repo", str(repo), "drift", "profile", "--reference", "..",
              "--current-served", f"{read_at.isoformat()}..", "--json"])  # fmt: skip
    found = json.loads(capsys.readouterr().out)
    assert {d["feature"]: d["status"] for d in found} == moved
    with pytest.raises(InputError, match="holds no reads of feature view 'profile'"):
        store.drift("profile", (None, None), Served(start=datetime.now(UTC) + timedelta(hours=1)))
