"""Catalog endpoints, health, metrics, API keys and registry refresh."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serving_helpers import FEATURES_PY, write_repo

from almanac import FeatureStore
from almanac.serving.app import create_app


def test_catalog_listings(client: TestClient) -> None:
    entities = client.get("/entities").json()
    assert [e["name"] for e in entities] == ["item", "user"]
    assert entities[1] == {"name": "user", "join_keys": {"user_id": "string"}, "description": "A shopper.",
                           "owner": "crm@example.com", "tags": {}}  # fmt: skip
    views = client.get("/feature-views").json()
    assert [v["name"] for v in views] == [
        "item_stats",
        "user_item",
        "user_profile",
        "user_recent",
        "user_stats",
    ]
    stats = client.get("/feature-views/user_stats").json()
    assert (
        stats["ttl"] == "1d"
        and stats["source"] == "user_events"
        and stats["join_keys"] == {"user_id": "string"}
    )
    assert stats["features"][0] == {
        "name": "clicks",
        "dtype": "int64",
        "description": "Clicks in the last hour.",
        "tags": {},
    }
    assert client.get("/feature-views/user_item").json()["join_keys"] == {
        "user_id": "string",
        "item_id": "int64",
    }
    services = {s["name"]: s for s in client.get("/feature-services").json()}
    assert services["ranker"]["features"] == ["user_stats", "item_stats:price"]
    assert services["assistant"]["prompt_template"].startswith("Segment")


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("clicks", ["user_stats:clicks"]),  # name
        ("euros", ["item_stats:price"]),  # description
        (
            "growth@example",
            ["user_stats:clicks", "user_stats:segment", "user_stats:spend"],
        ),  # owner
        ("pii", ["user_stats:segment"]),  # a feature's tag
        ("team:growth segment", ["user_stats:segment"]),  # a view's tag, and a name
        ("nothing-like-this", []),
    ],
)
def test_feature_search(client: TestClient, q: str, expected: list[str]) -> None:
    found = client.get("/features", params={"q": q}).json()
    assert sorted(f["name"] for f in found) == expected


def test_all_features_without_a_query(client: TestClient) -> None:
    assert len(client.get("/features").json()) == 10


def test_health(client: TestClient) -> None:
    answer = client.get("/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == body["registry"]["status"] == body["online_store"]["status"] == "ok"
    assert body["registry_version"] == 1


def test_metrics(client: TestClient) -> None:
    client.post(
        "/get-online-features",
        json={"features": ["user_stats:clicks"], "entities": {"user_id": ["u1", "u2"]}},
    )
    client.post(
        "/get-online-features",
        json={"features": ["user_stats:nope"], "entities": {"user_id": ["u1"]}},
    )
    client.get("/feature-views/user_stats")
    text = client.get("/metrics").text
    assert (
        'almanac_http_requests_total{endpoint="/get-online-features",method="POST",status="200"} 1.0'
        in text
    )
    assert (
        'almanac_http_requests_total{endpoint="/get-online-features",method="POST",status="404"} 1.0'
        in text
    )
    assert (
        'almanac_http_requests_total{endpoint="/feature-views/{name}",method="GET",status="200"} 1.0'
        in text
    )
    assert (
        'almanac_http_errors_total{endpoint="/get-online-features",error="NotFoundError"} 1.0'
        in text
    )
    assert (
        'almanac_http_request_duration_seconds_count{endpoint="/get-online-features"} 2.0' in text
    )
    assert 'almanac_entities_per_request_sum{endpoint="/get-online-features"} 3.0' in text
    assert "almanac_online_store_read_duration_seconds_count" in text
    assert "almanac_registry_version 1.0" in text


def test_api_keys(tmp_path: Path) -> None:
    repo = write_repo(
        tmp_path / "repo", "sqlite:///.almanac/online.db", api_keys=["k-one", "k-two"]
    )
    body = {"features": ["user_stats:clicks"], "entities": {"user_id": ["u1"]}}
    with TestClient(create_app(repo)) as client:
        for path in ("/health", "/metrics", "/openapi.json", "/docs"):
            assert client.get(path).status_code == 200, path
        refused = client.post("/get-online-features", json=body)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert (
            client.post(
                "/get-online-features", json=body, headers={"X-API-Key": "wrong"}
            ).status_code
            == 401
        )
        assert client.get("/feature-views").status_code == 401
        assert client.get("/entities/user/u1").status_code == 401
        assert (
            client.post(
                "/get-online-features", json=body, headers={"X-API-Key": "k-one"}
            ).status_code
            == 200
        )
        assert (
            client.post(
                "/get-online-features", json=body, headers={"Authorization": "Bearer k-two"}
            ).status_code
            == 200
        )
        assert (
            client.get("/feature-views", headers={"Authorization": "bearer k-one"}).status_code
            == 200
        )
        schema = client.get("/openapi.json").json()
        assert set(schema["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
        assert "security" in schema["paths"]["/get-online-features"]["post"]
        assert "security" not in schema["paths"]["/health"]["get"]


def test_api_keys_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALMANAC_SERVER_API_KEYS", "[from-env]")
    repo = write_repo(tmp_path / "repo", "sqlite:///.almanac/online.db")
    with TestClient(create_app(repo)) as client:
        assert client.get("/entities").status_code == 401
        assert client.get("/entities", headers={"X-API-Key": "from-env"}).status_code == 200


def test_a_replacement_authenticator(store: FeatureStore) -> None:
    class OnlyAlice:
        def authenticate(self, headers):  # type: ignore[no-untyped-def]
            return "alice" if (b"x-user", b"alice") in headers else None

    with TestClient(create_app(store, auth=OnlyAlice())) as client:
        assert client.get("/entities").status_code == 401
        assert client.get("/entities", headers={"x-user": "alice"}).status_code == 200


def test_registry_refresh_picks_up_a_new_apply(store: FeatureStore, repo: Path) -> None:
    with TestClient(create_app(store)) as client:
        assert client.get("/feature-views/user_extra").status_code == 404
        (repo / "features.py").write_text(FEATURES_PY + (
            "\nuser_extra = FeatureView(name='user_extra', entities=[user], source=PushSource(name='extra_events'),"
            " schema=[Field('score', Float64)])\n"
        ))  # fmt: skip
        with FeatureStore(repo) as other:  # another process would do the same
            other.apply()
        deadline = time.monotonic() + 10
        while client.get("/feature-views/user_extra").status_code != 200:
            assert time.monotonic() < deadline, "the new view never appeared"
            time.sleep(0.05)
        answer = client.post(
            "/get-online-features",
            json={"features": ["user_extra:score"], "entities": {"user_id": ["u1"]}},
        )
        assert answer.status_code == 200
        assert answer.json()["results"][1]["statuses"] == ["NOT_FOUND"]
        assert client.get("/health").json()["registry_version"] == 2


def test_openapi_schema_without_a_repo_matches_the_app(client: TestClient) -> None:
    from almanac.serving.app import openapi_schema

    assert openapi_schema() == client.get("/openapi.json").json()
    assert "securitySchemes" in openapi_schema(api_keys=True)["components"]
