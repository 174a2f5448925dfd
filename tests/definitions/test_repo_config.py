"""`almanac.yaml`: validated settings, environment overrides that win over the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from almanac.config import load_config
from almanac.errors import ConfigError


def write_config(repo: Path, text: str) -> Path:
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "almanac.yaml").write_text(text)
    return repo


def config_error(repo: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(repo, environ={} if environ is None else environ)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_minimal_file_gets_defaults_and_paths_relative_to_the_repo(tmp_path) -> None:
    repo = write_config(tmp_path / "repo", "project: shop\n")
    config = load_config(repo, environ={})
    assert config.project == "shop"
    assert config.repo_path == repo.resolve()
    assert config.resolve_url(config.registry.url) == "sqlite:///" + str(
        repo.resolve() / ".almanac" / "registry.db"
    )
    assert config.resolve_path("data/offline") == repo.resolve() / "data" / "offline"
    assert config.resolve_path("/abs/x") == Path("/abs/x")
    assert config.resolve_url("postgresql://h/db") == "postgresql://h/db"
    assert config.offline.engine == "duckdb"
    assert config.offline.section("duckdb") == {}


def test_the_starter_config_is_valid(tmp_path) -> None:
    from almanac.starter import TEMPLATE

    repo = write_config(tmp_path / "repo", (TEMPLATE / "almanac.yaml").read_text())
    config = load_config(repo, environ={})
    assert config.project == "streaming"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("project: shop\nbogus: 1\n", "'bogus': unknown setting"),
        ("project: shop\nonline:\n  urll: redis://x\n", "'online.urll': unknown setting"),
        ("project: shop\nregistry:\n  path: x.db\n", "'registry.path': unknown setting"),
    ],
)
def test_an_unknown_key_is_named(tmp_path, text, key) -> None:
    message = config_error(write_config(tmp_path / "repo", text))
    assert key in message
    assert "almanac.yaml" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("project: shop\noffline:\n  dukdb:\n    threads: 2\n", "'offline.dukdb'"),
        ("project: shop\noffline:\n  duckdb: 4\n", "'offline.duckdb'"),
        ("project: shop\nonline:\n  timeout_seconds: fast\n", "'online.timeout_seconds'"),
        ("project: shop\nonline:\n  timeout_seconds: 0\n", "'online.timeout_seconds'"),
        ("project: shop\nregistry:\n  refresh_seconds: -1\n", "'registry.refresh_seconds'"),
        ("project: shop\noffline:\n  engine: oracle\n", "'offline.engine'"),
        ("project: shop\nonline: redis://x\n", "'online'"),
        ("project: shop\nserver:\n  api_keys: secret\n", "'server.api_keys'"),
        ("project: my shop\n", "'project'"),
        ("project: x'; DROP TABLE t\n", "'project'"),
        ("registry:\n  url: sqlite:///r.db\n", "'project'"),
    ],
)
def test_a_wrong_type_or_value_is_named(tmp_path, text, key) -> None:
    assert key in config_error(write_config(tmp_path / "repo", text))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("project: [unclosed\n", "not valid YAML"), ("- project\n", "mapping")],
)
def test_a_file_that_is_not_a_mapping_is_rejected(tmp_path, text, fragment) -> None:
    assert fragment in config_error(write_config(tmp_path / "repo", text))


def test_a_missing_file_says_how_to_create_a_repo(tmp_path) -> None:
    message = config_error(tmp_path)
    assert "almanac.yaml" in message
    assert str(tmp_path.resolve()) in message
    assert "almanac init" in message


FILE = """
project: shop
online:
  url: sqlite:///from_file.db
  timeout_seconds: 5
offline:
  duckdb:
    threads: 2
    memory_limit: 1GB
