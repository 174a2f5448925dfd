"""Loading a feature repo: its Python modules are imported and their definitions
collected; a module that fails says where."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from almanac.errors import DefinitionError, RepoError
from almanac.registry.catalog import Catalog
from almanac.registry.diff import make_plan
from almanac.repo import load_definitions

HEADER = (
    "from almanac import Entity, FeatureView, FeatureService, Field, FileSource, Int64, String\n"
)

GOOD = HEADER + textwrap.dedent(
    """
    user = Entity(name="user", join_keys=["user_id"])
    stats = FeatureView(
        name="user_stats",
        entities=[user],
        source=FileSource(name="stats_source", path="data/stats.parquet"),
        schema=[Field("watch_count_30d", Int64)],
        ttl="30d",
    )
    """
)


def write(repo: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return repo


def line_of(text: str, fragment: str) -> int:
    """The 1-based line of `text` where `fragment` appears (exactly once)."""
    lines = [i for i, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(lines) == 1, lines
    return lines[0]


def load_error(repo: Path) -> str:
    with pytest.raises(RepoError) as info:
        load_definitions(repo)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_repo_loads_its_definitions(tmp_path) -> None:
    catalog = load_definitions(write(tmp_path, {"features.py": GOOD}))
    assert set(catalog.entities) == {"user"}
    assert set(catalog.sources) == {"stats_source"}
    assert set(catalog.views) == {"user_stats"}
    catalog.validate()


def test_a_module_that_raises_on_import_names_the_file_and_line(tmp_path) -> None:
    text = GOOD + "\nlimit = 1\nratio = 10 / (limit - 1)\n"
    repo = write(tmp_path, {"features.py": text})
    message = load_error(repo)
    path = repo.resolve() / "features.py"
    assert f"{path}:{line_of(text, 'ratio =')}" in message
    assert "ZeroDivisionError" in message


def test_an_error_inside_a_helper_names_the_deepest_repo_line(tmp_path) -> None:
    helper = "def make_ttl(days):\n    if days > 90:\n        raise ValueError('ttl too long')\n"
    text = GOOD + "\nfrom helpers import make_ttl\nTTL = make_ttl(365)\n"
    repo = write(tmp_path, {"features.py": text, "helpers.py": helper})
    message = load_error(repo)
    assert f"{repo.resolve() / 'helpers.py'}:3" in message
    assert "ValueError: ttl too long" in message


def test_a_bad_definition_at_import_names_the_file_line_and_field(tmp_path) -> None:
    text = GOOD + '\nbroken = Entity(name="user stats", join_keys=["user_id"])\n'
    repo = write(tmp_path, {"features.py": text})
    message = load_error(repo)
    assert f"features.py:{line_of(text, 'broken =')}" in message
    assert "DefinitionError" in message
    assert "field 'name'" in message


def test_a_syntax_error_names_the_file_and_line(tmp_path) -> None:
    text = GOOD + "\n\nview = FeatureView(name='x',\n    entities=[user] schema=[])\n"
    repo = write(tmp_path, {"features.py": text})
    message = load_error(repo)
    assert f"{repo.resolve() / 'features.py'}:{line_of(text, 'entities=[user] schema')}" in message
    assert "SyntaxError" in message


def test_an_unnamed_module_level_source_is_named_after_its_variable(tmp_path) -> None:
    text = GOOD + textwrap.dedent(
        """
        watch_events = FileSource(path="data/events.parquet")
        last = FeatureView(
            name="user_last_genre",
            entities=["user"],
            source="watch_events",
            schema=[Field("last_genre", String)],
        )
        """
    )
    catalog = load_definitions(write(tmp_path, {"features.py": text}))
    assert catalog.sources["watch_events"].path == "data/events.parquet"
    assert catalog.views["user_last_genre"].source == "watch_events"
    catalog.validate()


def test_an_unnamed_source_passed_to_views_keeps_its_variable_name(tmp_path) -> None:
    text = HEADER + textwrap.dedent(
        """
        user = Entity(name="user", join_keys=["user_id"])
        transactions = FileSource(path="data/transactions.parquet", timestamp_field="ts")
        spend = FeatureView(
            name="spend", entities=[user], source=transactions, schema=[Field("amount", Int64)]
        )
        merchants = FeatureView(
            name="merchants", entities=[user], source=transactions, schema=[Field("merchant", String)]
        )
        """
    )
    catalog = load_definitions(write(tmp_path, {"features.py": text}))
    assert set(catalog.sources) == {"transactions"}
    assert catalog.sources["transactions"].timestamp_field == "ts"
    assert catalog.views["spend"].source == catalog.views["merchants"].source == "transactions"
    catalog.validate()


def test_an_unnamed_inline_source_is_named_after_its_view(tmp_path) -> None:
    text = HEADER + textwrap.dedent(
        """
        user = Entity(name="user", join_keys=["user_id"])
        profile = FeatureView(
            name="user_profile",
            entities=[user],
            source=FileSource(path="data/profile.parquet"),
            schema=[Field("segment", String)],
        )
        """
    )
    catalog = load_definitions(write(tmp_path, {"features.py": text}))
    assert set(catalog.sources) == {"user_profile_source"}
    assert catalog.sources["user_profile_source"].path == "data/profile.parquet"
    assert catalog.views["user_profile"].source == "user_profile_source"
    catalog.validate()


def test_definitions_from_several_modules_and_listed_modules(tmp_path) -> None:
    service = "from almanac import FeatureService\n" + (
        'svc = FeatureService(name="svc", features=["user_stats:watch_count_30d"])\n'
    )
    repo = write(tmp_path, {"features.py": GOOD, "services.py": service})
    assert set(load_definitions(repo).services) == {"svc"}
    assert set(load_definitions(repo, ["features.py"]).services) == set()
    with pytest.raises(RepoError, match=r"missing\.py"):
        load_definitions(repo, ["features.py", "missing.py"])


def test_data_hidden_and_virtualenv_folders_are_not_imported(tmp_path) -> None:
    broken = "raise RuntimeError('must not be imported')\n"
    repo = write(
        tmp_path,
        {
            "features.py": GOOD,
            "data/make_data.py": broken,
            ".almanac/x.py": broken,
            ".venv/lib/site.py": broken,
            "tests/test_features.py": broken,
        },
    )
    assert set(load_definitions(repo).views) == {"user_stats"}


def test_private_variables_are_not_definitions(tmp_path) -> None:
    text = GOOD + '\n_draft = Entity(name="draft", join_keys=["draft_id"])\n'
    catalog = load_definitions(write(tmp_path, {"features.py": text}))
    assert "draft" not in catalog.entities


def test_two_different_objects_with_one_name_are_an_error(tmp_path) -> None:
    other = HEADER + 'user = Entity(name="user", join_keys=["account_id"])\n'
    repo = write(tmp_path, {"features.py": GOOD, "more.py": other})
    with pytest.raises(DefinitionError, match="entity definitions are named 'user'"):
        load_definitions(repo)


def test_a_helper_module_is_read_afresh_on_every_load(tmp_path, monkeypatch) -> None:
    """Repo modules import each other; an edit (or another repo's module of the same name)
    must not be hidden by a module cached from an earlier load — nor by a .pyc written by
    it (an edit of the same size within the same second passes the .pyc's check), which
    is why bytecode writing is on here, as on most desktops."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    features = HEADER + textwrap.dedent(
        """
        from shared import TTL
        user = Entity(name="user", join_keys=["user_id"])
        stats = FeatureView(
            name="user_stats", entities=[user], source=FileSource(name="s", path="s.parquet"),
            schema=[Field("n", Int64)], ttl=TTL,
        )
        """
    )
    first = write(tmp_path / "first", {"features.py": features, "shared.py": "TTL = '1d'\n"})
    second = write(tmp_path / "second", {"features.py": features, "shared.py": "TTL = '7d'\n"})
    assert load_definitions(first).views["user_stats"].ttl.days == 1
    assert load_definitions(second).views["user_stats"].ttl.days == 7
    (first / "shared.py").write_text("TTL = '3d'\n")
    assert load_definitions(first).views["user_stats"].ttl.days == 3


def test_a_loaded_repo_plans_against_an_empty_registry(tmp_path) -> None:
    catalog = load_definitions(write(tmp_path, {"features.py": GOOD}))
    plan = make_plan(Catalog(), catalog)
    assert {(c.kind, c.name, c.action) for c in plan.changes} == {
        ("entity", "user", "create"),
        ("source", "stats_source", "create"),
        ("feature_view", "user_stats", "create"),
    }


def test_a_script_in_the_repo_that_uses_the_store_runs_once(tmp_path) -> None:
    """`python train.py` inside the repo: the running script is not imported as a
    definition module (that would run it again, and again)."""
    import subprocess
    import sys

    script = textwrap.dedent(
        """
        from almanac.repo import load_definitions
        print(sorted(load_definitions(".").views))
        """
    )
    repo = write(tmp_path, {"features.py": GOOD, "train.py": script})
    done = subprocess.run(
        [sys.executable, "train.py"], cwd=repo, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['user_stats']"


def test_a_module_that_loads_the_repo_again_is_named(tmp_path) -> None:
    again = "from almanac.repo import load_definitions\nload_definitions('.')\n"
    repo = write(tmp_path, {"features.py": GOOD, "helpers.py": again})
    message = load_error(repo)
    assert "helpers.py" in message
    assert "loads them again" in message
    # The next load of a fixed repo works: no state is left behind.
    (repo / "helpers.py").write_text("X = 1\n")
    assert set(load_definitions(repo).views) == {"user_stats"}


def test_an_edit_of_the_same_size_in_the_same_second_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Definitions are read from the file as it is now: a bytecode cache keyed by size
    and whole-second mtime would hand back the previous edit."""
    import os
    import sys

    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as on a developer's laptop
    features = tmp_path / "features.py"
    features.write_text(GOOD)
    stamp = features.stat().st_mtime_ns
    assert load_definitions(tmp_path).views["user_stats"].ttl.days == 30
    features.write_text(GOOD.replace('ttl="30d"', 'ttl="31d"'))  # same size
    os.utime(features, ns=(stamp, stamp))  # and the same mtime, as within one second
    assert load_definitions(tmp_path).views["user_stats"].ttl.days == 31
