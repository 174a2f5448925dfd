"""The catalog validates a set of definitions as a whole and resolves feature references."""

from __future__ import annotations

import pytest

from almanac import Entity, FeatureService, FeatureView, Field, FileSource, Float64, Int64, String
from almanac.errors import DefinitionError, InputError, NotFoundError
from almanac.registry.catalog import Catalog

user = Entity(name="user", join_keys=["user_id"])
item = Entity(name="item", join_keys={"item_id": Int64})
stats_source = FileSource(
    name="stats_source", path="stats.parquet", created_timestamp_field="created"
)


def stats(**overrides) -> FeatureView:
    spec = {
        "name": "user_stats",
        "entities": [user],
        "source": stats_source,
        "schema": [Field("watch_count_30d", Int64), Field("segment", String)],
    }
    return FeatureView(**{**spec, **overrides})


def profile() -> FeatureView:
    return FeatureView(
        name="user_profile",
        entities=[user],
        source=FileSource(path="profile.parquet"),
        schema=[Field("segment", String), Field("age", Int64)],
    )


def affinity() -> FeatureView:
    return FeatureView(
        name="user_item",
        entities=[user, item],
        source=FileSource(path="ui.parquet"),
        schema=[Field("score", Float64)],
    )


def catalog(*extra) -> Catalog:
    return Catalog.from_definitions([stats(), profile(), affinity(), *extra])


def definition_error(objects) -> str:
    with pytest.raises(DefinitionError) as info:
        Catalog.from_definitions(objects)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- building and validating --------------------------------------------------------


def test_views_bring_their_entities_and_sources() -> None:
    c = catalog()
    assert set(c.entities) == {"user", "item"}
    assert set(c.sources) == {"stats_source", "user_profile_source", "user_item_source"}
    assert c.join_keys("user_item") == {"user_id": String, "item_id": Int64}
    assert c.source_of("user_stats") == stats_source


def test_the_catalog_round_trips_through_its_specs() -> None:
    c = catalog(FeatureService(name="svc", features=["user_stats", "user_profile:age"]))
    again = Catalog.from_specs(c.to_specs(), version=7)
    assert again.to_specs() == c.to_specs()
    assert again.version == 7


def test_a_service_with_an_unknown_feature_names_it_and_suggests() -> None:
    service = FeatureService(name="ranker", features=["user_stats:watch_count_3d"])
    message = definition_error([stats(), service])
    assert "FeatureService 'ranker'" in message
    assert "unknown feature 'user_stats:watch_count_3d'" in message
    assert "did you mean 'user_stats:watch_count_30d'" in message


def test_a_service_with_an_unknown_view_names_it_and_suggests() -> None:
    message = definition_error([stats(), FeatureService(name="ranker", features=["user_stat"])])
    assert "unknown feature view 'user_stat'" in message
    assert "'user_stats'" in message


def test_a_view_of_an_undeclared_entity_is_named_with_suggestions() -> None:
    view = FeatureView(
        name="v", entities=["usr"], source="stats_source", schema=[Field("n", Int64)]
    )
    message = definition_error([view, user, stats_source])
    assert "FeatureView 'v'" in message
    assert "unknown entity 'usr'" in message
    assert "did you mean 'user'" in message


def test_a_view_of_an_undeclared_source_is_named_with_suggestions() -> None:
    view = FeatureView(name="v", entities=[user], source="stats_sourc", schema=[Field("n", Int64)])
    message = definition_error([view, stats_source])
    assert "unknown source 'stats_sourc'" in message
    assert "'stats_source'" in message


def test_two_entities_sharing_a_join_key_are_rejected() -> None:
    account = Entity(name="account", join_keys=["user_id"])
    view = FeatureView(
        name="v", entities=[user, account], source=stats_source, schema=[Field("n", Int64)]
    )
    message = definition_error([view])
    assert "FeatureView 'v'" in message
    assert "'user_id'" in message
    assert "'user'" in message and "'account'" in message


def test_a_join_key_listed_as_a_feature_is_rejected_by_name_too() -> None:
    # Built from names, the view cannot check at construction; the catalog does.
    view = FeatureView(
        name="v", entities=["user"], source="stats_source", schema=[Field("user_id", String)]
    )
    message = definition_error([view, user, stats_source])
    assert "'user_id' is the join key of entity 'user'" in message


