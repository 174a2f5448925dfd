"""`Client` against a real uvicorn server on a free port: the SDK's objects come back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from serving_helpers import seed, write_repo

from almanac import FeatureStore
from almanac.errors import InputError, NotFoundError, StoreUnavailableError
from almanac.online.response import FeatureStatus
from almanac.serving.app import create_app
from almanac.serving.client import AuthenticationError, Client
from servers import free_port


class ServerThread:
    """uvicorn serving `app` in a thread of this process; stopped by `stop`."""

    def __init__(self, app: object) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def served(store: FeatureStore) -> Iterator[ServerThread]:
    server = ServerThread(create_app(store)).start()
    yield server
    server.stop()


def test_get_online_features_round_trip(served: ServerThread, store: FeatureStore) -> None:
    rows = [
        {"user_id": "u1", "item_id": 10},
        {"user_id": "u2", "item_id": 11},
        {"user_id": "zz", "item_id": 99},
    ]
    with Client(served.url) as client:
        remote = client.get_online_features(feature_service="ranker", entity_rows=rows)
    local = store.get_online_features(feature_service="ranker", entity_rows=rows)
    assert remote.to_dict(include_statuses=True, include_event_timestamps=True) == local.to_dict(
        include_statuses=True, include_event_timestamps=True
    )
    assert remote.statuses["clicks"] == [
        FeatureStatus.PRESENT,
        FeatureStatus.OUTSIDE_MAX_AGE,
        FeatureStatus.NOT_FOUND,
    ]
    assert remote.event_timestamps["clicks"][2] is None
    assert remote.to_arrow().schema == local.to_arrow().schema


def test_typed_values_survive_json(served: ServerThread, store: FeatureStore) -> None:
    with Client(served.url) as client:
        remote = client.get_online_features(
            ["user_profile"], {"user_id": ["u1"]}, full_feature_names=True
        )
    local = store.get_online_features(
        ["user_profile"], {"user_id": ["u1"]}, full_feature_names=True
    )
    assert remote.to_dict() == local.to_dict()
    assert remote.values["user_profile__avatar"] == [b"\x00\xffpng"]
    assert remote.values["user_profile__signup_at"] == [
        datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    ]


def test_context_push_and_errors(served: ServerThread, store: FeatureStore) -> None:
    with Client(served.url) as client:
        context = client.get_context("assistant", {"user_id": "u1"})
        assert context.text == store.get_context("assistant", {"user_id": "u1"}).text
        assert context.statuses == {"clicks": "PRESENT", "segment": "PRESENT"}
        assert isinstance(context.event_timestamps["clicks"], datetime)
        pushed = client.push(
            "item_events", [{"item_id": 77, "event_timestamp": datetime(2024, 5, 1), "price": 4.25}]
        )
        assert pushed == 1
        assert client.get_entity("item", 77, features=["item_stats:price"])["features"] == {
            "price": 4.25
        }
        with pytest.raises(NotFoundError, match="did you mean 'user_stats:clicks'"):
            client.get_online_features(["user_stats:click"], [{"user_id": "u1"}])
        with pytest.raises(InputError, match="user_id"):
            client.get_online_features(["user_stats:clicks"], [{"user_id": 5}])
        with pytest.raises(InputError, match="clicks"):
            client.push("user_events", {"user_id": ["u1"], "event_timestamp": ["2024-01-01"], "clicks": ["x"],
                                        "spend": [1.0], "segment": ["a"], "last_page": ["/"]})  # fmt: skip
        assert client.health()["status"] == "ok"
        assert [v["name"] for v in client.search_features("euros")] == ["item_stats:price"]


def test_client_api_keys_and_unreachable_server(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", "sqlite:///.almanac/online.db", api_keys=["secret"])
    with FeatureStore(repo) as store:
        seed(store)
        server = ServerThread(create_app(store)).start()
        try:
            with Client(server.url) as anonymous, pytest.raises(AuthenticationError):
                anonymous.get_online_features(["user_stats:clicks"], [{"user_id": "u1"}])
            with Client(server.url, api_key="secret") as client:
                assert client.get_online_features(
                    ["user_stats:clicks"], [{"user_id": "u1"}]
                ).values == {"clicks": [5]}
        finally:
            server.stop()
    with (
        Client(f"http://127.0.0.1:{free_port()}", timeout=2) as client,
        pytest.raises(StoreUnavailableError),
    ):
        client.get_online_features(["user_stats:clicks"], [{"user_id": "u1"}])
