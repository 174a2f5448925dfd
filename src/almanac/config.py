"""`almanac.yaml`: the feature repo's settings, validated, with environment overrides.

Every setting can be overridden by an environment variable named after its place:
``online.url`` ← ``ALMANAC_ONLINE_URL``, ``offline.memory_limit`` ←
``ALMANAC_OFFLINE_MEMORY_LIMIT``, ``project`` ← ``ALMANAC_PROJECT``. Relative paths
are read from the repo folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from almanac.definitions.base import check_name
from almanac.errors import ConfigError

CONFIG_FILE = "almanac.yaml"
ENV_PREFIX = "ALMANAC_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistryConfig(_Section):
    # sqlite:///relative/or/absolute/path.db, or postgresql://user@host:port/db
    url: str = "sqlite:///.almanac/registry.db"
    # How often a reader checks whether a new apply landed.
    refresh_seconds: float = Field(1.0, ge=0)


class OfflineConfig(_Section):
    engine: Literal["duckdb"] = "duckdb"
    # Where Almanac writes datasets it owns (pushed rows, write_to_offline_store).
    data_path: str = "data/offline"
    memory_limit: str | None = None  # e.g. "4GB"; DuckDB spills to temp_directory beyond it
    temp_directory: str = ".almanac/tmp"
    threads: int | None = Field(None, ge=1)


class OnlineConfig(_Section):
    # sqlite:///path.db (embedded default) or redis://[:password@]host:port/db, rediss:// for TLS
    url: str = "sqlite:///.almanac/online.db"
    timeout_seconds: float = Field(2.0, gt=0)
    # Optional Redis key expiry, to bound memory (values past their TTL are hidden on read anyway).
    key_ttl_seconds: int | None = Field(None, gt=0)
    batch_size: int = Field(50_000, ge=1)


class ServerConfig(_Section):
    api_keys: list[str] = []
    max_entities: int = Field(10_000, ge=1)
    missing_placeholder: str = "unknown"


class RepoConfig(_Section):
    project: str
    registry: RegistryConfig = RegistryConfig()
    offline: OfflineConfig = OfflineConfig()
    online: OnlineConfig = OnlineConfig()
    server: ServerConfig = ServerConfig()
    # Repo modules that hold definitions; by default every *.py file in the repo folder.
    definitions: list[str] | None = None

    # Set by `load_config`, not read from the file.
    repo_path: Path = Field(default=Path("."), exclude=True)

    @field_validator("project")
    @classmethod
    def _project_name(cls, value: str) -> str:
        return check_name(value)

    def resolve_path(self, path: str | Path) -> Path:
        path = Path(path).expanduser()
        return path if path.is_absolute() else self.repo_path / path

    def resolve_url(self, url: str) -> str:
        """Make a sqlite:/// URL's relative path absolute (from the repo folder)."""
        if url.startswith("sqlite:///"):
            return "sqlite:///" + str(self.resolve_path(url.removeprefix("sqlite:///")))
        return url


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Map ALMANAC_SECTION_KEY variables onto the config's nested fields; also return which
    variable set each setting (``{"offline.threads": "ALMANAC_OFFLINE_THREADS"}``)."""
    overrides: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, field in RepoConfig.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            for key, sub in annotation.model_fields.items():
                var = f"{ENV_PREFIX}{name}_{key}".upper()
                if var in environ:
                    overrides.setdefault(name, {})[key] = _env_value(environ[var], sub.annotation)
                    origins[f"{name}.{key}"] = var
        elif name != "repo_path":
            var = f"{ENV_PREFIX}{name}".upper()
            if var in environ:
                overrides[name] = _env_value(environ[var], annotation)
                origins[name] = var
    return overrides, origins


def _env_value(text: str, annotation: Any) -> Any:
    # A text setting takes the variable as it is (a placeholder of "0", a URL with "#");
    # an optional one is unset by "" or "null".
    if annotation is str:
        return text
    if annotation == str | None:
        return None if text.strip() in ("", "null") else text
    # Otherwise YAML parsing gives numbers, booleans and lists their types ("[a, b]", "2.5").
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def load_config(repo_path: str | Path, environ: Mapping[str, str] | None = None) -> RepoConfig:
    """Read and validate `<repo>/almanac.yaml`, then apply environment overrides."""
    repo = Path(repo_path).resolve()
    file = repo / CONFIG_FILE
    if not file.is_file():
        raise ConfigError(f"no {CONFIG_FILE} in {repo} (run `almanac init` to create a repo)")
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        # One line, pointing at the place: "almanac.yaml:3:7: not valid YAML: <problem>".
        mark = getattr(error, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        problem = getattr(error, "problem", None) or str(error).replace("\n", " ")
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a mapping of settings at the top level")
    overrides, origins = _env_overrides(os.environ if environ is None else environ)
    raw = _merge(raw, overrides)
    try:
        config = RepoConfig(**raw)
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            key = ".".join(str(part) for part in problem["loc"])
            message = "unknown setting" if problem["type"] == "extra_forbidden" else problem["msg"]
            origin = next(
                (v for k, v in origins.items() if key == k or key.startswith(k + ".")), None
            )
            problems.append(
                f"'{key}' (set by {origin}): {message}" if origin else f"'{key}': {message}"
            )
        raise ConfigError(f"{file}: " + "; ".join(problems)) from None
    return config.model_copy(update={"repo_path": repo})