"""


def duckdb_settings(config):
    from almanac.offline.duckdb.engine import DuckDBSettings

    return config.backend_settings("offline", "duckdb", DuckDBSettings)


def test_environment_overrides_win_over_the_file(tmp_path) -> None:
    repo = write_config(tmp_path / "repo", FILE)
    environ = {
        "ALMANAC_ONLINE_URL": "redis://127.0.0.1:6390/3",
        "ALMANAC_OFFLINE_DUCKDB_THREADS": "8",
        "ALMANAC_PROJECT": "shop_staging",
    }
    config = load_config(repo, environ=environ)
    assert config.online.url == "redis://127.0.0.1:6390/3"
    assert duckdb_settings(config).threads == 8
    assert config.project == "shop_staging"
    # Settings the environment does not name keep the file's values.
    assert config.online.timeout_seconds == 5
    assert duckdb_settings(config).memory_limit == "1GB"
    without = load_config(repo, environ={})
    assert (without.online.url, duckdb_settings(without).threads, without.project) == (
        "sqlite:///from_file.db",
        2,
        "shop",
    )


def test_the_process_environment_is_read_by_default(tmp_path, monkeypatch) -> None:
    repo = write_config(tmp_path / "repo", FILE)
    monkeypatch.setenv("ALMANAC_OFFLINE_THREADS", "3")
    monkeypatch.setenv("ALMANAC_REGISTRY_REFRESH_SECONDS", "0.25")
    monkeypatch.setenv("ALMANAC_AUTHOR", "alice")  # not a setting: ignored
    monkeypatch.setenv("ALMANAC_REPO", str(tmp_path))  # not a setting: ignored
    config = load_config(repo)
    assert duckdb_settings(config).threads == 3
    assert config.registry.refresh_seconds == 0.25


def test_environment_values_get_the_setting_type(tmp_path) -> None:
    repo = write_config(tmp_path / "repo", FILE)
    config = load_config(
        repo,
        environ={
            "ALMANAC_SERVER_API_KEYS": "[k1, k2]",
            "ALMANAC_SERVER_MISSING_PLACEHOLDER": "0",
            "ALMANAC_OFFLINE_MEMORY_LIMIT": "null",
            "ALMANAC_ONLINE_KEY_TTL_SECONDS": "86400",
            "ALMANAC_ONLINE_URL": "redis://:p#ss word@127.0.0.1:6379/0",
        },
    )
    assert config.server.api_keys == ["k1", "k2"]
    assert config.server.missing_placeholder == "0"
    assert duckdb_settings(config).memory_limit is None
    assert config.online.key_ttl_seconds == 86400
    assert config.online.url == "redis://:p#ss word@127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("var", "value", "key"),
    [
        ("ALMANAC_ONLINE_TIMEOUT_SECONDS", "-2", "'online.timeout_seconds'"),
        ("ALMANAC_PROJECT", "my-project", "'project'"),
    ],
)
def test_a_bad_environment_value_names_the_key_and_the_variable(tmp_path, var, value, key) -> None:
    repo = write_config(tmp_path / "repo", FILE)
    message = config_error(repo, environ={var: value})
    assert key in message
    assert var in message


# ---- backend sections: each backend validates its own --------------------------------


def test_flat_duckdb_settings_still_mean_the_duckdb_section(tmp_path) -> None:
    repo = write_config(tmp_path / "repo", "project: shop\noffline:\n  threads: 2\n")
    config = load_config(repo, environ={"ALMANAC_OFFLINE_MEMORY_LIMIT": "2GB"})
    assert config.offline.section("duckdb") == {"threads": 2, "memory_limit": "2GB"}
    assert duckdb_settings(config).threads == 2


@pytest.mark.parametrize(
    ("text", "environ", "key"),
    [
        ("project: shop\noffline:\n  duckdb:\n    threads: many\n", {}, "'offline.duckdb.threads'"),
        ("project: shop\noffline:\n  duckdb:\n    threads: 0\n", {}, "'offline.duckdb.threads'"),
        ("project: shop\noffline:\n  duckdb:\n    thread: 2\n", {}, "'offline.duckdb.thread'"),
        ("project: shop\n", {"ALMANAC_OFFLINE_DUCKDB_THREADS": "lots"}, "'offline.duckdb.threads'"),
    ],
)
def test_a_backend_checks_its_own_section_when_it_opens(tmp_path, text, environ, key) -> None:
    from almanac.offline import open_offline_engine

    config = load_config(write_config(tmp_path / "repo", text), environ=environ)
    with pytest.raises(ConfigError) as raised:
        open_offline_engine(config)
    assert key in str(raised.value)
    assert "almanac.yaml" in str(raised.value)


def test_an_unregistered_engine_lists_the_registered_ones(tmp_path) -> None:
    message = config_error(
        write_config(tmp_path / "repo", "project: shop\noffline:\n  engine: oracle\n")
    )
    assert "'offline.engine'" in message
    assert "duckdb" in message and "spark" in message
