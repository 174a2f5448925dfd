"""The registry, on SQLite and on PostgreSQL: versioned applies, history, refusals that
leave it untouched, concurrent applies that never lose an update, caching, watermarks."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from almanac import Entity, FeatureService, FeatureView, Field, FileSource, Int64, String
from almanac.errors import (
    AlmanacError,
    ConcurrentApplyError,
    ConfigError,
    RegistryError,
    StoreUnavailableError,
)
from almanac.registry.catalog import Catalog
from almanac.registry.diff import make_plan
from almanac.registry.store import CachedRegistry, PostgresRegistry, SqlRegistry, open_registry

# ---- definitions built in code ------------------------------------------------------------


def definitions(
    dtype: str = "int64", ttl: str = "30d", description: str = "", profile: bool = True
) -> list:
    user = Entity(name="user", join_keys=["user_id"])
    objects = [
        FeatureView(
            name="user_stats",
            entities=[user],
            source=FileSource(name="stats_source", path="data/stats.parquet"),
            schema=[Field("watch_count_30d", dtype), Field("minutes_30d", Int64)],
            ttl=ttl,
            description=description,
        ),
        FeatureService(name="recommender_v1", features=["user_stats:watch_count_30d"]),
    ]
    if profile:
        objects.append(
            FeatureView(
                name="user_profile",
                entities=[user],
                source=FileSource(name="profile_source", path="data/profile.parquet"),
                schema=[Field("segment", String)],
            )
        )
    return objects


def target(**options) -> Catalog:
    return Catalog.from_definitions(definitions(**options), validate=False)


def apply(registry: SqlRegistry, **options) -> int:
    return registry.apply(make_plan(registry.load(), target(**options)))


def snapshot(registry: SqlRegistry) -> tuple:
    """Everything a user can read back: version, definitions and every object's history."""
    catalog = registry.load()
    names = [name for kind in ("entity", "source", "feature_view", "feature_service")
             for name in catalog.of_kind(kind)]  # fmt: skip
    histories = {name: registry.history(name) for name in names}
    return registry.version(), catalog.to_specs(), histories


# ---- apply, re-apply, change, history -------------------------------------------------


def test_a_new_registry_is_empty(registry) -> None:
    assert registry.version() == 0
    assert registry.load().to_specs() == Catalog().to_specs()
    assert registry.history("user_stats") == []


def test_apply_creates_version_1_with_every_object(registry, monkeypatch) -> None:
    monkeypatch.setenv("ALMANAC_AUTHOR", "alice")
    assert apply(registry) == 1
    assert registry.version() == 1
    loaded = registry.load()
    assert loaded.version == 1
    assert loaded.to_specs() == target().to_specs()
    for name in ("user", "stats_source", "user_stats", "user_profile", "recommender_v1"):
        [record] = registry.history(name)
        assert (record.version, record.registry_version, record.action) == (1, 1, "create")
        assert record.author == "alice"
        assert record.diff == []
        assert record.applied_at.tzinfo is not None


def test_reapplying_the_same_definitions_is_a_no_op(registry) -> None:
    apply(registry)
    before = snapshot(registry)
    plan = make_plan(registry.load(), target())
    assert plan.empty
    assert registry.apply(plan) == 1
    assert snapshot(registry) == before


def test_a_dtype_change_is_planned_then_recorded_as_version_2(registry, monkeypatch) -> None:
    monkeypatch.setenv("ALMANAC_AUTHOR", "alice")
    apply(registry)
    before = snapshot(registry)
    plan = make_plan(registry.load(), target(dtype="float64"))
    [change] = plan.changes
    assert (change.name, change.action) == ("user_stats", "update")
    assert [(f.path, f.before, f.after) for f in change.fields] == [
        ("schema[watch_count_30d].dtype", "int64", "float64")
    ]
    assert snapshot(registry) == before  # planning writes nothing

    monkeypatch.setenv("ALMANAC_AUTHOR", "bob")
    assert registry.apply(plan) == 2
    assert registry.load().views["user_stats"].schema[0].dtype == "float64"
    first, second = registry.history("user_stats")
    assert (first.version, first.action, first.author) == (1, "create", "alice")
    assert (second.version, second.registry_version, second.action) == (2, 2, "update")
    assert second.author == "bob"
    assert second.diff == [
        {"path": "schema[watch_count_30d].dtype", "before": "int64", "after": "float64"}
    ]
    assert first.spec["schema"][0]["dtype"] == "int64"
    assert second.spec["schema"][0]["dtype"] == "float64"
    assert len(registry.history("user_profile")) == 1  # untouched objects keep one version


