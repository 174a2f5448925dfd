"""A Feast client using Almanac as its online store, run by test_feast_client.py in the
Feast venv (not in Almanac's): `python feast_client.py URL KEY FOLDER`.

It declares, in Feast, the views of the serving tests' repo that it uses, with
`online_store: type: remote` pointed at `almanac serve`, then writes, pushes and reads
through Feast's own API, and prints what each step gave as JSON (an error as text)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from feast import (
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    PushSource,
    RepoConfig,
)
from feast.data_source import PushMode
from feast.types import Float64, Int64, String
from feast.value_type import ValueType


def store_for(url: str, key: str, folder: str) -> FeatureStore:
    config: dict[str, Any] = {
        "project": "shop",
        "provider": "local",
        "registry": os.path.join(folder, "feast-registry.db"),
        "online_store": {"type": "remote", "path": url},
        "entity_key_serialization_version": 3,
    }
    if key:
        config["auth"] = {"type": "oidc", "token": key}  # sent as Authorization: Bearer
    return FeatureStore(config=RepoConfig(**config))


def main(url: str, key: str, folder: str) -> None:
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    history = FileSource(
        name="user_events_history",
        path=os.path.join(folder, "unused.parquet"),
        timestamp_field="event_timestamp",
    )
    events = PushSource(name="user_events", batch_source=history)
    stats = FeatureView(
        name="user_stats", entities=[user], source=events, ttl=timedelta(days=1),
        schema=[Field(name="clicks", dtype=Int64), Field(name="spend", dtype=Float64),
                Field(name="segment", dtype=String)],
    )  # fmt: skip
    recent = FeatureView(
        name="user_recent", entities=[user], source=events,
        schema=[Field(name="last_page", dtype=String)],
    )  # fmt: skip
    assistant = FeatureService(name="assistant", features=[stats[["clicks", "segment"]]])
    store = store_for(url, key, folder)
    store.apply([user, history, events, stats, recent, assistant])
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    out: dict[str, Any] = {}

    def step(name: str, action: Callable[[], Any]) -> None:
        try:
            out[name] = action()
        except Exception as error:  # reported, for the test to show
            out[name] = f"error: {type(error).__name__}: {error}"

    written = pd.DataFrame({"user_id": ["f1"], "event_timestamp": [at], "clicks": [11],
                            "spend": [1.5], "segment": ["gold"]})  # fmt: skip
    step("write", lambda: store.write_to_online_store("user_stats", written) or "ok")
    pushed = pd.DataFrame({"user_id": ["f2"], "event_timestamp": [at], "clicks": [22],
                           "spend": [2.5], "segment": ["tin"], "last_page": ["/cart"]})  # fmt: skip
    step("push", lambda: store.push("user_events", pushed, to=PushMode.ONLINE) or "ok")
    rows = [{"user_id": "f1"}, {"user_id": "f2"}, {"user_id": "nobody"}]
    refs = ["user_stats:clicks", "user_stats:spend", "user_stats:segment", "user_recent:last_page"]
    step("read", lambda: store.get_online_features(features=refs, entity_rows=rows).to_dict())
    step(
        "read_service",
        lambda: store.get_online_features(features=assistant, entity_rows=rows).to_dict(),
    )
    if key:
        intruder = store_for(url, key + "-wrong", folder)
        step("wrong_key", lambda: intruder.write_to_online_store("user_stats", written) or "ok")
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:4])
