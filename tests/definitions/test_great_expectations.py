"""A Great Expectations suite (JSON, 1.x and 0.x spellings) read into expectations, for
the kinds both have; what has no equivalent is an error naming it, or left out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from almanac import Expect, FeatureStore
from almanac.errors import DefinitionError, InputError

SUITE_1X = {
    "name": "payments_suite",
    "expectations": [
        {
            "type": "expect_column_values_to_not_be_null",
            "kwargs": {"column": "tier"},
            "meta": {},
            "id": "a",
        },
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "amount", "min_value": 0, "max_value": 1000, "mostly": 1.0},
        },
        {
            "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "tier", "value_set": ["free", "pro"]},
        },
        {
            "type": "expect_column_values_to_match_regex",
            "kwargs": {"column": "tier", "regex": "^[a-z]+$"},
        },
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1}},
    ],
    "meta": {"great_expectations_version": "1.3.0"},
}


def test_a_suite_maps_to_the_same_checks() -> None:
    assert Expect.from_great_expectations(SUITE_1X) == [
        Expect.not_null("tier"),
        Expect.between("amount", 0, 1000),
        Expect.one_of("tier", ["free", "pro"]),
        Expect.matches("tier", "^[a-z]+$"),
        Expect.row_count(min=1),
    ]
    legacy = {
        "expectation_suite_name": "old",
        "expectations": [
            {
                "expectation_type": "expect_column_values_to_be_between",
                "kwargs": {"column": "amount", "max_value": 5},
            }
        ],
    }
    assert Expect.from_great_expectations(legacy) == [Expect.between("amount", None, 5)]


def test_what_has_no_equivalent_is_named_or_skipped(tmp_path: Path) -> None:
    suite = {
        "name": "s",
        "expectations": [
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "amount", "min_value": 0, "mostly": 0.95},
            },
            {
                "type": "expect_column_mean_to_be_between",
                "kwargs": {"column": "amount", "min_value": 1},
            },
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "tier"}},
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "amount"}},
        ],
    }
    with pytest.raises(DefinitionError) as caught:
        Expect.from_great_expectations(suite)
    message = str(caught.value)
    assert "expectation 1 (expect_column_values_to_be_between): mostly=0.95 has no Almanac equivalent" in message  # fmt: skip
    assert "expectation 2 (expect_column_mean_to_be_between): no Almanac equivalent" in message
    assert "expectation 4 (expect_column_values_to_be_between): " in message  # no bounds
    assert Expect.from_great_expectations(suite, unsupported="skip") == [Expect.not_null("tier")]
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(DefinitionError, match=r"broken\.json"):
        Expect.from_great_expectations(path)


def test_a_view_declared_from_a_suite_file_rejects_a_bad_push(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "payments_suite.json").write_text(json.dumps(SUITE_1X))
    (repo / "almanac.yaml").write_text("project: ge\n")
    (repo / "features.py").write_text("""
from pathlib import Path
from almanac import Entity, Expect, FeatureView, Field, Float64, PushSource, String

user = Entity(name="user", join_keys=["user_id"])
amounts = FeatureView(
    name="amounts", entities=[user], source=PushSource(name="payments"),
    schema=[Field("amount", Float64), Field("tier", String)],
    expectations=Expect.from_great_expectations(Path(__file__).parent / "payments_suite.json"),
)
""")
    now = datetime.now(UTC) - timedelta(seconds=1)
    with FeatureStore(repo) as store:
        store.apply()
        with pytest.raises(InputError, match=r"one_of\('tier', \['free', 'pro'\]\): 1 of 2 rows"):
            store.push("payments", {"user_id": ["a", "b"], "event_timestamp": [now, now],
                                    "amount": [1.0, 2.0], "tier": ["pro", "gold"]})  # fmt: skip
        assert store.push("payments", {"user_id": ["a"], "event_timestamp": [now], "amount": [1.0], "tier": ["pro"]}) == 1  # fmt: skip
