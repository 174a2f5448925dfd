"""The SDK and CLI acting as a configured principal (`access.principal`): each
operation is checked against the applied permissions before it touches anything,
and every registry, materialization, read and write operation is audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from almanac import FeatureStore
from almanac.errors import AccessDeniedError
from almanac.security.audit import read as read_audit
from cli_runner import run_cli

FEATURES = """
from datetime import timedelta
from almanac import (Entity, FeatureView, Field, FileSource, Float64, Int64, Permission,
                     PushSource, Resource, String)

user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
profile = FeatureView(name="profile", entities=[user], source=PushSource(name="events"), schema=[
    Field("score", Float64), Field("plan", String, tags={"pii": "true"})])
activity = FeatureView(name="activity", entities=[user], source=PushSource(name="clicks"),
                       schema=[Field("clicks", Int64)])
balances = FeatureView(name="balances", entities=[user], ttl=timedelta(days=365),
                       source=FileSource(name="balance_file", path="balances.parquet"),
                       schema=[Field("balance", Float64)])
etl = Permission(name="etl", principals=["role:etl"],
                 actions=["write_online", "write_offline", "read_offline", "materialize", "apply"],
                 resources=[Resource(source="events"), Resource(view="profile"), Resource(view="balances"),
                            Resource(source="balance_file")])
pii = Permission(name="pii", principals=["group:privacy"], actions=["read_offline"],
                 resources=[Resource(tags={"pii": "true"})])
