"""What `plan` and `apply` may do, as users run them: plan runs no user code for effect,
a retried apply never deletes another author's work, read commands create nothing, and
no message shows a password."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

from test_registry_cli import assert_user_error, lines_with

from almanac import FeatureStore
from almanac.errors import ConcurrentApplyError

# ---- 4. plan imports definitions, and must not write -------------------------------------

SCRIPT = textwrap.dedent(
    """
    from datetime import UTC, datetime
    from pathlib import Path
    from almanac import FeatureStore

    repo = Path(__file__).parent
    FeatureStore(repo).materialize_incremental(end=datetime.now(UTC))  # at import time
    """
)


def test_plan_refuses_a_repo_module_that_writes_at_import_and_writes_nothing(
    starter_repo: Path, cli
) -> None:
    assert cli("--repo", starter_repo, "apply").code == 0
    (starter_repo / "almanac.yaml").write_text(
        (starter_repo / "almanac.yaml").read_text().replace("definitions:\n  - features.py\n", "")
    )  # back to scanning every *.py file
    (starter_repo / "refresh.py").write_text(SCRIPT)
    online_db = starter_repo / ".almanac" / "online.db"
    before = online_db.stat().st_mtime_ns if online_db.exists() else None
    for command in ("plan", "apply"):
        result = cli("--repo", starter_repo, command)
        assert_user_error(result, "refresh.py", "materialize_incremental()", "definitions")
    assert (online_db.stat().st_mtime_ns if online_db.exists() else None) == before
    with FeatureStore(starter_repo) as store:
        assert store.online.watermarks(store.project) == {}  # nothing was materialized


def test_init_lists_its_definition_modules_so_a_script_beside_them_is_never_imported(
    starter_repo: Path, cli
) -> None:
    (starter_repo / "refresh.py").write_text(SCRIPT)
    result = cli("--repo", starter_repo, "plan")
    assert result.code == 0, result
    assert lines_with(result.out, "create", "user_stats")
    with FeatureStore(starter_repo) as store:
        assert store.config.definitions == ["features.py"]


# ---- 9. a retried apply keeps the other author's objects ---------------------------------

VIEW = """
{name} = FeatureView(
    name="{name}", entities=[user], source=watch_log,
    schema=[Field("watch_seconds", Int64)], ttl="1d",
)
"""


def two_authors(starter_repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two checkouts of one repo sharing one registry (as with PostgreSQL)."""
    registry = tmp_path / "shared" / "registry.db"
    repos = []
    for author in ("alice", "bob"):
        repo = tmp_path / author
        shutil.copytree(starter_repo, repo)
        config = (repo / "almanac.yaml").read_text()
        (repo / "almanac.yaml").write_text(
            config.replace("sqlite:///.almanac/registry.db", f"sqlite:///{registry}")
        )
        repos.append(repo)
    return repos[0], repos[1]


def add_view(repo: Path, name: str) -> None:
    with (repo / "features.py").open("a") as file:
        file.write(VIEW.format(name=name))


def test_retrying_a_refused_concurrent_apply_keeps_the_other_authors_view(
    starter_repo: Path, tmp_path: Path, cli
) -> None:
    alice, bob = two_authors(starter_repo, tmp_path)
    assert cli("--repo", alice, "apply").code == 0
    assert cli("--repo", bob, "apply").code == 0  # the same definitions: nothing to do
    add_view(alice, "a_view")
    add_view(bob, "b_view")
    with FeatureStore(bob) as bobs:
        bobs_plan = bobs.plan()  # bob plans ...
        assert cli("--repo", alice, "apply").code == 0  # ... alice applies meanwhile ...
        try:
            bobs.apply(bobs_plan)  # ... so bob's apply is refused
            raise AssertionError("the stale plan was applied")
        except ConcurrentApplyError:
            pass
    # Bob follows the advice: plan again and apply. Alice's view is kept, and said so.
    result = cli("--repo", bob, "plan")
    assert lines_with(result.out, "keep", "feature view", "a_view", "--prune")
    assert not lines_with(result.out, "- delete")
    result = cli("--repo", bob, "apply")
    assert result.code == 0, result
    assert not lines_with(result.out, "- delete")
    with FeatureStore(alice) as store:
        assert {"a_view", "b_view"} <= set(store.catalog.views)

    # Alice removes her own view: that deletion is hers to make, and is listed first.
    features = (alice / "features.py").read_text()
    (alice / "features.py").write_text(features.replace(VIEW.format(name="a_view"), ""))
    result = cli("--repo", alice, "apply")
    assert result.code == 0, result
    out = result.out
    assert lines_with(out, "- delete", "feature view", "a_view")
    assert out.index("a_view") < out.index("Applied")  # the plan is shown before applying
    assert lines_with(out, "keep", "b_view")  # bob's view is not alice's to delete
    with FeatureStore(alice) as store:
        assert "a_view" not in store.catalog.views and "b_view" in store.catalog.views

    # --prune deletes what the repo does not declare, whoever applied it.
    result = cli("--repo", alice, "apply", "--prune")
    assert result.code == 0, result
    assert lines_with(result.out, "- delete", "feature view", "b_view")
    with FeatureStore(alice) as store:
        assert "b_view" not in store.catalog.views


def test_a_fresh_checkout_deletes_nothing_it_never_applied(
    starter_repo: Path, tmp_path: Path, cli
) -> None:
    alice, bob = two_authors(starter_repo, tmp_path)
    add_view(alice, "a_view")
    assert cli("--repo", alice, "apply").code == 0
    result = cli("--repo", bob, "apply")  # bob's checkout has never applied
    assert result.code == 0, result
    assert not lines_with(result.out, "- delete")
    with FeatureStore(bob) as store:
        assert "a_view" in store.catalog.views


# ---- 11. read commands create nothing; messages carry no password ------------------------


def test_read_commands_on_a_mistyped_registry_path_create_nothing(
    starter_repo: Path, tmp_path: Path, cli, monkeypatch
) -> None:
    typo = tmp_path / "regsitry" / "deep" / "registry.db"
    monkeypatch.setenv("ALMANAC_REGISTRY_URL", f"sqlite:///{typo}")
    for command in (["list", "views"], ["plan"], ["describe", "user_stats"], ["history", "x"]):
        cli("--repo", starter_repo, *command)
    assert not (tmp_path / "regsitry").exists()
    assert cli("--repo", starter_repo, "apply").code == 0  # apply does create it
    assert typo.is_file()


def test_no_error_message_shows_a_password(starter_repo: Path, cli, monkeypatch) -> None:
    assert cli("--repo", starter_repo, "apply").code == 0
    for variable, url in [
        ("ALMANAC_ONLINE_URL", "mysql://u:MyS3cretPw@db.example:3306/features"),
        ("ALMANAC_REGISTRY_URL", "mysql://u:MyS3cretPw@db.example:3306/registry"),
        ("ALMANAC_ONLINE_URL", "redis://:MyS3cretPw@127.0.0.1:1/0"),  # nothing listens
    ]:
        monkeypatch.setenv(variable, url)
        result = cli("--repo", starter_repo, "get-online", "-f", "user_stats", "-k", "user_id=0001")
        assert result.code == 2, result
        assert "MyS3cretPw" not in result.out + result.err
        if url.startswith("mysql"):  # the message names the URL, password redacted
            assert "u:***@db.example" in result.err, result.err
        monkeypatch.delenv(variable)
