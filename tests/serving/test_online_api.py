"""The serving endpoints, checked by value on SQLite and Redis."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from serving_helpers import FRESH, STALE

from almanac import FeatureStore
from almanac.serving.app import create_app

EPOCH = "1970-01-01T00:00:00Z"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def columns(body: dict) -> dict[str, dict]:
    """Feast's columnar answer as {name: result}."""
    names = body["metadata"]["feature_names"]
    assert len(names) == len(body["results"])
    return dict(zip(names, body["results"], strict=True))


def test_feast_shape_values_and_statuses(client: TestClient) -> None:
    answer = client.post(
        "/get-online-features",
        json={
            "features": ["user_stats:clicks", "user_stats:spend", "item_stats:price"],
            "entities": {"user_id": ["u1", "u2", "u3", "nobody"], "item_id": [10, 11, 12, 10]},
        },
    )
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"metadata", "results"}
    # Join keys first (as Feast does), then the features in request order.
    assert body["metadata"]["feature_names"] == ["user_id", "item_id", "clicks", "spend", "price"]
    assert body["metadata"]["join_keys"] == ["user_id", "item_id"]
    assert body["metadata"]["dtypes"]["item_id"] == "int64"
    result = columns(body)
    assert result["user_id"] == {
        "values": ["u1", "u2", "u3", "nobody"],
        "statuses": ["PRESENT"] * 4,
        "event_timestamps": [EPOCH] * 4,
    }
    assert result["item_id"]["values"] == [10, 11, 12, 10]
    assert result["clicks"] == {
        "values": [5, None, 9, None],
        "statuses": ["PRESENT", "OUTSIDE_MAX_AGE", "PRESENT", "NOT_FOUND"],
        "event_timestamps": [iso(FRESH), iso(STALE), iso(FRESH), EPOCH],
    }
    assert result["spend"]["values"] == [12.5, None, None, None]
    assert result["spend"]["statuses"] == ["PRESENT", "OUTSIDE_MAX_AGE", "NULL_VALUE", "NOT_FOUND"]
    assert result["price"]["values"] == [9.99, 20.0, None, 9.99]
    assert result["price"]["statuses"] == ["PRESENT", "PRESENT", "NOT_FOUND", "PRESENT"]


def test_feature_service_and_full_feature_names(client: TestClient) -> None:
    body = client.post(
        "/get-online-features",
        json={"feature_service": "ranker", "entities": {"user_id": ["u1"], "item_id": [11]},
              "full_feature_names": True},
    ).json()  # fmt: skip
    assert body["metadata"]["feature_names"] == [
        "user_id", "item_id", "user_stats__clicks", "user_stats__spend", "user_stats__segment",
        "item_stats__price",
    ]  # fmt: skip
    result = columns(body)
    assert result["user_stats__segment"]["values"] == ["gold"]
    assert result["item_stats__price"]["values"] == [20.0]


def test_every_dtype_round_trips_as_json(client: TestClient) -> None:
    body = client.post(
        "/get-online-features", json={"features": ["user_profile"], "entities": {"user_id": ["u1"]}}
    ).json()
    result = columns(body)
    assert base64.b64decode(result["avatar"]["values"][0]) == b"\x00\xffpng"
    assert result["signup_at"]["values"] == ["2020-01-02T03:04:05.000006Z"]
    assert result["embedding"]["values"] == [[0.5, -1.25]]
    assert result["vip"]["values"] == [True]


def test_answers_match_the_sdk(client: TestClient, store: FeatureStore) -> None:
    rows = {"user_id": ["u1", "u2", "u3", "x"]}
    sdk = store.get_online_features(["user_stats:clicks", "user_stats:segment"], rows)
    result = columns(
        client.post("/get-online-features",
                    json={"features": ["user_stats:clicks", "user_stats:segment"], "entities": rows}).json()
    )  # fmt: skip
    for name in ("clicks", "segment"):
        assert result[name]["values"] == sdk.values[name]
        assert result[name]["statuses"] == [str(s) for s in sdk.statuses[name]]


def test_entity_endpoint_single_key(client: TestClient) -> None:
    answer = client.get(
        "/entities/user/u1", params={"features": "user_stats:clicks,user_stats:spend"}
    )
    assert answer.status_code == 200
    assert answer.json() == {
        "user_id": "u1",
        "features": {"clicks": 5, "spend": 12.5},
        "statuses": {"clicks": "PRESENT", "spend": "PRESENT"},
        "event_timestamps": {"clicks": iso(FRESH), "spend": iso(FRESH)},
    }
    missing = client.get("/entities/user/nobody", params=[("features", "user_stats:clicks")]).json()
    assert missing["statuses"] == {"clicks": "NOT_FOUND"}
    assert missing["event_timestamps"] == {"clicks": None}


def test_entity_endpoint_types_int_keys(client: TestClient) -> None:
    body = client.get("/entities/item/10", params={"features": "item_stats:price"}).json()
    assert body["item_id"] == 10 and body["features"] == {"price": 9.99}
    wrong = client.get("/entities/item/ten", params={"features": "item_stats:price"})
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["loc"] == ["path", "key"]
    assert "item_id" in wrong.json()["detail"][0]["msg"]


def test_entity_endpoint_with_a_service(client: TestClient) -> None:
    body = client.get("/entities/user/u1", params={"service": "assistant"}).json()
    assert body["features"] == {"clicks": 5, "segment": "gold"}