"""
NOW = datetime.now(UTC) - timedelta(minutes=5)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    import pandas as pd

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "almanac.yaml").write_text("project: ops\naudit:\n  path: audit/almanac.jsonl\n")
    (repo / "features.py").write_text(FEATURES)
    pd.DataFrame({"user_id": [1, 2], "event_timestamp": [NOW, NOW], "balance": [10.0, 20.0]}).to_parquet(repo / "balances.parquet")  # fmt: skip
    with FeatureStore(repo) as admin:  # no principal: the bootstrap apply of an admin
        admin.apply()
    return repo


def as_principal(repo: Path, monkeypatch: pytest.MonkeyPatch, principal: str, *identities: str) -> FeatureStore:  # fmt: skip
    monkeypatch.setenv("ALMANAC_ACCESS_PRINCIPAL", principal)
    if identities:
        monkeypatch.setenv("ALMANAC_ACCESS_IDENTITIES", ",".join(identities))
    return FeatureStore(repo)


def as_admin(repo: Path, monkeypatch: pytest.MonkeyPatch) -> FeatureStore:
    monkeypatch.delenv("ALMANAC_ACCESS_PRINCIPAL", raising=False)
    monkeypatch.delenv("ALMANAC_ACCESS_IDENTITIES", raising=False)
    return FeatureStore(repo)


def audit_lines(repo: Path) -> list[dict[str, object]]:
    return [line for line in read_audit(repo / "audit" / "almanac.jsonl") if "operation" in line]


def test_writes_are_checked_on_their_source_and_nothing_is_half_written(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with as_principal(repo, monkeypatch, "role:etl") as store:
        rows = {"user_id": [1], "event_timestamp": [NOW], "score": [0.5], "plan": ["pro"]}
        assert store.push("events", rows) == 1
        with pytest.raises(AccessDeniedError, match="role:etl may not write_online source 'clicks'"):  # fmt: skip
            store.push("clicks", {"user_id": [1], "event_timestamp": [NOW], "clicks": [3]})
    with as_admin(
        repo, monkeypatch
    ) as admin:  # nothing of the denied push landed, online or offline
        online = admin.get_online_features(["activity:clicks"], [{"user_id": 1}]).to_dict()
        assert online["clicks"] == [None]
        offline = admin.get_historical_features({"user_id": [1], "event_timestamp": [datetime.now(UTC)]}, ["activity:clicks"]).to_pandas()  # fmt: skip
        assert offline["clicks"].isna().all()
    lines = [line for line in audit_lines(repo) if line["principal"] == "role:etl"]
    assert [(line["operation"], line["decision"], line["status"]) for line in lines] == [
        ("push", "allowed", "ok"),
        ("push", "denied", "error"),
    ]
    assert lines[-1]["source"] == "clicks" and "0.5" not in str(lines)  # no values in the log


def test_reads_are_checked_feature_by_feature(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spine = {"user_id": [1], "event_timestamp": [datetime.now(UTC)]}
    with as_principal(repo, monkeypatch, "role:etl") as store:
        assert len(store.get_historical_features(spine, ["profile:score"]).to_pandas()) == 1
        # A pii feature inside a view the principal may read needs the pii permission too.
        with pytest.raises(AccessDeniedError, match="feature 'profile:plan'"):
            store.get_historical_features(spine, ["profile:score", "profile:plan"])
        with pytest.raises(AccessDeniedError, match="read_online feature 'profile:score'"):
            store.get_online_features(["profile:score"], [{"user_id": 1}])
        with pytest.raises(AccessDeniedError, match="read_offline feature 'activity:clicks'"):
            store.statistics("activity")
    with as_principal(repo, monkeypatch, "role:etl", "group:privacy") as store:
        assert len(store.get_historical_features(spine, ["profile:plan"]).to_pandas()) == 1


def test_materialize_and_apply_need_their_actions(repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    with as_principal(repo, monkeypatch, "role:etl") as store:
        done = store.materialize(None, datetime.now(UTC), ["balances"])
        assert done.rows == 2
        with pytest.raises(AccessDeniedError, match="may not materialize feature view 'activity'"):
            store.materialize(None, datetime.now(UTC))  # every online view: activity too
        version = store.registry.backend.version()
        # An edit of a view the principal may not apply is refused, and nothing is applied.
        (repo / "features.py").write_text(FEATURES.replace('Field("clicks", Int64)', 'Field("clicks", Int64), Field("taps", Int64)'))  # fmt: skip
        with pytest.raises(AccessDeniedError, match="may not apply feature view 'activity'"):
            store.apply()
        assert store.registry.backend.version() == version
        # Nor may it grant itself more: a new permission is checked against the applied ones.
        (repo / "features.py").write_text(FEATURES + '\nmore = Permission(name="more", principals=["role:etl"], actions=["read_online"])\n')  # fmt: skip
        with pytest.raises(AccessDeniedError, match="may not apply permission 'more'"):
            store.apply()
        (repo / "features.py").write_text(FEATURES.replace('Field("score", Float64)', 'Field("score", Float64, description="risk")'))  # fmt: skip
        assert [c.name for c in store.apply().changes] == ["profile"]
    # The CLI says it in one line, exit code 1... and no traceback.
    monkeypatch.setenv("ALMANAC_ACCESS_PRINCIPAL", "role:etl")
    code, out = run_cli(capsys, "--repo", str(repo), "materialize", "2020-01-01", datetime.now(UTC).isoformat(), "--views", "activity")  # fmt: skip
    assert code != 0 and "may not materialize feature view 'activity'" in out and "Traceback" not in out  # fmt: skip
    operations = [(line["operation"], line["decision"]) for line in audit_lines(repo)]
    assert operations[0] == ("apply", "allowed")  # the admin's bootstrap apply
    assert ("materialize", "denied") in operations and operations[-1] == ("materialize", "denied")
    admin_line = audit_lines(repo)[0]
    assert str(admin_line["principal"]).startswith("local:")  # no principal: the OS user, unchecked


def test_a_bad_principal_in_the_config_is_a_clear_error(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from almanac.errors import ConfigError

    monkeypatch.setenv("ALMANAC_ACCESS_PRINCIPAL", "role:*")
    with pytest.raises(ConfigError, match=r"access\.principal"):
        FeatureStore(repo)
