"""`stats`, `drift` and `validate` over a view's offline rows, from the SDK and the CLI:
a planted shift is found, an unchanged feature is not, breaches exit 1."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from almanac import FeatureStore
from almanac.cli import main
from almanac.errors import InputError

T0 = datetime(2024, 3, 1, tzinfo=UTC)
FEATURES = """
from almanac import Entity, Expect, FeatureView, Field, FileSource, Float64, String

user = Entity(name="user", join_keys=["user_id"], dtype="int64")
payments = FeatureView(
    name="payments", entities=[user],
    source=FileSource(name="payments_source", path="data/payments/"),
    schema=[Field("amount", Float64), Field("plan", String)],
    expectations=[Expect.between("amount", 0, 1000)], on_violation="warn",
)
"""


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    repo = tmp_path / "repo"
    (repo / "data" / "payments").mkdir(parents=True)
    (repo / "almanac.yaml").write_text("project: quality\n")
    (repo / "features.py").write_text(FEATURES)
    store = FeatureStore(repo)
    store.apply()
    rng = np.random.default_rng(3)
    for week, mean in ((0, 100.0), (1, 100.0), (2, 160.0)):  # week 2: amounts shift
        n = 4_000
        times = [T0 + timedelta(days=7 * week, seconds=int(s)) for s in rng.integers(0, 6 * 86400, n)]  # fmt: skip
        store.write_to_offline_store("payments", {
            "user_id": rng.integers(0, 500, n).tolist(), "event_timestamp": times,
            "amount": rng.normal(mean, 10, n).tolist(),
            "plan": rng.choice(["free", "pro"], n, p=[0.8, 0.2]).tolist(),
        })  # fmt: skip
    return store


def cli(store: FeatureStore, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run `almanac --repo REPO *args`: its exit code and what it printed."""
    capsys.readouterr()
    try:
        main(["--repo", str(store.repo_path), *args])
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    out, err = capsys.readouterr()
    return code, out + err


def weeks(a: int, b: int) -> tuple[datetime, datetime]:
    return T0 + timedelta(days=7 * a), T0 + timedelta(days=7 * b) - timedelta(microseconds=1)


def test_drift_finds_the_planted_shift_and_only_it(store: FeatureStore) -> None:
    calm = {d.feature: d.status for d in store.drift("payments", weeks(0, 1), weeks(1, 2))}
    assert calm == {"amount": "ok", "plan": "ok"}
    moved = {d.feature: d for d in store.drift("payments", weeks(0, 1), weeks(2, 3))}
    assert moved["amount"].status == "drift" and moved["plan"].status == "ok"
    assert moved["amount"].reference_rows == moved["amount"].current_rows == 4_000


def test_statistics_cover_the_window(store: FeatureStore) -> None:
    amount, plan = store.statistics("payments", *weeks(2, 3))
    assert amount.rows == 4_000 and amount.mean == pytest.approx(160, abs=1)
    assert [value for value, _ in plan.top] == ["free", "pro"]
    with pytest.raises(InputError, match="after end"):
        store.statistics("payments", T0 + timedelta(days=1), T0)


def test_the_cli_prints_json_and_validate_exits_1_on_a_breach(
    store: FeatureStore, capsys: pytest.CaptureFixture[str]
) -> None:
    run = partial(cli, store, capsys)

    code, out = run("describe", "payments")
    assert code == 0 and "expectations (warn): between('amount', 0, 1000)" in out
    code, out = run("stats", "payments", "--json")
    assert code == 0, out
    assert [s["feature"] for s in json.loads(out)] == ["amount", "plan"]
    start, end = (t.isoformat() for t in weeks(0, 1))
    later = weeks(2, 3)[0].isoformat()
    code, out = run("drift", "payments", "--reference", f"{start}..{end}", "--current", f"{later}..", "--json")  # fmt: skip
    assert code == 0, out
    assert {d["feature"]: d["status"] for d in json.loads(out)}["amount"] == "drift"
    assert run("validate", "payments")[0] == 0
    # A breach written under `warn` is found offline: exit 1, naming it.
    store.write_to_offline_store("payments", {
        "user_id": [1], "event_timestamp": [T0], "amount": [-5.0], "plan": ["free"]})  # fmt: skip
    code, out = run("validate", "payments")
    assert code == 1
    assert "between('amount', 0, 1000): 1 of 12001 rows (e.g. -5.0)" in " ".join(out.split())
    code, out = run("drift", "payments", "--reference", "x", "--current", "..")
    assert code == 2 and "expected START..END" in out


