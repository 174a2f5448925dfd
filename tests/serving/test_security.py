"""Access control end to end over HTTP: registry API keys and JWTs → principals →
permissions (deny by default, feature-level with sensitive tags, catalog filtering);
revocation and expiry without a restart; `almanac keys` and `almanac access check`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from almanac import FeatureStore
from almanac.security.keys import create_key, revoke_key
from almanac.serving.app import create_app
from cli_runner import run_cli

FEATURES = """
from almanac import (Entity, FeatureService, FeatureView, Field, Float64, Int64, Permission,
                     PushSource, Resource, String)

user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
events = PushSource(name="events")
profile = FeatureView(name="profile", entities=[user], source=events, schema=[
    Field("score", Float64), Field("plan", String, tags={"pii": "true"})])
activity = FeatureView(name="activity", entities=[user], source=PushSource(name="clicks"),
                       schema=[Field("clicks", Int64)])
fraud_v1 = FeatureService(name="fraud_v1", features=["profile:score", "profile:plan", "activity"])
fraud_readers = Permission(name="fraud_readers", principals=["role:fraud-model"],
                           actions=["read_online", "describe"], resources=[Resource(service="fraud_*")])
pii_owners = Permission(name="pii_owners", principals=["group:privacy"], actions=["read_online"],
                        resources=[Resource(tags={"pii": "true"})])
pushers = Permission(name="pushers", principals=["role:ingest"],
                     actions=["write_online", "write_offline"], resources=[Resource(source="events")])