def test_an_explicit_author_is_recorded(registry) -> None:
    registry.apply(make_plan(registry.load(), target()), author="ci-bot")
    assert registry.history("user_stats")[0].author == "ci-bot"


def test_deleting_a_view_a_service_uses_is_refused_and_nothing_changes(registry) -> None:
    apply(registry)
    before = snapshot(registry)
    objects = [o for o in definitions() if o.name != "user_stats"]
    with pytest.raises(RegistryError) as info:
        make_plan(registry.load(), Catalog.from_definitions(objects, validate=False))
    assert "cannot delete feature view 'user_stats'" in str(info.value)
    assert "feature service 'recommender_v1'" in str(info.value)
    assert snapshot(registry) == before


def test_deleting_an_unused_view_is_applied_and_recorded(registry, monkeypatch) -> None:
    apply(registry)
    monkeypatch.setenv("ALMANAC_AUTHOR", "carol")
    assert apply(registry, profile=False) == 2
    loaded = registry.load()
    assert "user_profile" not in loaded.views
    assert "profile_source" not in loaded.sources
    assert loaded.to_specs() == target(profile=False).to_specs()
    created, deleted = registry.history("user_profile")
    assert (created.action, deleted.action) == ("create", "delete")
    assert (deleted.version, deleted.registry_version, deleted.author) == (2, 2, "carol")
    assert deleted.spec is None
    # Re-creating it continues its history.
    assert apply(registry) == 3
    assert [r.action for r in registry.history("user_profile")] == ["create", "delete", "create"]
    assert [r.version for r in registry.history("user_profile")] == [1, 2, 3]


# ---- bad definitions leave the registry exactly as it was -------------------------------

REPO = """
from almanac import Entity, FeatureService, FeatureView, Field, FileSource, Int64, String

user = Entity(name="user", join_keys=["user_id"])

user_stats = FeatureView(
    name="user_stats",
    entities=[user],
    source=FileSource(name="stats_source", path="data/stats.parquet"),
    schema=[Field("watch_count_30d", Int64), Field("minutes_30d", Int64)],
    ttl="30d",
)

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    source=FileSource(name="profile_source", path="data/profile.parquet"),
    schema=[Field("segment", String)],
)

recommender = FeatureService(name="recommender_v1", features=["user_stats:watch_count_30d"])
"""

# Each bad edit is made together with a valid change (a dtype), so a half-written apply
# would show.
VALID_CHANGE = ('Field("watch_count_30d", Int64)', 'Field("watch_count_30d", "float64")')
BAD_EDITS = {
    "duplicate feature": ('Field("minutes_30d", Int64)', 'Field("minutes_30d", Int64), Field("minutes_30d", String)'),
    "unknown dtype": ('Field("segment", String)', 'Field("segment", "text")'),
    "name with a space": ('name="user_profile"', 'name="user profile"'),
    "name with SQL": ('name="user_profile"', '''name="x'; DROP TABLE almanac_objects; --"'''),
    "name with a dash": ('name="user_profile"', 'name="user-profile"'),
    "negative ttl": ('ttl="30d"', 'ttl="-30d"'),
    "zero ttl": ('ttl="30d"', "ttl=0"),
    "join key as a feature": ('Field("segment", String)', 'Field("user_id", String)'),
    "unknown field": ('ttl="30d",', 'ttl="30d", tll="1d",'),
    "service with unknown feature": ('"user_stats:watch_count_30d"', '"user_stats:watch_count_3d"'),
    "service with unknown view": ('"user_stats:watch_count_30d"', '"user_stat"'),
    "entities sharing a key": ('entities=[user],\n    source=FileSource(name="profile', 'entities=[user, Entity(name="member", join_keys=["user_id"])],\n    source=FileSource(name="profile'),
    "feature named like the timestamp": ('Field("segment", String)', 'Field("event_timestamp", String)'),
    "module raising on import": ("recommender =", "oops = 1 / 0\nrecommender ="),
    "syntax error": ("recommender =", "recommender = = "),
    "delete a used view": ('user_stats = FeatureView(', 'user_stats = None and FeatureView('),
}  # fmt: skip


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_the_repo_applies_through_the_feature_store(feature_repo) -> None:
    feature_repo.write(REPO)
    store = feature_repo.store()
    plan = store.plan()
    assert plan.counts() == {"create": 6, "update": 0, "delete": 0}
    assert store.catalog.version == 0  # planning writes nothing
    store.apply()
    assert store.catalog.version == 1
    assert store.catalog.to_specs() == store.load_repo().to_specs()
    assert feature_repo.store().apply().empty  # a second apply changes nothing
    assert open_registry(feature_repo.registry_url, "shop").version() == 1


