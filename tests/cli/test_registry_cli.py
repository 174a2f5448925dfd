"""The registry commands, as a user runs them: init, plan, apply, list, describe, history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import almanac
from almanac.errors import AlmanacError
from almanac.registry.catalog import KINDS
from almanac.repo import load_definitions

DTYPE_BEFORE = 'Field("watch_seconds", Int64)'
DTYPE_AFTER = 'Field("watch_seconds", "float64")'


def repo_catalog(repo: Path):
    return load_definitions(repo)


def lines_with(text: str, *words: str) -> list[str]:
    return [line for line in text.splitlines() if all(w in line for w in words)]


def assert_user_error(result, *fragments: str) -> None:
    """One line on stderr, starting with "error:", exit code 2, no traceback."""
    assert result.code == 2, result
    assert "Traceback" not in result.err + result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


# ---- the tour -----------------------------------------------------------------------------


def test_the_tour_init_plan_apply_list_describe(cli, tmp_path, monkeypatch) -> None:
    repo = tmp_path / "demo"
    result = cli("init", repo, "--users", "50", "--events", "2000")
    assert result.code == 0, result
    assert str(repo) in result.out
    for name in ("almanac.yaml", "features.py"):
        assert (repo / name).is_file()
    assert list((repo / "data").glob("*.parquet"))

    monkeypatch.chdir(repo)
    catalog = repo_catalog(repo)
    objects = [(kind, name) for kind in KINDS for name in catalog.of_kind(kind)]

    result = cli("plan")
    assert result.code == 0, result
    for kind, name in objects:
        assert lines_with(result.out, "create", kind.replace("_", " "), name), (kind, name)
    assert f"{len(objects)} to create, 0 to update, 0 to delete" in result.out
    assert cli("history", "user_stats").code == 2  # planning wrote nothing

    result = cli("apply")
    assert result.code == 0, result
    assert "registry version 1" in result.out

    result = cli("list", "features")
    assert result.code == 0, result
    for view in catalog.all_views().values():
        for field in view.features:
            assert lines_with(result.out, view.name, field.name, field.dtype), field.name

    result = cli("describe", "user_stats")
    assert result.code == 0, result
    view = catalog.view("user_stats")
    source = catalog.sources[view.source]
    assert "user_stats (aggregation view, version 1)" in result.out
    assert lines_with(result.out, "entities", "user", "user_id", "string")
    assert lines_with(result.out, "source", source.name, source.path)
    assert lines_with(result.out, "watch_count_30d", "count", "30d", "int64")
    for field in view.features:
        assert lines_with(result.out, field.name, field.dtype)
    assert lines_with(result.out, "1", "create")

    result = cli("describe", "user_profile")
    assert result.code == 0, result
    assert "user_profile (feature view, version 1)" in result.out
    assert lines_with(result.out, "ttl", "2d")


def test_list_json_gives_the_registered_rows(cli, starter_repo) -> None:
    assert cli("--repo", starter_repo, "apply").code == 0
    catalog = repo_catalog(starter_repo)

    def rows(what: str) -> list[dict]:
        result = cli("--repo", starter_repo, "list", what, "--json")
        assert result.code == 0, result
        return json.loads(result.out)

    assert {(r["view"], r["feature"], r["type"], r["entity"]) for r in rows("features")} == {
        (v.name, f.name, f.dtype, ", ".join(v.entities))
        for v in catalog.all_views().values()
        for f in v.features
    }
    assert ("user_stats", "watch_count_30d", "int64", "user") in {
        (r["view"], r["feature"], r["type"], r["entity"]) for r in rows("features")
    }
    assert {(r["view"], r["features"], r["source"], r["ttl"]) for r in rows("views")} == {
        (
            v.name,
            len(v.features),
            v.source,
            almanac.definitions.format_duration(v.ttl) if v.ttl else "",
        )
        for v in catalog.all_views().values()
    }
    assert {r["entity"]: r["join_keys"] for r in rows("entities")} == {
        e.name: ", ".join(f"{k} ({t})" for k, t in e.join_keys.items())
        for e in catalog.entities.values()
    }
    assert {(r["source"], r["type"]) for r in rows("sources")} == {
        (s.name, s.type) for s in catalog.sources.values()
    }
    assert {r["service"]: r["features"] for r in rows("services")} == {
        s.name: ", ".join(s.features) for s in catalog.services.values()
    }


def test_list_before_any_apply_says_so(cli, starter_repo) -> None:
    result = cli("--repo", starter_repo, "list", "views")
    assert result.code == 0
    assert "No views registered yet" in result.out
    assert json.loads(cli("--repo", starter_repo, "list", "views", "--json").out) == []


def test_a_dtype_edit_is_planned_applied_as_version_2_and_in_history(
    cli, starter_repo, monkeypatch
) -> None:
    monkeypatch.setenv("ALMANAC_AUTHOR", "alice")
    assert cli("--repo", starter_repo, "apply").code == 0
    edit(starter_repo / "features.py", DTYPE_BEFORE, DTYPE_AFTER)

    result = cli("--repo", starter_repo, "plan")
    assert result.code == 0, result
    assert lines_with(result.out, "update", "aggregation view", "user_stats")
    assert lines_with(result.out, "columns[watch_seconds].dtype", "int64", "float64")
    assert "0 to create, 1 to update, 0 to delete" in result.out
    plan = json.loads(cli("--repo", starter_repo, "plan", "--json").out)
    assert plan == {
        "base_version": 1,
        "changes": [
            {
                "kind": "aggregation_view",
                "name": "user_stats",
                "action": "update",
                "fields": [
                    {"path": "columns[watch_seconds].dtype", "before": "int64", "after": "float64"}
                ],
            }
        ],
        "kept": [],
    }
    history = json.loads(cli("--repo", starter_repo, "history", "user_stats", "--json").out)
    assert len(history) == 1  # plan wrote nothing

    monkeypatch.setenv("ALMANAC_AUTHOR", "bob")
    result = cli("--repo", starter_repo, "apply")
    assert result.code == 0, result
    assert "registry version 2" in result.out

    result = cli("--repo", starter_repo, "history", "user_stats")
    assert result.code == 0, result
    assert lines_with(result.out, "1", "create", "alice")
    assert lines_with(result.out, "2", "update", "bob", "columns[watch_seconds].dtype", "float64")
    history = json.loads(cli("--repo", starter_repo, "history", "user_stats", "--json").out)
    assert [(h["version"], h["action"], h["author"]) for h in history] == [
        (1, "create", "alice"),
        (2, "update", "bob"),
    ]
    assert history[1]["diff"] == plan["changes"][0]["fields"]
    assert history[1]["spec"]["columns"][0] == {
        "name": "watch_seconds",
        "dtype": "float64",
        "description": "",
        "tags": {},
    }

    result = cli("--repo", starter_repo, "describe", "user_stats")
    assert "version 2" in result.out
    assert lines_with(result.out, "watch_seconds_sum_7d", "float64")
    described = json.loads(cli("--repo", starter_repo, "describe", "user_stats", "--json").out)
    assert [v["version"] for v in described["versions"]] == [1, 2]


def test_apply_without_changes_adds_no_version(cli, starter_repo) -> None:
    assert cli("--repo", starter_repo, "apply").code == 0
    result = cli("--repo", starter_repo, "apply")
    assert result.code == 0
    assert "No changes" in result.out
    history = json.loads(cli("--repo", starter_repo, "history", "user_stats", "--json").out)
    assert [h["registry_version"] for h in history] == [1]


def test_describe_shows_services_entities_and_sources(cli, starter_repo) -> None:
    assert cli("--repo", starter_repo, "apply").code == 0
    catalog = repo_catalog(starter_repo)
    for name, obj in [
        *catalog.services.items(),
        *catalog.entities.items(),
        *catalog.sources.items(),
    ]:
        result = cli("--repo", starter_repo, "describe", name)
        assert result.code == 0, result
        assert f"{name} ({obj.kind.replace('_', ' ')}, version 1)" in result.out
        spec = json.loads(cli("--repo", starter_repo, "describe", name, "--json").out)["spec"]
        assert spec == obj.to_spec()


# ---- user errors ------------------------------------------------------------------------


def test_describe_of_an_unknown_object_suggests_names(cli, starter_repo) -> None:
    assert cli("--repo", starter_repo, "apply").code == 0
    result = cli("--repo", starter_repo, "describe", "user_stat")
    assert_user_error(result, "unknown object 'user_stat'", "'user_stats'")
    assert result.out == ""
    assert_user_error(cli("--repo", starter_repo, "history", "nope"), "unknown object 'nope'")


@pytest.mark.parametrize(
    ("old", "new", "fragments"),
    [
        ("project: streaming", "project: streaming\nbogus: 1", ["'bogus'", "unknown setting"]),
        ("timeout_seconds: 2", "timeout_seconds: fast", ["'online.timeout_seconds'"]),
        ("project: streaming", "project: [streaming", ["almanac.yaml", "not valid YAML"]),
    ],
)
def test_a_bad_almanac_yaml_is_one_line(cli, starter_repo, old, new, fragments) -> None:
    edit(starter_repo / "almanac.yaml", old, new)
    for command in (["plan"], ["apply"], ["list", "features"], ["describe", "user_stats"]):
        assert_user_error(cli("--repo", starter_repo, *command), *fragments)


def test_a_repo_module_failing_on_import_is_one_line(cli, starter_repo) -> None:
    features = starter_repo / "features.py"
    features.write_text(features.read_text() + "\nraise RuntimeError('boom')\n")
    line = len(features.read_text().splitlines())
    for command in ("plan", "apply"):
        assert_user_error(
            cli("--repo", starter_repo, command),
            f"{features.resolve()}:{line}",
            "RuntimeError: boom",
        )


def test_a_bad_definition_is_one_line_and_applies_nothing(cli, starter_repo) -> None:
    assert cli("--repo", starter_repo, "apply").code == 0
    edit(starter_repo / "features.py", 'ttl="2d"', 'ttl="-2d"')
    assert_user_error(cli("--repo", starter_repo, "apply"), "FeatureView 'user_profile'", "ttl")
    history = json.loads(cli("--repo", starter_repo, "history", "user_profile", "--json").out)
    assert len(history) == 1


def test_deleting_a_view_a_service_uses_is_refused(cli, starter_repo) -> None:
    assert cli("--repo", starter_repo, "apply").code == 0
    edit(
        starter_repo / "features.py", "user_profile = FeatureView(", "_user_profile = FeatureView("
    )
    edit(starter_repo / "features.py", "features=[user_profile,", 'features=["user_profile",')
    assert_user_error(
        cli("--repo", starter_repo, "apply"),
        "cannot delete feature view 'user_profile'",
        "feature service 'recommender_v1'",
    )


def test_a_folder_without_almanac_yaml_is_one_line(cli, tmp_path) -> None:
    assert_user_error(cli("--repo", tmp_path, "plan"), "no almanac.yaml", "almanac init")


def test_init_refuses_a_folder_that_is_not_empty(cli, tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert_user_error(cli("init", tmp_path, "--users", "5", "--events", "5"), "not empty")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_debug_shows_the_full_error(cli, tmp_path) -> None:
    with pytest.raises(AlmanacError, match=r"no almanac\.yaml"):
        cli("--repo", tmp_path, "--debug", "plan")


def test_version_and_help(cli) -> None:
    result = cli("--version")
    assert result.code == 0
    assert result.out.strip() == f"almanac {almanac.__version__}"
    result = cli("--help")
    assert result.code == 0
    for command in ("init", "plan", "apply", "list", "describe", "history"):
        assert lines_with(result.out, command), command
    result = cli("plan", "--help")
    assert result.code == 0
    assert "--json" in result.out


def test_a_usage_error_is_reported_without_a_traceback(cli) -> None:
    for args in (["list", "bogus"], ["nope"], ["describe"]):
        result = cli(*args)
        assert result.code == 2, (args, result)
        assert "Traceback" not in result.err + result.out
        assert "Usage" in result.err or "usage" in result.err
    assert "bogus" in cli("list", "bogus").err


# ---- end to end, as separate processes --------------------------------------------------

ALMANAC = Path(sys.executable).parent / "almanac"


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ALMANAC_")}
    return subprocess.run(
        [str(ALMANAC), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **(env or {})},
    )


def test_a_user_error_from_the_installed_command(starter_repo) -> None:
    result = run("--repo", starter_repo, "describe", "user_stats")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: unknown object 'user_stats'")


@pytest.mark.postgres
def test_a_postgres_registry_set_by_the_environment(
    cli, starter_repo, postgres_url, monkeypatch
) -> None:
    monkeypatch.setenv("ALMANAC_REGISTRY_URL", postgres_url)
    monkeypatch.setenv("ALMANAC_AUTHOR", "ci")
    applied = cli("--repo", starter_repo, "apply")
    assert applied.code == 0, applied
    assert "registry version 1" in applied.out
    assert not (starter_repo / ".almanac" / "registry.db").exists()
    rows = json.loads(cli("--repo", starter_repo, "list", "features", "--json").out)
    assert ("user_stats", "watch_count_30d", "int64") in {
        (r["view"], r["feature"], r["type"]) for r in rows
    }
    history = json.loads(cli("--repo", starter_repo, "history", "user_stats", "--json").out)
    assert [(h["version"], h["author"]) for h in history] == [(1, "ci")]
    monkeypatch.delenv("ALMANAC_REGISTRY_URL")
    assert json.loads(cli("--repo", starter_repo, "list", "features", "--json").out) == []
