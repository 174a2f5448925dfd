"""Property-based API tests: schemathesis generates requests from the app's own OpenAPI
schema and checks every answer (no 5xx, documented status codes, content types and
response shapes, schema-valid data accepted and invalid data refused). Bounded: at most
30 examples per operation and mode (15 over the network).

Two targets: the app in-process (SQLite), and `almanac serve` as users run it, in a
subprocess on a real Redis with API keys (schemathesis sends the key; its checks also
send requests without it and expect a 401).

Generated bodies name features that do not exist (404, which counts as accepting the
data), so each hot endpoint also gets a valid body for this repo, which checks the
shape of real 200 answers. Operations are driven with Hypothesis directly
(`as_strategy`): `schemathesis.pytest.from_fixture` does not work with pytest 9 (it
reads `node._nodeid`, which pytest 9 removed)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks
from serving_helpers import seed, serving, write_repo

from almanac import FeatureStore
from almanac.serving.app import create_app
from servers import start_redis

API_KEY = "schemathesis-key"
VALID = {
    "POST /get-online-features": {"feature_service": "ranker", "entities": {"user_id": ["u1", "u2", "zz"], "item_id": [10, 11, 12]}},
    "POST /context": {"feature_service": "assistant", "entity": {"user_id": "u1"}},
    "POST /push": {"push_source_name": "item_events", "to": "online",
                   "df": {"item_id": [12], "event_timestamp": ["2024-05-01T00:00:00"], "price": [3.5]}},
    "POST /write-to-online-store": {"feature_view_name": "item_stats",
                                    "df": {"item_id": [13], "event_timestamp": ["2024-05-01T00:00:00"], "price": [4.5]}},
}  # fmt: skip


@dataclass
class Target:
    schema: schemathesis.schemas.BaseSchema
    headers: dict[str, str] | None
    max_examples: int


EVERYTHING = """
from almanac import Permission, Resource
everything = Permission(name="everything", principals=["key:config"], resources=[Resource()],
                        actions=["describe", "read_online", "read_offline", "write_online", "write_offline"])
"""


@pytest.fixture(
    scope="module",
    params=["in-process", "secured", pytest.param("served", marks=pytest.mark.redis)],
)
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    folder = tmp_path_factory.mktemp("schemathesis")
    if request.param == "in-process":
        repo = write_repo(folder / "repo", "sqlite:///.almanac/online.db")
        with FeatureStore(repo) as store:
            seed(store)
            yield Target(
                schemathesis.openapi.from_asgi("/openapi.json", create_app(store)), None, 30
            )
        return
    if request.param == "secured":  # server.auth on: every check runs, and grants
        repo = write_repo(folder / "repo", "sqlite:///.almanac/online.db", api_keys=[API_KEY])
        with open(repo / "features.py", "a") as features:
            features.write(EVERYTHING)
        with open(repo / "almanac.yaml", "a") as settings:
            settings.write("  auth:\n    type: api_keys\n  audit:\n    path: audit/log.jsonl\n")
        with FeatureStore(repo) as store:
            store.apply()
            seed(store)
        with FeatureStore(repo) as store:
            yield Target(
                schemathesis.openapi.from_asgi("/openapi.json", create_app(store)),
                {"X-API-Key": API_KEY},
                15,
            )
        return
    redis = start_redis()  # its own: other tests flush the shared one
    try:
        repo = write_repo(folder / "repo", redis.url, api_keys=[API_KEY])
        with FeatureStore(repo) as store:
            seed(store)
        with serving(repo) as served:
            schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
            yield Target(schema, {"X-API-Key": API_KEY}, 15)
    finally:
        redis.stop()


def _run(strategy: object, label: str, target: Target, excluded: list) -> None:
    @settings(
        max_examples=target.max_examples, deadline=None, database=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=target.headers, excluded_checks=excluded)

    try:
        check()
    except Unsatisfiable:  # no parameters to make invalid (negative mode)
        pass
    except Exception as error:
        raise AssertionError(f"{label}: {error}") from error


def test_api_conforms_to_its_schema(target: Target) -> None:
    operations = [result.ok() for result in target.schema.get_all_operations()]
    assert len(operations) == 19  # every endpoint, docs aside
    for operation in operations:
        # Query parameters cannot say "features or service, not both" in OpenAPI; every
        # rule of a body is in the schema, so schema-valid bodies must be accepted.
        excluded = [] if operation.body else [checks.positive_data_acceptance]
        _run(operation.as_strategy(), operation.label, target, excluded)
        _run(
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
            f"{operation.label} (negative)",
            target,
            excluded,
        )
        if operation.label in VALID:
            _run(
                operation.as_strategy(body=VALID[operation.label]),
                f"{operation.label} (valid body)",
                target,
                excluded,
            )
    entity = next(op for op in operations if op.label == "GET /entities/{entity}/{key}")
    _run(entity.as_strategy(path_parameters={"entity": "user", "key": "u1"}, query={"service": "assistant"}),
         "GET /entities/user/u1", target, [checks.positive_data_acceptance])  # fmt: skip