@pytest.mark.parametrize("bad", BAD_EDITS)
def test_a_bad_definition_leaves_the_registry_as_it_was(feature_repo, bad) -> None:
    feature_repo.write(REPO)
    feature_repo.store().apply()
    watcher = open_registry(feature_repo.registry_url, "shop")
    try:
        before = snapshot(watcher)
        feature_repo.write(edit(edit(REPO, *VALID_CHANGE), *BAD_EDITS[bad]))
        with pytest.raises(AlmanacError) as info:
            feature_repo.store().apply()
        assert "\n" not in str(info.value)
        assert snapshot(watcher) == before
    finally:
        watcher.close()
    # The valid change alone still applies afterwards.
    feature_repo.write(edit(REPO, *VALID_CHANGE))
    assert [c.name for c in feature_repo.store().apply().changes] == ["user_stats"]


# ---- concurrent applies -------------------------------------------------------------------


def test_a_plan_made_before_another_apply_is_refused_and_nothing_is_lost(open_backend) -> None:
    first, second = open_backend(), open_backend()
    apply(first)
    plan_a = make_plan(first.load(), target(dtype="float64"))
    plan_b = make_plan(second.load(), target(ttl="7d"))
    assert plan_a.base_version == plan_b.base_version == 1

    assert first.apply(plan_a) == 2
    after_a = snapshot(second)
    with pytest.raises(ConcurrentApplyError) as info:
        second.apply(plan_b)
    assert "plan" in str(info.value) and "version 1" in str(info.value)
    assert snapshot(second) == after_a
    assert second.load().to_specs() == target(dtype="float64").to_specs()

    # Re-planning shows the other apply's change, and applying it keeps the history.
    replan = make_plan(second.load(), target(ttl="7d"))
    [change] = replan.changes
    assert {f.path for f in change.fields} == {"schema[watch_count_30d].dtype", "ttl"}
    assert second.apply(replan) == 3
    assert [r.registry_version for r in first.history("user_stats")] == [1, 2, 3]
    assert first.history("user_stats")[1].spec["schema"][0]["dtype"] == "float64"


WRITERS = 6


def _race(connections: list[SqlRegistry], options: list[dict]) -> list[str]:
    """Each connection plans from the same base, then all apply at once."""
    plans = [make_plan(c.load(), target(**o)) for c, o in zip(connections, options, strict=True)]
    barrier = threading.Barrier(len(connections))
    outcomes: list[str] = [""] * len(connections)

    def run(i: int) -> None:
        barrier.wait()
        try:
            connections[i].apply(plans[i])
            outcomes[i] = "won"
        except ConcurrentApplyError:
            outcomes[i] = "refused"
        except Exception as error:  # reported by the assertion below
            outcomes[i] = repr(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(connections))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcomes


def test_concurrent_applies_from_one_base_have_exactly_one_winner(open_backend) -> None:
    connections = [open_backend() for _ in range(WRITERS)]
    apply(connections[0])
    options = [{"description": f"writer {i}"} for i in range(WRITERS)]
    outcomes = _race(connections, options)
    assert sorted(outcomes) == ["refused"] * (WRITERS - 1) + ["won"]
    winner = outcomes.index("won")
    reader = open_backend()
    assert reader.version() == 2
    assert reader.load().to_specs() == target(**options[winner]).to_specs()
    history = reader.history("user_stats")
    assert [(r.registry_version, r.action) for r in history] == [(1, "create"), (2, "update")]
    assert history[1].spec["description"] == f"writer {winner}"


def test_concurrent_writers_that_replan_all_land_one_version_each(open_backend) -> None:
    connections = [open_backend() for _ in range(WRITERS)]
    apply(connections[0])
    barrier = threading.Barrier(WRITERS)
    errors: list[str] = []

    def writer(i: int) -> None:
        barrier.wait()
        for _ in range(100):
            plan = make_plan(connections[i].load(), target(description=f"writer {i}"))
            try:
                connections[i].apply(plan)
                return
            except ConcurrentApplyError:
                continue
            except Exception as error:  # reported below
                errors.append(repr(error))
                return
        errors.append(f"writer {i} never landed")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    reader = open_backend()
    assert reader.version() == 1 + WRITERS
    history = reader.history("user_stats")
    assert [r.registry_version for r in history] == list(range(1, WRITERS + 2))
    assert [r.version for r in history] == list(range(1, WRITERS + 2))
    landed = [r.spec["description"] for r in history[1:]]
    assert sorted(landed) == sorted(f"writer {i}" for i in range(WRITERS))
    assert reader.load().views["user_stats"].description == landed[-1]


