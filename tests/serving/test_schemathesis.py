"""Property-based API tests: schemathesis generates requests from the app's own OpenAPI
schema and checks every answer (no 5xx, documented status codes, content types and
response shapes). Bounded: at most 30 examples per operation and mode.

Generated bodies name features that do not exist, so each hot endpoint also gets a
valid body for this repo, which checks the shape of real 200 answers. Operations are
driven with Hypothesis directly (`as_strategy`): `schemathesis.pytest.from_fixture`
does not work with pytest 9 (it reads `node._nodeid`, which pytest 9 removed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi import checks
from serving_helpers import seed, write_repo

from almanac import FeatureStore
from almanac.serving.app import create_app

VALID = {
    "POST /get-online-features": {"feature_service": "ranker", "entities": {"user_id": ["u1", "u2", "zz"], "item_id": [10, 11, 12]}},
    "POST /context": {"feature_service": "assistant", "entity": {"user_id": "u1"}},
    "POST /push": {"push_source_name": "item_events", "to": "online",
                   "df": {"item_id": [12], "event_timestamp": ["2024-05-01T00:00:00"], "price": [3.5]}},
}  # fmt: skip


@pytest.fixture(scope="module")
def api_schema(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[schemathesis.schemas.BaseSchema]:
    repo = write_repo(
        tmp_path_factory.mktemp("schemathesis") / "repo", "sqlite:///.almanac/online.db"
    )
    with FeatureStore(repo) as store:
        seed(store)
        yield schemathesis.openapi.from_asgi("/openapi.json", create_app(store))


def _run(strategy: object, label: str) -> None:
    @settings(
        max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        # Valid-looking requests may name features that do not exist (404): that is the
        # API working, so "positive data must be accepted" does not apply.
        case.call_and_validate(excluded_checks=[checks.positive_data_acceptance])

    try:
        check()
    except Unsatisfiable:  # no parameters to make invalid (negative mode)
        pass
    except Exception as error:
        raise AssertionError(f"{label}: {error}") from error


def test_api_conforms_to_its_schema(api_schema: schemathesis.schemas.BaseSchema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 11  # every endpoint, docs aside
    for operation in operations:
        _run(operation.as_strategy(), operation.label)
        _run(
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
            f"{operation.label} (negative)",
        )
        if operation.label in VALID:
            _run(
                operation.as_strategy(body=VALID[operation.label]),
                f"{operation.label} (valid body)",
            )
    entity = next(op for op in operations if op.label == "GET /entities/{entity}/{key}")
    _run(entity.as_strategy(path_parameters={"entity": "user", "key": "u1"}, query={"service": "assistant"}),
         "GET /entities/user/u1")  # fmt: skip