def test_entity_endpoint_composite_keys(tmp_path, store: FeatureStore) -> None:
    # `user_item` reads two entities; a composite *entity* passes '_' and query keys.
    from almanac import Entity, FeatureView, Field, Float64, PushSource, String
    from almanac.registry.diff import make_plan

    pair = Entity(name="pair", join_keys={"user_id": String, "item_id": "int64"})
    view = FeatureView(name="pair_stats", entities=[pair], source=PushSource(name="pair_events"),
                       schema=[Field("score", Float64)])  # fmt: skip
    from almanac.registry.catalog import Catalog

    current = store.registry.catalog(fresh=True)
    wanted = Catalog.from_definitions([*current.entities.values(), *current.sources.values(),
                                       *current.views.values(), *current.services.values(), pair, view])  # fmt: skip
    store.registry.apply(make_plan(current, wanted))
    import pyarrow as pa

    store.online.write_batch("shop", "pair_stats", ["user_id", "item_id"], ["score"], pa.table({
        "user_id": ["u1"], "item_id": [10],
        "event_timestamp": pa.array([datetime.now(UTC)], pa.timestamp("us", tz="UTC")), "score": [0.5],
    }))  # fmt: skip
    with TestClient(create_app(store)) as client:
        answer = client.get(
            "/entities/pair/_",
            params={"features": "pair_stats:score", "user_id": "u1", "item_id": "10"},
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["user_id"], body["item_id"], body["features"]) == ("u1", 10, {"score": 0.5})
        in_path = client.get("/entities/pair/u1", params={"features": "pair_stats:score"})
        assert in_path.status_code == 422 and "composite" in in_path.text
        missing = client.get(
            "/entities/pair/_", params={"features": "pair_stats:score", "user_id": "u1"}
        )
        assert missing.status_code == 422
        assert missing.json()["detail"][0]["loc"] == ["query", "item_id"]


def test_context_endpoint(client: TestClient, store: FeatureStore) -> None:
    answer = client.post(
        "/context", json={"feature_service": "assistant", "entity": {"user_id": "u1"}}
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["text"] == "Segment gold, 5 clicks."
    assert body["values"] == {"clicks": 5, "segment": "gold"}
    assert body["statuses"] == {"clicks": "PRESENT", "segment": "PRESENT"}
    assert body["event_timestamps"]["clicks"] == iso(FRESH)
    # The age is measured from the server's clock now (the fixture's data may be minutes old).
    expected = (datetime.now(UTC) - FRESH).total_seconds()
    assert expected - 60 < body["ages_seconds"]["clicks"] <= expected + 1
    # The SDK renders the same text from the same pure function.
    assert store.get_context("assistant", {"user_id": "u1"}).text == body["text"]
    stale = client.post("/context", json={"feature_service": "assistant", "entity": {"user_id": "u2"},
                                          "placeholder": "n/a"}).json()  # fmt: skip
    assert stale["text"] == "Segment n/a, n/a clicks."
    assert stale["statuses"]["clicks"] == "OUTSIDE_MAX_AGE"
    default = client.post(
        "/context", json={"feature_service": "assistant", "entity": {"user_id": "zz"}}
    ).json()
    assert default["text"] == "Segment unknown, unknown clicks."
    assert default["ages_seconds"] == {"clicks": None, "segment": None}


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        (
            "POST",
            "/get-online-features",
            {"features": ["user_stats:clicks"], "entities": {"user_id": ["u1", "u2"]}},
        ),
        (
            "POST",
            "/get-online-features",
            {"features": ["user_stats:nope"], "entities": {"user_id": ["u1"]}},
        ),
        (
            "POST",
            "/get-online-features",
            {"features": ["user_stats:clicks"], "entities": {"user_id": [3]}},
        ),
        ("POST", "/context", {"feature_service": "assistant", "entity": {"user_id": "u1"}}),
        ("GET", "/entities/user/u1?features=user_stats:clicks", None),
        ("GET", "/entities/item/x?features=item_stats:price", None),
    ],
)
def test_fast_path_and_fastapi_give_the_same_answers(
    store: FeatureStore, method: str, path: str, payload: dict | None
) -> None:
    with (
        TestClient(create_app(store)) as fast,
        TestClient(create_app(store, fast_path=False)) as slow,
    ):
        a = fast.request(method, path, json=payload)
        b = slow.request(method, path, json=payload)
    fast_body, slow_body = a.json(), b.json()
    if path == "/context":  # ages move with the clock
        assert fast_body.pop("ages_seconds").keys() == slow_body.pop("ages_seconds").keys()
    assert (a.status_code, fast_body) == (b.status_code, slow_body)
    assert a.headers["content-type"] == b.headers["content-type"] == "application/json"


def test_entity_keys_with_slashes_and_unicode(client: TestClient, store: FeatureStore) -> None:
    import pyarrow as pa

    store.online.write_batch("shop", "user_stats", ["user_id"], ["clicks", "spend", "segment"], pa.table({
        "user_id": ["a/b é"], "event_timestamp": pa.array([FRESH], pa.timestamp("us", tz="UTC")),
        "clicks": [42], "spend": [0.0], "segment": ["s"],
    }))  # fmt: skip
    answer = client.get("/entities/user/a%2Fb%20%C3%A9", params={"features": "user_stats:clicks"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["user_id"] == "a/b é" and answer.json()["features"] == {"clicks": 42}