"""
SECRET = "test-secret-of-at-least-32-bytes-long!!"
NOW = datetime.now(UTC) - timedelta(minutes=1)


def make_store(root: Path, auth: str) -> FeatureStore:
    repo = root / "repo"
    repo.mkdir()
    (repo / "almanac.yaml").write_text(f"project: sec\nserver:\n  auth:\n{auth}")
    (repo / "features.py").write_text(FEATURES)
    store = FeatureStore(repo)
    store.apply()
    store.push(
        "events", {"user_id": [1], "event_timestamp": [NOW], "score": [0.5], "plan": ["pro"]}
    )
    store.push("clicks", {"user_id": [1], "event_timestamp": [NOW], "clicks": [7]})
    return store


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], FeatureStore]]:
    store = make_store(
        tmp_path,
        "    type: api_keys\n    refresh_seconds: 0.05\n  audit:\n    path: audit/almanac.jsonl\n",
    )
    state = store.registry.state
    keys = {
        "fraud": create_key(state, "fraud", ["role:fraud-model"]),
        "private": create_key(state, "private", ["role:fraud-model", "group:privacy"]),
        "ingest": create_key(state, "ingest", ["role:ingest"]),
        "nobody": create_key(state, "nobody", ["role:unknown"]),
    }
    with TestClient(create_app(store)) as client:
        yield client, keys, store
    store.close()


def read(client: TestClient, key: str | None, **body: Any) -> Any:
    headers = {} if key is None else {"X-API-Key": key}
    body.setdefault("entities", {"user_id": [1]})
    return client.post("/get-online-features", json=body, headers=headers)


def test_authentication_is_required_and_checked(keyed: tuple[TestClient, dict[str, str], FeatureStore]) -> None:  # fmt: skip
    client, keys, store = keyed
    assert read(client, None, feature_service="fraud_v1").status_code == 401
    assert read(client, "alm_fraud_" + "x" * 32, feature_service="fraud_v1").status_code == 401
    assert read(client, "not-a-key", feature_service="fraud_v1").status_code == 401
    assert client.get("/health").status_code == 200  # open
    revoke_key(store.registry.state, "nobody")
    time.sleep(0.1)  # the server reads the keys again within refresh_seconds
    assert read(client, keys["nobody"], features=["activity:clicks"]).status_code == 401
    short = create_key(store.registry.state, "short", ["role:ingest"], timedelta(milliseconds=50))
    time.sleep(0.2)
    assert read(client, short, features=["activity:clicks"]).status_code == 401


def test_reads_are_granted_feature_by_feature(keyed: tuple[TestClient, dict[str, str], FeatureStore]) -> None:  # fmt: skip
    client, keys, _ = keyed
    ok = read(client, keys["fraud"], features=["profile:score", "activity:clicks"])
    assert ok.status_code == 200, ok.text
    # A pii feature inside a permitted view needs the pii permission too.
    denied = read(client, keys["fraud"], features=["profile:score", "profile:plan"])
    assert denied.status_code == 403
    assert denied.json()["detail"] == "key:fraud may not read_online feature 'profile:plan'"
    assert (
        read(client, keys["fraud"], feature_service="fraud_v1").status_code == 403
    )  # it lists plan
    both = read(client, keys["private"], feature_service="fraud_v1")
    assert both.status_code == 200, both.text
    # Authenticated, but granted nothing: denied, and nothing about what exists.
    nobody = read(client, keys["nobody"], features=["activity:clicks"])
    assert nobody.status_code == 403
    unknown = read(client, keys["nobody"], features=["activty:clicks"])
    assert unknown.status_code == 403 and "did you mean" not in unknown.text
    entity = client.get("/entities/user/1", params={"features": "activity:clicks"}, headers={"X-API-Key": keys["fraud"]})  # fmt: skip
    assert entity.status_code == 200 and entity.json()["features"]["clicks"] == 7


def test_pushes_need_their_write_actions(keyed: tuple[TestClient, dict[str, str], FeatureStore]) -> None:  # fmt: skip
    client, keys, _ = keyed
    body = {"push_source_name": "events", "df": {"user_id": [2], "event_timestamp": [NOW.isoformat()], "score": [1.0], "plan": ["free"]}}  # fmt: skip
    assert client.post("/push", json=body, headers={"X-API-Key": keys["ingest"]}).status_code == 200
    refused = client.post("/push", json=body, headers={"X-API-Key": keys["fraud"]})
    assert refused.status_code == 403 and "write_online" in refused.json()["detail"]
    other = client.post("/push", json={**body, "push_source_name": "clicks"}, headers={"X-API-Key": keys["ingest"]})  # fmt: skip
    assert other.status_code == 403


def test_the_catalog_shows_what_the_caller_may_describe(keyed: tuple[TestClient, dict[str, str], FeatureStore]) -> None:  # fmt: skip
    client, keys, _ = keyed
    seen = client.get("/feature-views", headers={"X-API-Key": keys["fraud"]}).json()
    assert sorted(v["name"] for v in seen) == ["activity", "profile"]
    assert client.get("/feature-views", headers={"X-API-Key": keys["ingest"]}).json() == []
    assert client.get("/feature-views/profile", headers={"X-API-Key": keys["ingest"]}).status_code == 403  # fmt: skip
    assert client.get("/feature-views/nope", headers={"X-API-Key": keys["ingest"]}).status_code == 403  # fmt: skip
    features = client.get("/features", headers={"X-API-Key": keys["fraud"]}).json()
    assert sorted(f["name"] for f in features) == [
        "activity:clicks",
        "profile:score",
    ]  # plan is pii


def token(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    base = {"sub": "alice", "aud": "almanac", "iss": "https://idp/", "exp": datetime.now(UTC) + timedelta(minutes=5)}  # fmt: skip
    return jwt.encode({**base, **claims}, key, algorithm=algorithm)


def test_jwt_bearer_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALMANAC_TEST_JWT_SECRET", SECRET)
    auth = "    type: jwt\n    secret: ${ALMANAC_TEST_JWT_SECRET}\n    algorithms: [HS256]\n    audience: almanac\n    issuer: https://idp/\n    roles_claim: realm_access.roles\n"  # fmt: skip
    store = make_store(tmp_path, auth)
    with TestClient(create_app(store)) as client:

        def status(bearer: str) -> int:
            headers = {"Authorization": f"Bearer {bearer}"}
            response = client.post("/get-online-features", json={"features": ["profile:score"], "entities": {"user_id": [1]}}, headers=headers)  # fmt: skip
            return response.status_code

        assert (
            status(token({"realm_access": {"roles": ["fraud-model"]}})) == 200
        )  # Keycloak's shape
        assert status(token({})) == 403  # signed in, granted nothing
        unsigned = jwt.encode({"sub": "alice", "aud": "almanac", "iss": "https://idp/", "exp": 2**31, "realm_access": {"roles": ["fraud-model"]}}, None, algorithm="none")  # fmt: skip
        assert status(unsigned) == 401  # alg none is never accepted
        assert status(token({"realm_access": {"roles": ["fraud-model"]}}, key="another-secret-of-32-bytes-or-more!!")) == 401  # fmt: skip
        assert status(token({"aud": "someone-else"})) == 401
        assert status(token({"iss": "https://evil/"})) == 401
        assert status(token({"exp": datetime.now(UTC) - timedelta(minutes=5)})) == 401
        assert status(token({"nbf": datetime.now(UTC) + timedelta(minutes=5)})) == 401
    store.close()


def test_keys_and_access_check_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    store = make_store(tmp_path, "    type: api_keys\n")
    repo = str(store.repo_path)
    store.close()
    code, out = run_cli(capsys, "--repo", repo, "keys", "create", "model", "--principal", "role:fraud-model", "--expires", "90d")  # fmt: skip
    assert code == 0 and out.startswith("alm_model_")
    code, out = run_cli(capsys, "--repo", repo, "keys", "list", "--json")
    assert code == 0 and '"status": "active"' in out and "alm_model_" not in out  # never the key
    assert run_cli(capsys, "--repo", repo, "keys", "revoke", "model")[0] == 0
    assert '"status": "revoked"' in run_cli(capsys, "--repo", repo, "keys", "list", "--json")[1]
    code, out = run_cli(capsys, "--repo", repo, "access", "check", "-p", "role:fraud-model", "-a", "read_online", "-f", "profile:score")  # fmt: skip
    assert code == 0 and "granted by fraud_readers" in out
    code, out = run_cli(capsys, "--repo", repo, "access", "check", "-p", "role:fraud-model", "-a", "read_online", "-f", "profile:plan")  # fmt: skip
    assert code == 1 and "tagged pii=true" in out
    code, out = run_cli(capsys, "--repo", repo, "access", "check", "-p", "role:x", "-a", "fly", "--view", "profile")  # fmt: skip
    assert code == 2 and "not one of" in out


def test_every_request_is_audited_once_without_secrets(keyed: tuple[TestClient, dict[str, str], FeatureStore], capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    client, keys, store = keyed
    read(client, keys["fraud"], features=["activity:clicks"])
    read(client, keys["fraud"], features=["profile:plan"])
    read(client, None, features=["activity:clicks"])
    client.get("/health")  # open paths are not audited
    from almanac.security.audit import read as read_audit

    client.app.state.audit.flush()  # type: ignore[attr-defined]  # lines are buffered for 0.5 s
    everything = list(read_audit(store.repo_path / "audit" / "almanac.jsonl"))
    # The fixture's own apply and pushes (SDK operations) come first, then the requests.
    assert [line["operation"] for line in everything if "operation" in line] == ["apply", "push", "push"]  # fmt: skip
    lines = [line for line in everything if "endpoint" in line]
    assert [(line["principal"], line["decision"], line["status"]) for line in lines] == [
        ("key:fraud", "allowed", 200), ("key:fraud", "denied", 403), (None, "unauthenticated", 401),
    ]  # fmt: skip
    assert lines[0]["features"] == ["activity:clicks"] and lines[0]["entities"] == 1
    text = (store.repo_path / "audit" / "almanac.jsonl").read_text()
    assert (
        keys["fraud"] not in text and "7" not in text.split('"features"')[0][-3:]
    )  # no key, no value
    code, out = run_cli(capsys, "--repo", str(store.repo_path), "audit", "--principal", "key:fraud", "--json")  # fmt: skip
    assert code == 0 and len(out.strip().splitlines()) == 2


def test_per_principal_limits_answer_429_with_retry_after(tmp_path: Path) -> None:
    store = make_store(tmp_path, "    type: api_keys\n  limits:\n    requests_per_second: 1\n    burst: 3\n    entities_per_request: 2\n")  # fmt: skip
    fraud = create_key(store.registry.state, "fraud", ["role:fraud-model"])
    ingest = create_key(store.registry.state, "ingest", ["role:ingest"])
    with TestClient(create_app(store)) as client:
        answers = [read(client, fraud, features=["activity:clicks"]) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[3].headers["retry-after"] == "1"
        assert "requests_per_second" in answers[3].json()["detail"]
        # Another principal has its own bucket.
        assert read(client, ingest, features=["activity:clicks"]).status_code == 403
        time.sleep(1.1)
        too_many = read(
            client, fraud, features=["activity:clicks"], entities={"user_id": [1, 2, 3]}
        )
        assert too_many.status_code == 429 and "entities_per_request" in too_many.json()["detail"]
    store.close()


def test_health_tells_an_anonymous_probe_its_status_only(keyed: tuple[TestClient, dict[str, str], FeatureStore]) -> None:  # fmt: skip
    client, keys, _ = keyed
    anonymous = client.get("/health")
    assert set(anonymous.json()) == {"status"}
    detailed = client.get("/health", headers={"X-API-Key": keys["nobody"]})
    assert {"status", "registry", "online_store"} <= set(detailed.json())


def test_two_different_credentials_are_refused(keyed: tuple[TestClient, dict[str, str], FeatureStore]) -> None:  # fmt: skip
    client, keys, _ = keyed
    body = {"features": ["activity:clicks"], "entities": {"user_id": [1]}}
    both = {"X-API-Key": keys["fraud"], "Authorization": "Bearer not-the-same"}
    assert client.post("/get-online-features", json=body, headers=both).status_code == 401
    same = {"X-API-Key": keys["fraud"], "Authorization": f"Bearer {keys['fraud']}"}
    assert client.post("/get-online-features", json=body, headers=same).status_code == 200
    basic = {"X-API-Key": keys["fraud"], "Authorization": "Basic dXNlcjpwYXNz"}
    assert client.post("/get-online-features", json=body, headers=basic).status_code == 401
