"""Bad requests get a 4xx naming the problem, never a 500 or a hang; nothing half written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from serving_helpers import write_repo

from almanac import FeatureStore
from almanac.serving.app import create_app


def post(client: TestClient, body: dict) -> tuple[int, dict]:
    answer = client.post("/get-online-features", json=body)
    return answer.status_code, answer.json()


@pytest.mark.parametrize(
    ("body", "named", "close"),
    [
        (
            {"features": ["user_stats:clickz"], "entities": {"user_id": ["u1"]}},
            "user_stats:clickz",
            "user_stats:clicks",
        ),
        (
            {"features": ["user_stat:clicks"], "entities": {"user_id": ["u1"]}},
            "user_stat",
            "user_stats",
        ),
        ({"feature_service": "rankr", "entities": {"user_id": ["u1"]}}, "rankr", "ranker"),
    ],
)
def test_unknown_names_are_404_with_close_names(
    client: TestClient, body: dict, named: str, close: str
) -> None:
    status, answer = post(client, body)
    assert status == 404
    assert answer["error"] == "NotFoundError"
    assert f"'{named}'" in answer["detail"] and f"'{close}'" in answer["detail"]


def test_unknown_service_on_context_and_entity_endpoints(client: TestClient) -> None:
    answer = client.post(
        "/context", json={"feature_service": "asistant", "entity": {"user_id": "u1"}}
    )
    assert answer.status_code == 404 and "'assistant'" in answer.json()["detail"]
    answer = client.get("/entities/usr/u1", params={"features": "user_stats:clicks"})
    assert answer.status_code == 404 and "'user'" in answer.json()["detail"]
    answer = client.get("/feature-views/user_stat")
    assert answer.status_code == 404 and "'user_stats'" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("entities", "field"),
    [
        ({"user_idd": ["u1"]}, "user_id"),  # missing key (mistyped name)
        ({"user_id": [1]}, "user_id"),  # int for a string key
    ],
)
def test_missing_or_mistyped_keys_are_422_naming_the_key(
    client: TestClient, entities: dict, field: str
) -> None:
    status, answer = post(client, {"features": ["user_stats:clicks"], "entities": entities})
    assert status == 422
    assert f"'{field}'" in answer["detail"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (
            {"features": ["item_stats:price"], "entities": {"item_id": [1.5]}},
            ["body", "entities", "item_id", 0],
        ),
        (
            {"features": ["item_stats:price"], "entities": {"item_id": [True]}},
            ["body", "entities", "item_id", 0],
        ),
        (
            {"features": ["item_stats:price"], "entities": {"item_id": "10"}},
            ["body", "entities", "item_id"],
        ),
        ({"features": ["item_stats:price"]}, ["body", "entities"]),
        # Rules the schema states (minProperties, oneOf, minItems), refused as it says.
        ({"features": ["item_stats:price"], "entities": {}}, ["body", "entities"]),
        ({"features": [], "entities": {"item_id": [1]}}, ["body", "features"]),
        ({"entities": {"item_id": [1]}}, ["body"]),
        ({"features": None, "feature_service": None, "entities": {"item_id": [1]}}, ["body"]),
        (
            {
                "features": ["item_stats:price"],
                "feature_service": "ranker",
                "entities": {"item_id": [1]},
            },
            ["body"],
        ),
        ({"features": "item_stats:price", "entities": {"item_id": [1]}}, ["body", "features"]),
        ([1, 2], ["body"]),
    ],
)
def test_invalid_bodies_are_422_with_the_field(client: TestClient, body: object, loc: list) -> None:
    answer = client.post("/get-online-features", json=body)
    assert answer.status_code == 422
    assert any(problem["loc"][: len(loc)] == loc for problem in answer.json()["detail"])


def test_int_keys_out_of_range_are_422(client: TestClient) -> None:
    for key in (2**63, -(2**63) - 1):
        status, answer = post(
            client, {"features": ["item_stats:price"], "entities": {"item_id": [key]}}
        )
        assert status == 422
        assert answer["detail"][0]["loc"][:4] == ["body", "entities", "item_id", 0]
    assert (
        post(client, {"features": ["item_stats:price"], "entities": {"item_id": [2**63 - 1]}})[0]
        == 200
    )
    wrong = client.get(
        "/entities/item/9223372036854775808", params={"features": "item_stats:price"}
    )
    assert wrong.status_code == 422 and "int64" in wrong.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    "raw", [b"{", b"", b"not json", b'{"features": ["a"], "entities": {"user_id": ["u1"]}']
)
def test_malformed_json_is_400(client: TestClient, raw: bytes) -> None:
    for path in ("/get-online-features", "/context", "/push"):
        answer = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert answer.status_code == 400, (path, answer.text)
        assert "JSON" in answer.json()["detail"]


def test_json_without_content_type_is_accepted_as_feast_clients_send_it(client: TestClient) -> None:
    # Feast's own remote client posts a JSON string without a content type.
    raw = json.dumps({"features": ["user_stats:clicks"], "entities": {"user_id": ["u1"]}})
    answer = client.post("/get-online-features", content=raw, headers={"content-type": ""})
    assert answer.status_code == 200


def test_too_many_entities_is_413(client: TestClient) -> None:
    status, answer = post(
        client, {"features": ["user_stats:clicks"], "entities": {"user_id": ["u"] * 51}}
    )
    assert status == 413
    assert "max_entities" in answer["detail"]
    assert (
        post(client, {"features": ["user_stats:clicks"], "entities": {"user_id": ["u"] * 50}})[0]
        == 200
    )


def test_entities_of_different_lengths_are_422(client: TestClient) -> None:
    status, answer = post(
        client, {"feature_service": "ranker", "entities": {"user_id": ["u1"], "item_id": [1, 2]}}
    )
    assert status == 422 and "lengths" in answer["detail"]


def test_both_features_and_service_is_422(client: TestClient) -> None:
    status, _ = post(client, {"features": ["user_stats:clicks"], "feature_service": "ranker",
                              "entities": {"user_id": ["u1"]}})  # fmt: skip
    assert status == 422


def test_context_needs_an_entity(client: TestClient) -> None:
    answer = client.post("/context", json={"feature_service": "assistant", "entity": {}})
    assert answer.status_code == 422
    answer = client.post(
        "/context", json={"feature_service": "assistant", "entity": {"user_id": 5}}
    )
    assert answer.status_code == 422 and "'user_id'" in answer.json()["detail"]


def test_push_with_wrong_columns_or_types_writes_nothing(
    client: TestClient, store: FeatureStore, repo: Path
) -> None:
    good = {"user_id": ["u9"], "event_timestamp": ["2024-05-01T00:00:00Z"], "clicks": [1],
            "spend": [2.0], "segment": ["tin"], "last_page": ["/"]}  # fmt: skip
    bad_bodies = [
        ({**good, "clicks": ["many"]}, "clicks"),  # text for an int64
        ({**good, "clicks": [1.5]}, "clicks"),  # lossy float -> int
        ({k: v for k, v in good.items() if k != "spend"}, "spend"),  # missing feature
        ({k: v for k, v in good.items() if k != "user_id"}, "user_id"),  # missing key
        ({**good, "user_id": [7]}, "user_id"),  # int for a string key
        ({**good, "event_timestamp": ["yesterday"]}, "event_timestamp"),
        ({**good, "event_timestamp": [None]}, "event_timestamp"),
        ({**good, "segment": ["a", "b"]}, "lengths"),
    ]
    for df, named in bad_bodies:
        answer = client.post(
            "/push", json={"push_source_name": "user_events", "df": df, "to": "online_and_offline"}
        )
        assert answer.status_code == 422, (named, answer.text)
        assert named in answer.json()["detail"], answer.text
    # Nothing reached either store.
    assert store.get_online_features(["user_stats:clicks"], [{"user_id": "u9"}]).statuses[
        "clicks"
    ] == ["NOT_FOUND"]
    offline = repo / "data" / "offline"
    assert not offline.exists() or not any(offline.rglob("*.parquet"))
    answer = client.post(
        "/push", json={"push_source_name": "user_events", "df": good, "to": "online_and_offline"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"push_source_name": "user_events", "to": "online_and_offline", "rows": 1,
                             "views": ["user_recent", "user_stats"]}  # fmt: skip
    assert len(list(offline.rglob("*.parquet"))) == 1


def test_push_to_unknown_source_is_404(client: TestClient) -> None:
    answer = client.post("/push", json={"push_source_name": "user_event", "df": {}, "to": "online"})
    assert answer.status_code == 404 and "'user_events'" in answer.json()["detail"]
    answer = client.post(
        "/push", json={"push_source_name": "user_events", "df": {}, "to": "everywhere"}
    )
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "to"]


def test_unexpected_errors_are_500_without_internals(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from almanac.serving import handlers

    def broken(*args: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(handlers, "prepare_read", broken)
    with TestClient(create_app(store)) as client:
        answer = client.post(
            "/get-online-features",
            json={"features": ["user_stats:clicks"], "entities": {"user_id": ["u1"]}},
        )
    assert answer.status_code == 500
    assert "secret" not in answer.text


@pytest.mark.redis
def test_redis_down_is_503_within_the_timeout(tmp_path: Path) -> None:
    from servers import start_redis

    server = start_redis()
    try:
        repo = write_repo(tmp_path / "repo", server.url)
        with TestClient(create_app(repo)) as client:
            assert client.get("/health").status_code == 200
            body = {"features": ["user_stats:clicks"], "entities": {"user_id": ["u1"]}}
            assert client.post("/get-online-features", json=body).status_code == 200
            server.stop()
            started = time.monotonic()
            answer = client.post("/get-online-features", json=body)
            assert answer.status_code == 503, answer.text
            assert "unavailable" in answer.json()["detail"]
            health = client.get("/health")
            assert time.monotonic() - started < 5  # timeout_seconds is 1: no hang
            assert health.status_code == 503
            assert health.json()["online_store"]["status"] == "unavailable"
            assert health.json()["registry"]["status"] == "ok"
            server.start()  # same port: the server reconnects by itself
            assert client.post("/get-online-features", json=body).status_code == 200
            assert client.get("/health").status_code == 200
    finally:
        server.stop()


@pytest.mark.redis
def test_redis_that_does_not_answer_is_503_within_the_timeout(
    tmp_path: Path, redis_url: str
) -> None:
    """A server that accepts connections but never replies (paused) must not hang a request."""
    from servers import start_redis

    server = start_redis()
    try:
        repo = write_repo(tmp_path / "repo", server.url)
        with TestClient(create_app(repo)) as client:
            body = {"features": ["user_stats:clicks"], "entities": {"user_id": ["u1"]}}
            assert client.post("/get-online-features", json=body).status_code == 200
            redis.Redis.from_url(server.url).execute_command("CLIENT", "PAUSE", "3000", "ALL")
            started = time.monotonic()
            answer = client.post("/get-online-features", json=body)
            elapsed = time.monotonic() - started
            assert answer.status_code == 503
            assert elapsed < 2.5  # online.timeout_seconds is 1
    finally:
        server.stop()


@pytest.mark.parametrize("fast_path", [True, False])
def test_an_oversized_push_is_413_without_reading_it_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fast_path: bool
) -> None:
    import almanac.serving.body as body_module

    monkeypatch.setattr(body_module, "MAX_BODY_BYTES", 1_000)
    repo = write_repo(tmp_path / "repo", "sqlite:///.almanac/online.db")
    with FeatureStore(repo) as store:
        store.apply()
    body = json.dumps({"push_source_name": "user_events", "df": {"user_id": ["u"] * 500}})
    with TestClient(create_app(repo, fast_path=fast_path)) as client:
        answer = client.post("/push", content=body)
    assert answer.status_code == 413
    assert "over 1,000 bytes" in answer.json()["detail"]


def test_a_repeated_query_parameter_is_refused_not_silently_dropped(client) -> None:
    answer = client.get("/features", params=[("q", "clicks"), ("q", "spend")])
    assert answer.status_code == 422
    assert answer.json()["error"] == "RequestValidationError"
    assert "given 2 times" in answer.text
