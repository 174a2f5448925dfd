"""An entity with no events: its counts are 0 everywhere — in training sets, in online
values (status NOT_FOUND), in the Feast-shaped HTTP answer and in the LLM context's
text — and a null value is the placeholder everywhere. The text never disagrees with
the values it is built from (docs/concepts.md, "Windowed aggregations")."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from almanac import FeatureService, FeatureStore
from almanac.online.context import render_context
from almanac.online.response import FeatureStatus, OnlineResponse
from almanac.serving.app import create_app
from almanac.serving.client import Client
from servers import free_port

FEATURES_PY = """
from almanac import (Aggregation, AggregationView, Entity, FeatureService, FeatureView, Field,
                     Float64, PushSource, String)

user = Entity(name="user", join_keys=["user_id"])
watches = PushSource(name="watches")
user_stats = AggregationView(
    name="user_stats", entities=[user], source=watches, columns=[Field("minutes", Float64)],
    aggregations=[Aggregation(function="count", windows=["30d"], name="watch_count"),
                  Aggregation(column="minutes", function="sum", windows=["30d"])],
)
profile = FeatureView(
    name="profile", entities=[user], source=PushSource(name="profiles"),
    schema=[Field("segment", String)],
)
recommender = FeatureService(
    name="recommender", features=[user_stats, profile],
    prompt_template="watched {{ watch_count_30d }} titles ({{ minutes_sum_30d }} min), "
                    "segment {{ segment }}",
)
"""
FEATURES = ["user_stats:watch_count_30d", "user_stats:minutes_sum_30d", "profile:segment"]
NAMES = ["watch_count_30d", "minutes_sum_30d", "segment"]


@pytest.fixture
def store(tmp_path: Path, online_url: str) -> Iterator[FeatureStore]:
    (tmp_path / "almanac.yaml").write_text(
        f"project: ctx\nonline:\n  url: {online_url}\nserver:\n  missing_placeholder: n/a\n"
    )
    (tmp_path / "features.py").write_text(FEATURES_PY)
    with FeatureStore(tmp_path) as store:
        store.apply()
        now = datetime.now(UTC).replace(microsecond=0)
        store.push("watches", {"user_id": ["known", "known"], "minutes": [30.0, 12.5],
                               "event_timestamp": [now - timedelta(days=1), now]})  # fmt: skip
        yield store


def test_the_sdk_gives_zero_counts_in_values_and_text(store: FeatureStore) -> None:
    # The rule is what training sets give: the count of no events is 0, a sum is null.
    spine = pd.DataFrame(
        {"user_id": ["nobody", "known"], "event_timestamp": [datetime.now(UTC)] * 2}
    )
    rows = store.get_historical_features(spine, FEATURES).to_arrow().to_pylist()
    assert [(r["watch_count_30d"], r["minutes_sum_30d"], r["segment"]) for r in rows] == [
        (0, None, None),
        (2, 42.5, None),
    ]
    online = store.get_online_features(FEATURES, [{"user_id": "nobody"}]).to_dict(
        include_statuses=True
    )
    assert online["watch_count_30d"] == [0]
    assert online["watch_count_30d__status"] == ["NOT_FOUND"]
    assert online["minutes_sum_30d"] == [None] and online["segment"] == [None]
    context = store.get_context("recommender", {"user_id": "nobody"})
    assert context.values == {"watch_count_30d": 0, "minutes_sum_30d": None, "segment": None}
    assert context.statuses == dict.fromkeys(NAMES, "NOT_FOUND")
    assert context.text == "watched 0 titles (n/a min), segment n/a"
    known = store.get_context("recommender", {"user_id": "known"})
    assert known.text == "watched 2 titles (42.5 min), segment n/a"


def test_http_context_and_feast_answer_agree_with_the_sdk(
    client: TestClient, store: FeatureStore
) -> None:
    body = client.post(
        "/context", json={"feature_service": "recommender", "entity": {"user_id": "nobody"}}
    ).json()
    assert body["text"] == "watched 0 titles (n/a min), segment n/a"
    assert body["values"] == {"watch_count_30d": 0, "minutes_sum_30d": None, "segment": None}
    assert body["statuses"] == dict.fromkeys(NAMES, "NOT_FOUND")
    assert body["text"] == store.get_context("recommender", {"user_id": "nobody"}).text
    answer = client.post(
        "/get-online-features",
        json={"feature_service": "recommender", "entities": {"user_id": ["nobody", "known"]}},
    ).json()
    results = dict(zip(answer["metadata"]["feature_names"], answer["results"], strict=True))
    assert results["watch_count_30d"]["values"] == [0, 2]
    assert results["watch_count_30d"]["statuses"] == ["NOT_FOUND", "PRESENT"]
    assert results["minutes_sum_30d"]["values"] == [None, 42.5]
    assert results["segment"]["values"] == [None, None]
    entity = client.get("/entities/user/nobody", params={"service": "recommender"}).json()
    assert entity["features"] == {"watch_count_30d": 0, "minutes_sum_30d": None, "segment": None}


def test_the_http_client_gets_the_same_context(store: FeatureStore) -> None:
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        with Client(f"http://127.0.0.1:{server.config.port}") as client:
            context = client.get_context("recommender", {"user_id": "nobody"})
            online = client.get_online_features(FEATURES, [{"user_id": "nobody"}])
    finally:
        server.should_exit = True
        thread.join(20)
    assert context.text == "watched 0 titles (n/a min), segment n/a"
    assert context.values["watch_count_30d"] == 0
    assert online.to_dict() == {
        "user_id": ["nobody"], "watch_count_30d": [0], "minutes_sum_30d": [None], "segment": [None]
    }  # fmt: skip


_values = st.one_of(st.none(), st.integers(-5, 5), st.text("ab", max_size=3))


@settings(max_examples=200, deadline=None)
@given(
    cells=st.lists(st.tuples(_values, st.sampled_from(list(FeatureStatus))), min_size=3, max_size=3)
)
def test_the_text_shows_exactly_the_values(cells: list[tuple[Any, FeatureStatus]]) -> None:
    """Whatever the statuses, a value renders as itself and a null as the placeholder."""
    service = FeatureService(
        name="recommender", features=FEATURES,
        prompt_template="watched {{ watch_count_30d }} titles ({{ minutes_sum_30d }} min), "
                        "segment {{ segment }}",
    )  # fmt: skip
    response = OnlineResponse(
        {"user_id": ["u"]},
        {name: [value] for name, (value, _) in zip(NAMES, cells, strict=True)},
        {name: [status] for name, (_, status) in zip(NAMES, cells, strict=True)},
        {name: [None] for name in NAMES},
    )
    shown = ["?" if value is None else str(value) for value, _ in cells]
    context = render_context(service, {"user_id": "u"}, response, "?")
    assert context.text == f"watched {shown[0]} titles ({shown[1]} min), segment {shown[2]}"
    assert context.values == {name: value for name, (value, _) in zip(NAMES, cells, strict=True)}
