"""`make_plan`: what apply would change, object by object and field by field."""

from __future__ import annotations

import json

import pytest

from almanac import Entity, FeatureService, FeatureView, Field, FileSource, Float64, Int64, String
from almanac.errors import DefinitionError, RegistryError
from almanac.registry.catalog import Catalog
from almanac.registry.diff import diff_specs, make_plan

user = Entity(name="user", join_keys=["user_id"])


def stats(schema=None, **overrides) -> FeatureView:
    return FeatureView(
        name="user_stats",
        entities=[user],
        source=FileSource(name="stats_source", path="stats.parquet"),
        schema=schema or [Field("watch_count_30d", Int64), Field("minutes_30d", Int64)],
        ttl="30d",
        **overrides,
    )


def profile() -> FeatureView:
    return FeatureView(
        name="user_profile",
        entities=[user],
        source=FileSource(path="profile.parquet"),
        schema=[Field("segment", String)],
    )


service = FeatureService(name="recommender_v1", features=["user_stats:watch_count_30d"])


def applied(*objects, version: int = 1) -> Catalog:
    return Catalog.from_definitions(objects, version=version)


def target(*objects) -> Catalog:
    return Catalog.from_definitions(objects, validate=False)


def test_everything_is_created_in_dependency_order() -> None:
    plan = make_plan(Catalog(), target(stats(), profile(), service))
    assert plan.base_version == 0
    assert [c.kind for c in plan.changes] == sorted(
        (c.kind for c in plan.changes),
        key=["entity", "source", "feature_view", "feature_service"].index,
    )
    assert {c.name for c in plan.changes if c.action == "create"} == {
        "user",
        "stats_source",
        "user_profile_source",
        "user_stats",
        "user_profile",
        "recommender_v1",
    }
    assert plan.counts() == {"create": 6, "update": 0, "delete": 0}


def test_the_same_definitions_make_an_empty_plan() -> None:
    plan = make_plan(
        applied(stats(), profile(), service, version=4), target(stats(), profile(), service)
    )
    assert plan.empty
    assert plan.base_version == 4


def test_a_dtype_change_is_one_field_change_with_before_and_after() -> None:
    changed = stats(schema=[Field("watch_count_30d", Float64), Field("minutes_30d", Int64)])
    plan = make_plan(applied(stats(), service), target(changed, service))
    [change] = plan.changes
    assert (change.kind, change.name, change.action) == ("feature_view", "user_stats", "update")
    assert [(f.path, f.before, f.after) for f in change.fields] == [
        ("schema[watch_count_30d].dtype", "int64", "float64")
    ]
    assert change.before["schema"][0]["dtype"] == "int64"
    assert change.after["schema"][0]["dtype"] == "float64"


def test_field_paths_for_added_removed_and_scalar_changes() -> None:
    changed = stats(
        schema=[Field("watch_count_30d", Int64), Field("hours_30d", Float64)], owner="recs"
    )
    plan = make_plan(applied(stats()), target(changed))
    [change] = plan.changes
    paths = {f.path: (f.before, f.after) for f in change.fields}
    assert paths["schema[minutes_30d]"][1] is None
    assert paths["schema[hours_30d]"][0] is None
    assert paths["schema[hours_30d]"][1]["dtype"] == "float64"
    assert paths["owner"] == ("", "recs")
    assert "schema[watch_count_30d].dtype" not in paths


def test_a_ttl_change_shows_the_text_form() -> None:
    shorter = FeatureView(**{**stats().model_dump(by_alias=True), "ttl": "7d"})
    [change] = make_plan(applied(stats()), target(shorter, user, stats().source_object)).changes
    assert [(f.path, f.before, f.after) for f in change.fields] == [("ttl", "30d", "7d")]


def test_reordering_features_is_a_change() -> None:
    reordered = stats(schema=[Field("minutes_30d", Int64), Field("watch_count_30d", Int64)])
    [change] = make_plan(applied(stats()), target(reordered)).changes
    [field] = change.fields
    assert field.before == ["watch_count_30d", "minutes_30d"]
    assert field.after == ["minutes_30d", "watch_count_30d"]


def test_deleting_a_view_a_service_still_uses_is_refused() -> None:
    with pytest.raises(RegistryError) as info:
        make_plan(applied(stats(), profile(), service), target(profile(), service))
    message = str(info.value)
    assert "feature view 'user_stats'" in message
    assert "feature service 'recommender_v1'" in message


def test_deleting_an_entity_a_view_still_uses_is_refused() -> None:
    other = Entity(name="account", join_keys=["account_id"])
    with pytest.raises(RegistryError, match=r"entity 'account'.*feature view 'v'"):
        view = FeatureView(name="v", entities=["account"], source="s", schema=[Field("n", Int64)])
        make_plan(
            applied(view, other, FileSource(name="s", path="s.parquet")),
            target(view, FileSource(name="s", path="s.parquet")),
        )


def test_deleting_an_unused_view_is_planned() -> None:
    plan = make_plan(applied(stats(), profile(), service), target(stats(), service))
    assert [(c.kind, c.name, c.action) for c in plan.changes] == [
        ("source", "user_profile_source", "delete"),
        ("feature_view", "user_profile", "delete"),
    ]
    assert plan.changes[1].before["name"] == "user_profile"
    assert plan.changes[1].after is None


def test_the_target_is_validated_as_a_whole() -> None:
    broken = FeatureService(name="recommender_v1", features=["user_stats:nope"])
    with pytest.raises(DefinitionError, match="unknown feature 'user_stats:nope'"):
        make_plan(applied(stats()), target(stats(), broken))


def test_a_plan_serializes_to_json() -> None:
    changed = stats(schema=[Field("watch_count_30d", Float64), Field("minutes_30d", Int64)])
    plan = make_plan(applied(stats(), version=3), target(changed, profile()))
    data = json.loads(json.dumps(plan.to_json()))
    assert data["base_version"] == 3
    update = next(c for c in data["changes"] if c["action"] == "update")
    assert update["fields"] == [
        {"path": "schema[watch_count_30d].dtype", "before": "int64", "after": "float64"}
    ]


def test_diff_specs_compares_named_lists_by_name() -> None:
    before = {"schema": [{"name": "a", "dtype": "int64"}, {"name": "b", "dtype": "string"}]}
    after = {"schema": [{"name": "b", "dtype": "string"}, {"name": "a", "dtype": "int64"}]}
    assert [f.path for f in diff_specs(before, after)] == ["schema (order)"]
    assert diff_specs(before, before) == []