@pytest.mark.parametrize("column", ["event_timestamp", "created"])
def test_a_feature_named_like_a_timestamp_column_is_rejected(column) -> None:
    message = definition_error([stats(schema=[Field(column, Int64)])])
    assert f"'{column}' is a timestamp column of source 'stats_source'" in message


def test_two_different_objects_with_one_name_are_rejected_but_repeats_are_fine() -> None:
    Catalog.from_definitions([stats(), stats(), user, user])
    message = definition_error([stats(), stats(ttl="1d")])
    assert "feature view" in message and "'user_stats'" in message
    other_user = Entity(name="user", join_keys=["account_id"])
    assert "'user'" in definition_error([user, other_user])


def test_users_of_an_object() -> None:
    c = catalog(FeatureService(name="svc", features=["user_stats:segment"]))
    assert c.users_of("feature_view", "user_stats") == ["feature service 'svc'"]
    assert c.users_of("feature_view", "user_profile") == []
    assert set(c.users_of("entity", "user")) == {
        "feature view 'user_stats'",
        "feature view 'user_profile'",
        "feature view 'user_item'",
    }
    assert c.users_of("source", "stats_source") == ["feature view 'user_stats'"]


# ---- resolving references -------------------------------------------------------------


def test_resolve_feature_references() -> None:
    refs = catalog().resolve(["user_stats:watch_count_30d", "user_profile:age"])
    assert [(r.view, r.field.name, r.field.dtype, r.output_name) for r in refs] == [
        ("user_stats", "watch_count_30d", Int64, "watch_count_30d"),
        ("user_profile", "age", Int64, "age"),
    ]
    assert [r.ref for r in refs] == ["user_stats:watch_count_30d", "user_profile:age"]


def test_resolve_a_whole_view_gives_its_features_in_order() -> None:
    refs = catalog().resolve(["user_stats"])
    assert [r.ref for r in refs] == ["user_stats:watch_count_30d", "user_stats:segment"]


def test_resolve_a_service() -> None:
    c = catalog(FeatureService(name="svc", features=["user_profile", "user_item:score"]))
    refs = c.resolve(service="svc")
    assert [r.ref for r in refs] == ["user_profile:segment", "user_profile:age", "user_item:score"]


def test_two_features_with_one_output_name_is_an_error_that_says_the_fix() -> None:
    c = catalog()
    with pytest.raises(InputError) as info:
        c.resolve(["user_stats:segment", "user_profile:segment"])
    message = str(info.value)
    assert "'user_stats:segment'" in message and "'user_profile:segment'" in message
    assert "full_feature_names" in message
    with pytest.raises(InputError):
        c.resolve(["user_stats", "user_profile"])


def test_full_feature_names_prefix_the_view() -> None:
    refs = catalog().resolve(["user_stats:segment", "user_profile"], full_feature_names=True)
    assert [r.output_name for r in refs] == [
        "user_stats__segment",
        "user_profile__segment",
        "user_profile__age",
    ]
    c = catalog(FeatureService(name="svc", features=["user_stats:segment", "user_profile:segment"]))
    assert [r.output_name for r in c.resolve(service="svc", full_feature_names=True)] == [
        "user_stats__segment",
        "user_profile__segment",
    ]


def test_a_feature_asked_for_twice_is_returned_once() -> None:
    refs = catalog().resolve(["user_stats:segment", "user_stats", "user_stats:segment"])
    assert [r.ref for r in refs] == ["user_stats:segment", "user_stats:watch_count_30d"]


@pytest.mark.parametrize(
    ("kwargs", "unknown", "suggestion"),
    [
        (
            {"features": ["user_stats:watch_count"]},
            "feature 'user_stats:watch_count'",
            "user_stats:watch_count_30d",
        ),
        ({"features": ["user_stat:segment"]}, "feature view 'user_stat'", "user_stats"),
        ({"service": "svcc"}, "feature service 'svcc'", "svc"),
    ],
)
def test_unknown_references_are_named_with_suggestions(kwargs, unknown, suggestion) -> None:
    c = catalog(FeatureService(name="svc", features=["user_stats"]))
    with pytest.raises(NotFoundError) as info:
        c.resolve(**kwargs)
    assert f"unknown {unknown}" in str(info.value)
    assert f"'{suggestion}" in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"features": []}, {"features": ["user_stats"], "service": "svc"}, {"features": [3]}],
)
def test_resolve_needs_features_or_a_service(kwargs) -> None:
    c = catalog(FeatureService(name="svc", features=["user_stats"]))
    with pytest.raises(InputError):
        c.resolve(**kwargs)