def _apply_in_process(url: str, description: str, barrier, results) -> None:
    registry = open_registry(url, "shop")
    try:
        plan = make_plan(registry.load(), target(description=description))
        barrier.wait(60)
        try:
            registry.apply(plan)
            results.put((description, "won"))
        except ConcurrentApplyError:
            results.put((description, "refused"))
    except Exception as error:  # reported by the test
        results.put((description, repr(error)))
    finally:
        registry.close()


def test_concurrent_applies_from_separate_processes(registry, registry_url) -> None:
    apply(registry)
    cached = CachedRegistry(open_registry(registry_url, "shop"), refresh_seconds=0)
    assert cached.catalog().version == 1
    # fork: the children start at once (spawn would import almanac again in each)
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(3), context.Queue()
    processes = [
        context.Process(
            target=_apply_in_process, args=(registry_url, f"process {i}", barrier, results)
        )
        for i in range(3)
    ]
    for p in processes:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in processes)
    for p in processes:
        p.join(60)
    assert sorted(outcomes.values()) == ["refused", "refused", "won"]
    [winner] = [d for d, outcome in outcomes.items() if outcome == "won"]
    # A reader in this process sees the other process's apply without a restart.
    catalog = cached.catalog()
    assert catalog.version == 2
    assert catalog.to_specs() == target(description=winner).to_specs()
    assert [r.action for r in registry.history("user_stats")] == ["create", "update"]
    cached.close()


def test_opening_a_new_registry_from_many_connections_at_once(registry_url) -> None:
    barrier = threading.Barrier(6)
    errors: list[str] = []

    def open_one() -> None:
        barrier.wait()
        try:
            open_registry(registry_url, "shop").close()
        except Exception as error:  # reported below
            errors.append(repr(error))

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


# ---- the cached registry --------------------------------------------------------------


def test_a_cached_registry_sees_another_connections_apply(open_backend) -> None:
    writer = open_backend()
    apply(writer)
    cached = CachedRegistry(open_backend(), refresh_seconds=0)
    assert cached.catalog().views["user_stats"].schema[0].dtype == "int64"
    apply(writer, dtype="float64")
    catalog = cached.catalog()
    assert catalog.version == 2
    assert catalog.views["user_stats"].schema[0].dtype == "float64"


def test_a_cached_registry_does_not_touch_the_database_within_its_window(open_backend) -> None:
    writer = open_backend()
    apply(writer)
    cached = CachedRegistry(open_backend(), refresh_seconds=3600)
    first = cached.catalog()
    apply(writer, dtype="float64")
    assert cached.catalog() is first  # the window has not elapsed: no check
    assert cached.catalog(check=False) is first
    cached.backend.close()  # any database access now fails
    assert cached.catalog() is first
    assert cached.catalog().views["user_stats"].schema[0].dtype == "int64"
    with pytest.raises(Exception):  # noqa: B017 - the closed connection's own error
        cached.catalog(fresh=True)

    again = CachedRegistry(open_backend(), refresh_seconds=3600)
    assert again.catalog().version == 2


def test_a_cached_registry_reloads_only_when_the_version_moved(open_backend) -> None:
    writer = open_backend()
    apply(writer)
    cached = CachedRegistry(open_backend(), refresh_seconds=0)
    first = cached.catalog()
    assert cached.catalog() is first  # checked, same version: the same catalog
    assert cached.refresh() is first
    apply(writer, dtype="float64")
    assert cached.refresh() is not first
    assert cached.apply(make_plan(cached.catalog(), target(dtype="string"))) == 3
    assert cached.catalog(check=False).version == 3


# ---- projects and backends -------------------------------------------------------------


def test_two_projects_in_one_database_are_isolated(open_backend) -> None:
    shop, games = open_backend("shop"), open_backend("games")
    apply(shop)
    apply(shop, dtype="float64")
    games.apply(make_plan(games.load(), target(profile=False)))
    assert (shop.version(), games.version()) == (2, 1)
    assert set(shop.load().views) == {"user_stats", "user_profile"}
    assert set(games.load().views) == {"user_stats"}
    assert games.load().views["user_stats"].schema[0].dtype == "int64"
    assert len(shop.history("user_stats")) == 2
    assert len(games.history("user_stats")) == 1
    assert games.history("user_profile") == []
    # An apply in one project does not make another project's plan stale.
    plan = make_plan(games.load(), target(profile=False, ttl="1d"))
    apply(shop, dtype="string")
    assert games.apply(plan) == 2


def test_an_unsupported_registry_url_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"registry\.url"):
        open_registry(f"mysql://{tmp_path}", "shop")


@pytest.mark.postgres
def test_an_unreachable_postgres_is_a_clear_error() -> None:
    with pytest.raises(StoreUnavailableError, match="cannot reach the registry database"):
        PostgresRegistry("postgresql://postgres@127.0.0.1:1/none", "shop", connect_timeout=2)