def test_a_saved_training_set_is_the_reference_for_drift(store: FeatureStore) -> None:
    rng = np.random.default_rng(5)
    # A spine over the calm weeks: the model trains on amounts around 100.
    spine = pa.table(
        {
            "user_id": rng.integers(0, 500, 2_000),
            "event_timestamp": [
                T0 + timedelta(days=13, hours=int(h)) for h in rng.integers(0, 24, 2_000)
            ],
            "label": rng.integers(0, 2, 2_000),
        }
    )
    job = store.get_historical_features(spine, ["payments:amount", "payments:plan"], save_as="train_v1")  # fmt: skip
    table = job.to_arrow()
    assert table.column_names == ["user_id", "event_timestamp", "label", "amount", "plan"]
    assert table.column("label").equals(spine.column("label"))  # the spine's order and columns
    saved = store.dataset("train_v1")
    assert saved.rows == 2_000 and saved.registry_version == store.registry.backend.version()
    assert [f.ref for f in saved.features] == ["payments:amount", "payments:plan"]
    amount = next(s for s in saved.statistics if s["feature"] == "amount")
    assert amount["mean"] == pytest.approx(np.mean(table.column("amount").drop_null().to_numpy()))
    assert saved.read().equals(table)
    # Against the training set, the shifted week drifts and a calm one does not.
    moved = {d.feature: d.status for d in store.drift("payments", "train_v1", weeks(2, 3))}
    calm = {d.feature: d.status for d in store.drift("payments", "train_v1", weeks(1, 2))}
    assert moved == {"amount": "drift", "plan": "ok"} and calm == {"amount": "ok", "plan": "ok"}
    # Two datasets compare directly; a name is never overwritten.
    later = spine.set_column(1, "event_timestamp", pc.add(spine.column(1), pa.scalar(timedelta(days=7))))  # fmt: skip
    store.get_historical_features(later, ["payments:amount"], full_feature_names=True, save_as="train_v2")  # fmt: skip
    assert [d.status for d in store.drift("payments", "train_v1", "train_v2")] == ["drift"]
    with pytest.raises(InputError, match="already saved"):
        store.get_historical_features(spine, ["payments:amount"], save_as="train_v1")
    with pytest.raises(InputError, match=r"no payments:plan"):
        store.drift("payments", "train_v2", weeks(2, 3))
    with pytest.raises(InputError, match="dataset name"):
        store.get_historical_features(spine, ["payments:amount"], save_as="../escape")
    assert {d.name for d in store.datasets()} == {"train_v1", "train_v2"}


def test_the_cli_saves_lists_and_compares_datasets(
    store: FeatureStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = partial(cli, store, capsys)

    spine = tmp_path / "spine.csv"
    spine.write_text("user_id,event_timestamp\n" + "".join(
        f"{u},{(T0 + timedelta(days=12, minutes=u)).isoformat()}\n" for u in range(500)))  # fmt: skip
    code, out = run("historical", "-e", str(spine), "-f", "payments", "--save-as", "base")
    assert code == 0 and "saved as dataset 'base'" in out, out
    code, out = run("datasets", "list", "--json")
    assert code == 0 and [d["name"] for d in json.loads(out)] == ["base"]
    code, out = run("datasets", "show", "base")
    assert code == 0 and "payments:amount" in out and "500 rows" in out
    later = weeks(2, 3)[0].isoformat()
    code, out = run("drift", "payments", "--reference-dataset", "base", "--current", f"{later}..", "--json")  # fmt: skip
    assert code == 0, out
    assert {d["feature"]: d["status"] for d in json.loads(out)}["amount"] == "drift"
    code, out = run("drift", "payments", "--reference-dataset", "base", "--reference", "..", "--current", "..")  # fmt: skip
    assert code == 2 and "give exactly one of them" in out
    code, out = run("drift", "payments", "--reference-dataset", "nope", "--current", "..")
    assert code == 2 and "dataset 'nope'" in out
    assert run("datasets", "delete", "base")[0] == 0
    assert json.loads(run("datasets", "list", "--json")[1]) == []


def test_validate_is_recorded_and_the_cli_lists_results(
    store: FeatureStore, capsys: pytest.CaptureFixture[str]
) -> None:
    store.write_to_offline_store("payments", {
        "user_id": [1], "event_timestamp": [T0], "amount": [-5.0], "plan": ["free"]})  # fmt: skip
    assert not store.validate("payments").passed
    code, out = cli(store, capsys, "results", "payments", "--failed", "--json")
    found = json.loads(out)
    assert [(r["entry"], r["observed"]) for r in found["newest"]] == [("validate", 1), ("write", 1)]
    assert found["failed"] == 2 and found["results"] == 2
    code, out = cli(store, capsys, "results")  # 4 writes and a validate, one expectation each
    assert code == 0 and "5 results, 2 failed" in " ".join(out.split())
