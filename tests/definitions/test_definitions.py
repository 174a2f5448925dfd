"""Definitions validate on construction and round-trip through their JSON spec.

Every bad input gives one `DefinitionError` whose one-line message names the kind of
object, the object and the field at fault.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from almanac import (
    Array,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    Float32,
    Float64,
    Int32,
    Int64,
    PushSource,
    SqlSource,
    String,
)
from almanac.definitions.sources import source_from_spec
from almanac.definitions.types import KEY_DTYPES, SCALAR_DTYPES
from almanac.errors import AlmanacError, DefinitionError
from almanac.registry.catalog import definition_from_spec

IDENTIFIER = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,62}", fullmatch=True)
NOT_IDENTIFIER_CHAR = st.characters(
    blacklist_characters="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_",
    blacklist_categories=("Cs",),
)


def view(**overrides):
    spec = {
        "name": "user_stats",
        "entities": ["user"],
        "source": "stats",
        "schema": [Field("watch_count_30d", Int64)],
    }
    return FeatureView(**{**spec, **overrides})


def raises_definition_error(make, *fragments: str) -> str:
    """Call `make`, expect one DefinitionError on one line that mentions every fragment."""
    with pytest.raises(DefinitionError) as info:
        make()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert isinstance(info.value, AlmanacError)
    return message


# ---- names ------------------------------------------------------------------------------

BAD_NAMES = [
    "user stats",
    "x'; DROP TABLE",
    "a-b",
    'say"hi"',
    "a;b",
    "a.b",
    "1st",
    "",
    "user\n",
    "naïve",
    "a" * 64,
]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize(
    ("kind", "make"),
    [
        ("Entity", lambda n: Entity(name=n, join_keys=["user_id"])),
        ("FileSource", lambda n: FileSource(name=n, path="data.parquet")),
        ("SqlSource", lambda n: SqlSource(name=n, query="SELECT 1")),
        ("PushSource", lambda n: PushSource(name=n)),
        ("FeatureView", lambda n: view(name=n)),
        ("FeatureService", lambda n: FeatureService(name=n, features=["user_stats"])),
        ("Field", lambda n: Field(n, Int64)),
    ],
)
def test_a_name_that_is_not_an_identifier_is_rejected(kind, make, name) -> None:
    raises_definition_error(lambda: make(name), kind, "field 'name'", repr(name))


@pytest.mark.parametrize("name", ["user stats", "x'; DROP TABLE", "a-b"])
def test_names_inside_definitions_are_checked_too(name) -> None:
    raises_definition_error(lambda: Entity(name="user", join_keys=[name]), "join_keys", repr(name))
    raises_definition_error(lambda: view(entities=[name]), "FeatureView 'user_stats'", "entities")
    raises_definition_error(lambda: view(source=name), "FeatureView 'user_stats'", "source")
    raises_definition_error(
        lambda: FileSource(name="s", path="p.parquet", timestamp_field=name), "timestamp_field"
    )
    raises_definition_error(
        lambda: FeatureService(name="svc", features=[f"user_stats:{name}"]),
        "FeatureService 'svc'",
        "features",
    )


@settings(max_examples=60, deadline=None)
@given(name=IDENTIFIER)
def test_every_identifier_is_a_valid_name(name) -> None:
    assert Field(name, Int64).name == name
    assert Entity(name=name, join_keys=[name]).join_keys == {name: String}
    assert FeatureService(name=name, features=[f"{name}:{name}"]).views == [name]


@settings(max_examples=60, deadline=None)
@given(prefix=IDENTIFIER, bad=NOT_IDENTIFIER_CHAR, suffix=st.text(max_size=5))
@example(prefix="user", bad="\n", suffix="")  # `$` in a regex matches before a final newline
def test_any_non_identifier_character_is_rejected(prefix, bad, suffix) -> None:
    name = prefix[:30] + bad + suffix
    raises_definition_error(lambda: Field(name, Int64), "Field", "field 'name'")
    raises_definition_error(lambda: PushSource(name=name), "PushSource", "field 'name'")


# ---- dtypes -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int65", "varchar", "list<nope>", "list<list<int64>>", "", 5])
def test_an_unknown_dtype_is_rejected_naming_the_field(dtype) -> None:
    raises_definition_error(lambda: Field("watch_count", dtype), "Field 'watch_count'", "dtype")


def test_a_view_with_an_unknown_dtype_names_the_view_and_the_feature() -> None:
    raises_definition_error(
        lambda: view(schema=[{"name": "watch_count", "dtype": "int65"}]),
        "FeatureView 'user_stats'",
        "Field 'watch_count'",
        "field 'dtype'",
        "int65",
    )


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("INT64", Int64),
        ("int", Int64),
        ("integer", Int64),
        ("str", String),
        ("double", Float64),
        (" Float32 ", Float32),
        ("array<float32>", "list<float32>"),
        ("list< int32 >", "list<int32>"),
        (Array(Float32), "list<float32>"),
    ],
)
def test_dtypes_are_canonical(written, canonical) -> None:
    assert Field("x", written).dtype == canonical


def test_every_scalar_dtype_and_its_list_are_accepted() -> None:
    for dtype in SCALAR_DTYPES:
        assert Field("x", dtype).dtype == dtype
        assert Field("x", Array(dtype)).dtype == f"list<{dtype}>"


# ---- feature views ----------------------------------------------------------------------


def test_duplicate_feature_names_in_a_view_are_rejected() -> None:
    raises_definition_error(
        lambda: view(schema=[Field("watch_count", Int64), Field("watch_count", Float64)]),
        "FeatureView 'user_stats'",
        "field 'schema'",
        "duplicate feature name 'watch_count'",
    )


@pytest.mark.parametrize("ttl", [0, -1, "0s", "-1d", "0d0h", timedelta(0), timedelta(hours=-3)])
@pytest.mark.parametrize("field", ["ttl", "materialize_every"])
def test_a_zero_or_negative_duration_is_rejected(field, ttl) -> None:
    raises_definition_error(
        lambda: view(**{field: ttl}), "FeatureView 'user_stats'", f"field '{field}'", "positive"
    )


@pytest.mark.parametrize(
    "ttl",
    [
        *("abc", "", "1x", "1.5h", "h", "-", "1d 2h", True, [1]),
        *(0.5, timedelta(milliseconds=1500)),  # durations are whole seconds
        *("99999999999999w", 10**20, float("inf"), float("nan")),  # no timedelta holds these
    ],
)
def test_a_malformed_duration_is_rejected(ttl) -> None:
    raises_definition_error(lambda: view(ttl=ttl), "FeatureView 'user_stats'", "field 'ttl'")


def test_a_join_key_listed_as_a_feature_is_rejected() -> None:
    user = Entity(name="user", join_keys=["user_id"])
    raises_definition_error(
        lambda: view(entities=[user], schema=[Field("user_id", String), Field("n", Int64)]),
        "FeatureView 'user_stats'",
        "schema",
        "'user_id'",
        "entity 'user'",
    )


@pytest.mark.parametrize(
    ("make", "kind", "field"),
    [
        (lambda: view(tll="1d"), "FeatureView 'user_stats'", "tll"),
        (
            lambda: Entity(name="user", join_keys=["user_id"], colour="red"),
            "Entity 'user'",
            "colour",
        ),
        (lambda: Field("x", Int64, unit="s"), "Field 'x'", "unit"),
        (lambda: FileSource(name="s", path="a.csv", delimiter=";"), "FileSource 's'", "delimiter"),
        (lambda: FeatureService(name="svc", features=["v"], model="m"), "FeatureService", "model"),
    ],
)
def test_an_unknown_field_is_rejected(make, kind, field) -> None:
    raises_definition_error(make, kind, f"field '{field}'", "unknown field")


def test_missing_required_fields_are_named() -> None:
    message = raises_definition_error(lambda: FeatureView(name="v"), "FeatureView 'v'")
    for field in ("entities", "source", "schema"):
        assert f"field '{field}'" in message


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"entities": []}, "entities"),
        ({"entities": ["u", "u"]}, "entities"),
        ({"schema": []}, "schema"),
    ],
)
def test_a_view_needs_distinct_entities_and_a_feature(overrides, field) -> None:
    raises_definition_error(lambda: view(**overrides), "FeatureView 'user_stats'", f"'{field}'")


def test_definitions_are_immutable() -> None:
    v = view()
    with pytest.raises(Exception, match="frozen"):
        v.name = "other"  # type: ignore[misc]


def test_a_view_built_from_objects_refers_to_them_by_name() -> None:
    user = Entity(name="user", join_keys=["user_id"])
    source = FileSource(name="stats", path="stats.parquet")
    v = view(entities=[user], source=source)
    assert v.entities == ["user"]
    assert v.source == "stats"
    assert v.entity_objects == [user]
    assert v.source_object == source


def test_an_unnamed_inline_source_is_named_after_the_view() -> None:
    v = view(source=FileSource(path="stats.parquet"))
    assert v.source == "user_stats_source"
    assert v.source_object is not None
    assert v.source_object.name == "user_stats_source"


# ---- entities ---------------------------------------------------------------------------


def test_entity_with_a_list_of_keys_defaults_to_string() -> None:
    assert Entity(name="user", join_keys=["user_id"]).join_keys == {"user_id": String}
    assert Entity(name="user", join_keys=["user_id"], dtype=Int64).join_keys == {"user_id": Int64}


def test_entity_with_a_dict_of_keys_keeps_each_type_and_order() -> None:
    entity = Entity(name="pair", join_keys={"user_id": "str", "item_id": "int"})
    assert entity.join_keys == {"user_id": String, "item_id": Int64}
    assert list(entity.join_keys) == ["user_id", "item_id"]


@pytest.mark.parametrize("dtype", [*sorted(set(SCALAR_DTYPES) - set(KEY_DTYPES)), "list<int64>"])
def test_entity_keys_are_int64_or_string_only(dtype) -> None:
    raises_definition_error(
        lambda: Entity(name="user", join_keys={"user_id": String, "k": dtype}),
        "Entity 'user'",
        "join_keys",
        "'k'",
        "int64 or string",
    )
    raises_definition_error(
        lambda: Entity(name="user", join_keys=["user_id"], dtype=dtype),
        "Entity 'user'",
        "join_keys",
    )


def test_entity_needs_a_key_and_dtype_goes_with_a_list() -> None:
    raises_definition_error(lambda: Entity(name="user", join_keys=[]), "Entity 'user'", "join key")
    raises_definition_error(lambda: Entity(name="user", join_keys={}), "Entity 'user'", "join key")
    raises_definition_error(
        lambda: Entity(name="user", join_keys={"user_id": Int64}, dtype=Int64),
        "Entity 'user'",
        "dtype",
    )


# ---- sources and services ---------------------------------------------------------------


def test_file_source_infers_its_format_from_the_path() -> None:
    assert FileSource(name="s", path="events.csv").format == "csv"
    assert FileSource(name="s", path="folder/").format == "parquet"
    assert FileSource(name="s", path="x.CSV", format="parquet").format == "parquet"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: FileSource(name="s", path=" "), "path"),
        (lambda: FileSource(name="s", path="x.csv", format="json"), "format"),
        (lambda: SqlSource(name="s", query="  "), "query"),
        (
            lambda: PushSource(name="s", timestamp_field="t", created_timestamp_field="t"),
            "created_timestamp_field",
        ),
    ],
)
def test_bad_sources_are_rejected(make, fragment) -> None:
    raises_definition_error(make, "Source 's'", fragment)


@pytest.mark.parametrize(
    ("features", "fragment"),
    [([], "at least one"), (["a:b:c"], "'a:b:c'"), (["v:x", "v:x"], "twice"), (["v:"], "''")],
)
def test_bad_service_references_are_rejected(features, fragment) -> None:
    raises_definition_error(
        lambda: FeatureService(name="svc", features=features), "FeatureService 'svc'", fragment
    )


def test_a_service_takes_views_view_names_and_feature_refs() -> None:
    service = FeatureService(name="svc", features=[view(), "user_profile", "user_stats:extra"])
    assert service.features == ["user_stats", "user_profile", "user_stats:extra"]
    assert service.views == ["user_stats", "user_profile"]


# ---- durations and JSON round-trips -----------------------------------------------------


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        *(("30d", 30 * 86400), ("1h30m", 5400), ("90s", 90), ("2w", 14 * 86400), (" 12H ", 43200)),
        *((3600, 3600), (3600.0, 3600), (timedelta(days=1, seconds=5), 86405)),
    ],
)
def test_durations_parse(written, seconds) -> None:
    ttl = view(ttl=written).ttl
    assert ttl == timedelta(seconds=seconds)
    again = FeatureView.from_spec(json.loads(json.dumps(view(ttl=written).to_spec())))
    assert again.ttl == ttl


@settings(max_examples=80, deadline=None)
@given(seconds=st.integers(min_value=1, max_value=10**9))
def test_durations_round_trip_through_the_spec(seconds) -> None:
    ttl = timedelta(seconds=seconds)
    original = view(ttl=ttl, materialize_every=seconds)
    spec = json.loads(json.dumps(original.to_spec()))
    assert isinstance(spec["ttl"], str)
    restored = FeatureView.from_spec(spec)
    assert restored.ttl == ttl
    assert restored.materialize_every == ttl
    assert restored == original


@settings(max_examples=80, deadline=None)
@given(parts=st.dictionaries(st.sampled_from("wdhms"), st.integers(0, 500), min_size=1))
def test_duration_text_means_the_sum_of_its_parts(parts) -> None:
    text = "".join(f"{n}{u}" for u, n in parts.items())
    unit = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
    expected = timedelta(seconds=sum(n * unit[u] for u, n in parts.items()))
    if expected <= timedelta(0):
        raises_definition_error(lambda: view(ttl=text), "field 'ttl'")
    else:
        assert view(ttl=text).ttl == expected


def _all_definitions():
    user = Entity(name="user", join_keys=["user_id"], description="d", owner="o", tags={"a": "b"})
    pair = Entity(name="pair", join_keys={"user_id": String, "item_id": Int64})
    return [
        user,
        pair,
        FileSource(name="f", path="data/x.csv", created_timestamp_field="created", tags={"t": "1"}),
        FileSource(name="g", path="data/folder", timestamp_field="ts"),
        SqlSource(name="q", query="SELECT 1 AS x, now() AS event_timestamp", owner="o"),
        PushSource(name="p", description="pushed"),
        Field("embedding", Array(Float32), description="e", tags={"pii": "no"}),
        FeatureView(
            name="v",
            entities=[user],
            source=FileSource(path="a.parquet"),
            schema=[Field("a", Int32), Field("b", Array(Float64)), Field("c", String)],
            ttl="1d12h",
            materialize_every=3600,
            online=False,
            owner="o",
            description="d",
            tags={"team": "x"},
        ),
        FeatureView(name="w", entities=["user", "item"], source="q", schema=[Field("n", Int64)]),
        FeatureService(
            name="svc", features=["v", "w:n"], prompt_template="{{ a }}", tags={"m": "1"}
        ),
    ]


@pytest.mark.parametrize("obj", _all_definitions(), ids=lambda o: f"{type(o).__name__}-{o.name}")
def test_every_definition_round_trips_through_json(obj) -> None:
    spec = obj.to_spec()
    text = json.dumps(spec)
    restored = type(obj).from_spec(json.loads(text))
    assert restored == obj
    assert restored.to_spec() == spec
    assert hash(restored) == hash(obj)
    if obj.kind in ("entity", "source", "feature_view", "feature_service"):
        assert definition_from_spec(obj.kind, json.loads(text)) == obj
    if obj.kind == "source":
        assert type(source_from_spec(json.loads(text))) is type(obj)


def test_equality_is_by_spec_and_a_change_is_visible() -> None:
    assert view() == view()
    assert view() != view(ttl="1d")
    assert view(schema=[Field("watch_count_30d", Int64)]) != view(
        schema=[Field("watch_count_30d", Float64)]
    )


@settings(max_examples=40, deadline=None)
@given(
    name=IDENTIFIER,
    features=st.lists(
        st.tuples(IDENTIFIER, st.sampled_from([*SCALAR_DTYPES, "list<float32>"])),
        min_size=1,
        max_size=5,
        unique_by=lambda f: f[0],
    ),
    ttl=st.none() | st.integers(1, 10**8),
    online=st.booleans(),
    tags=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
def test_generated_views_round_trip_through_json(name, features, ttl, online, tags) -> None:
    original = FeatureView(
        name=name,
        entities=["user"],
        source="src",
        schema=[Field(n, d) for n, d in features],
        ttl=ttl,
        online=online,
        tags=tags,
    )
    restored = FeatureView.from_spec(json.loads(json.dumps(original.to_spec())))
    assert restored == original
    assert restored.feature_names == [n for n, _ in features]
    assert restored.ttl == (None if ttl is None else timedelta(seconds=ttl))
