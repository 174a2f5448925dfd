"""`almanac.yaml`: the feature repo's settings, validated, with environment overrides.

Every setting can be overridden by an environment variable named after its place:
``online.url`` ← ``ALMANAC_ONLINE_URL``, ``offline.duckdb.memory_limit`` ←
``ALMANAC_OFFLINE_DUCKDB_MEMORY_LIMIT``, ``project`` ← ``ALMANAC_PROJECT``. Relative
paths are read from the repo folder.

A backend's own settings live in a section named after it (``offline: {engine: spark,
spark: {...}}``) and are validated by the backend's own model (see `almanac.backends`);
this module knows none of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from almanac import backends
from almanac.definitions.base import check_name
from almanac.definitions.permission import check_principal
from almanac.errors import ConfigError

CONFIG_FILE = "almanac.yaml"
ENV_PREFIX = "ALMANAC_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_M = TypeVar("_M", bound=BaseModel)


class RegistryConfig(_Section):
    # sqlite:///relative/or/absolute/path.db, or postgresql://user@host:port/db
    url: str = "sqlite:///.almanac/registry.db"
    # How often a reader checks whether a new apply landed.
    refresh_seconds: float = Field(1.0, ge=0)


class _BackendSections(BaseModel):
    """A role's section: its own settings, plus one section per backend, named after it
    and validated by that backend's model when the config is read (`load_config`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def section(self, name: str) -> dict[str, Any]:
        """Backend `name`'s own settings, as written (empty when not given)."""
        value = (self.model_extra or {}).get(name)
        return dict(value) if isinstance(value, dict) else {}


# Settings of the DuckDB engine that were once written flat under `offline:`.
_DUCKDB_FLAT = ("memory_limit", "temp_directory", "threads")


class OfflineConfig(_BackendSections):
    engine: str = "duckdb"  # a registered offline backend: duckdb, spark, or a plug-in's
    # Where Almanac writes datasets it owns (pushed rows, write_to_offline_store).
    data_path: str = "data/offline"
    # How long the logs Almanac keeps under data_path for quality (the serving log, the
    # recorded expectation results) are kept; 0 keeps them forever.
    log_retention_days: int = Field(30, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _flat_duckdb_settings(cls, data: Any) -> Any:
        # `offline: {threads: 4}` keeps working: it means `offline: {duckdb: {threads: 4}}`.
        if isinstance(data, dict) and any(key in data for key in _DUCKDB_FLAT):
            data = dict(data)
            section = dict(data.get("duckdb") or {})
            for key in _DUCKDB_FLAT:
                if key in data:
                    section.setdefault(key, data.pop(key))
            data["duckdb"] = section
        return data


class OnlineConfig(_BackendSections):
    # sqlite:///path.db (embedded default) or redis://[:password@]host:port/db, rediss:// for TLS
    url: str = "sqlite:///.almanac/online.db"
    timeout_seconds: float = Field(2.0, gt=0)
    # Optional Redis key expiry, to bound memory (values past their TTL are hidden on read anyway).
    key_ttl_seconds: int | None = Field(None, gt=0)
    batch_size: int = Field(50_000, ge=1)
    # The share of entities whose feature vectors this process's SDK reads
    # (`get_online_features`) log for the skew report (0: off); the feature server's own
    # reads follow `server.log_sample_rate`.
    log_sample_rate: float = Field(0.0, ge=0.0, le=1.0)

    @property
    def scheme(self) -> str:
        """The URL's scheme, which names the online backend (sqlite, redis, rediss ...)."""
        return self.url.split("://", 1)[0].lower() if "://" in self.url else ""


class AuthConfig(_Section):
    """How the server authenticates (docs/security.md). With it set, every request needs
    a principal, and everything no `Permission` grants is denied."""

    type: Literal["api_keys", "jwt"] = "api_keys"  # keys of `almanac keys create`, or tokens
    # JWT: where the signing keys come from (one of), and what a token must say.
    jwks_url: str | None = None
    public_key: str | None = None  # a PEM file
    secret: str | None = None  # HS256 and co.; ${ENV} in almanac.yaml or ALMANAC_SERVER_AUTH_SECRET
    algorithms: list[str] = ["RS256"]
    audience: str | None = None
    issuer: str | None = None
    subject_claim: str = "sub"  # dotted paths into the claims (Keycloak: realm_access.roles)
    roles_claim: str | None = "roles"
    groups_claim: str | None = "groups"
    leeway_seconds: int = Field(30, ge=0)
    refresh_seconds: float = Field(1.0, gt=0)  # how soon a revoked API key stops working
    # Mutual TLS: a request without key or token is its client certificate's subject
    # (cert:<CN>, group:<OU>); needs `almanac serve --ssl-client-cert optional|required`.
    client_certificates: bool = False
    metrics: Literal["open", "authenticated"] = "open"  # who may scrape /metrics

    @field_validator("algorithms")
    @classmethod
    def _no_none(cls, values: list[str]) -> list[str]:
        if not values or any(v.lower() == "none" for v in values):
            raise ValueError("name the signing algorithms to accept (e.g. [RS256]); 'none' is never accepted")  # fmt: skip
        return values


class LimitsConfig(_Section):
    """Per principal, in each server process: requests a second (a token bucket that
    holds `burst`), and entities in one request; beyond them, 429 with Retry-After."""

    requests_per_second: float | None = Field(None, gt=0)
    burst: int = Field(100, ge=1)
    entities_per_request: int | None = Field(None, ge=1)


class AuditConfig(_Section):
    """The audit log: the server's requests and the SDK's and CLI's registry,
    materialization and write operations, one JSON line each."""

    path: str = "audit/almanac.jsonl"  # relative to the repo; rotated at max_bytes
    max_bytes: int = Field(100 * 1024 * 1024, ge=1024)
    backups: int = Field(5, ge=0)


class AccessConfig(_Section):
    """Who this checkout's SDK and CLI act as. With `principal` set, their operations
    (apply, materialize, reads, pushes) are checked against the applied permissions,
    as the server checks its callers' (docs/security.md says what that protects)."""

    principal: str | None = None  # role:etl, user:alice ...; or ALMANAC_ACCESS_PRINCIPAL
    identities: list[str] = []  # more identities of the same principal (group:risk)

    @field_validator("principal")
    @classmethod
    def _principal(cls, value: str | None) -> str | None:
        return None if value is None else check_principal(value, glob=False)

    @field_validator("identities", mode="before")
    @classmethod
    def _identities(cls, values: Any) -> Any:
        if isinstance(values, str):  # ALMANAC_ACCESS_IDENTITIES=group:risk,group:privacy
            values = [v.strip() for v in values.split(",") if v.strip()]
        if isinstance(values, list):
            for value in values:
                check_principal(str(value), glob=False)
        return values


class ServerConfig(_Section):
    api_keys: list[str] = []
    auth: AuthConfig | None = None
    limits: LimitsConfig = LimitsConfig()
    max_entities: int = Field(10_000, ge=1)
    missing_placeholder: str = "unknown"
    # The share of entities whose served feature vectors are logged for the skew report
    # (0: off; sampled by entity key, so an entity is logged always or never).
    log_sample_rate: float = Field(0.0, ge=0.0, le=1.0)


class RepoConfig(_Section):
    project: str
    registry: RegistryConfig = RegistryConfig()
    offline: OfflineConfig = OfflineConfig()
    online: OnlineConfig = OnlineConfig()
    server: ServerConfig = ServerConfig()
    access: AccessConfig = AccessConfig()
    audit: AuditConfig | None = None
    # Repo modules that hold definitions; by default every *.py file in the repo folder.
    definitions: list[str] | None = None

    # Set by `load_config`, not read from the file.
    repo_path: Path = Field(default=Path("."), exclude=True)

    @field_validator("project")
    @classmethod
    def _project_name(cls, value: str) -> str:
        return check_name(value)

    @model_validator(mode="before")
    @classmethod
    def _server_audit(cls, data: Any) -> Any:
        # `server: {audit: ...}`, where the audit log was first configured, keeps working.
        server = data.get("server") if isinstance(data, dict) else None
        if isinstance(server, dict) and "audit" in server:
            data = {**data, "server": {k: v for k, v in server.items() if k != "audit"}}
            data.setdefault("audit", server["audit"])
        return data

    def resolve_path(self, path: str | Path) -> Path:
        path = Path(path).expanduser()
        return path if path.is_absolute() else self.repo_path / path

    def backend_settings(self, role: backends.Role, name: str, model: type[_M]) -> _M:
        """Backend `name`'s section of `role` (``offline.spark``), validated by the
        backend's own `model`; a ConfigError names each bad setting by its place."""
        section = getattr(self, role).section(name)
        try:
            return model.model_validate(section)
        except ValidationError as error:
            raise ConfigError(
                f"{self.repo_path / CONFIG_FILE}: " + _problems(error, f"{role}.{name}.", {})
            ) from None

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
        if isinstance(annotation, type) and issubclass(annotation, _Section | _BackendSections):
            for key, sub in annotation.model_fields.items():
                var = f"{ENV_PREFIX}{name}_{key}".upper()
                if var in environ:
                    overrides.setdefault(name, {})[key] = _env_value(environ[var], sub.annotation)
                    origins[f"{name}.{key}"] = var
            if issubclass(annotation, _BackendSections):
                _backend_env(name, environ, overrides, origins)
        elif name != "repo_path":
            var = f"{ENV_PREFIX}{name}".upper()
            if var in environ:
                overrides[name] = _env_value(environ[var], annotation)
                origins[name] = var
    return overrides, origins


def _backend_env(
    role: str, environ: Mapping[str, str], overrides: dict[str, Any], origins: dict[str, str]
) -> None:
    """ALMANAC_OFFLINE_SPARK_MASTER → offline.spark.master, for every registered backend
    of the role (types are the backend's to check: values are parsed as YAML)."""
    if role == "offline":  # the DuckDB settings once written flat: ALMANAC_OFFLINE_THREADS
        for key in _DUCKDB_FLAT:
            var = f"{ENV_PREFIX}{role}_{key}".upper()
            if var in environ:
                section = overrides.setdefault(role, {}).setdefault("duckdb", {})
                section[key] = _env_value(environ[var], Any)
                origins[f"{role}.duckdb.{key}"] = var
    for backend in backends.names(role):  # type: ignore[arg-type]
        prefix = f"{ENV_PREFIX}{role}_{backend}_".upper()
        for var, text in environ.items():
            if var.startswith(prefix) and len(var) > len(prefix):
                key = var.removeprefix(prefix).lower()
                section = overrides.setdefault(role, {}).setdefault(backend, {})
                section[key] = _env_value(text, Any)
                origins[f"{role}.{backend}.{key}"] = var


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
            merged[key] = _merge(merged[key], value)
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
        raise ConfigError(f"{file}: " + _problems(error, "", origins)) from None
    _check_sections(config, file)
    return config.model_copy(update={"repo_path": repo})


def _problems(error: ValidationError, prefix: str, origins: Mapping[str, str]) -> str:
    """Pydantic's errors as one line: each setting by its place, and what set it."""
    problems = []
    for problem in error.errors():
        key = prefix + ".".join(str(part) for part in problem["loc"])
        message = "unknown setting" if problem["type"] == "extra_forbidden" else problem["msg"]
        origin = next((v for k, v in origins.items() if key == k or key.startswith(k + ".")), None)
        problems.append(
            f"'{key}' (set by {origin}): {message}" if origin else f"'{key}': {message}"
        )
    return "; ".join(problems)


def _check_sections(config: RepoConfig, file: Path) -> None:
    """Each backend section must name a registered backend and be a mapping; what is in
    it is the backend's to check, when it is opened (no backend is imported here)."""
    problems = []
    roles: tuple[backends.Role, ...] = ("offline", "online")
    for role in roles:
        section = getattr(config, role)
        known = backends.names(role)
        for name, value in (section.model_extra or {}).items():
            if name not in known:
                problems.append(
                    f"'{role}.{name}': unknown setting (backend sections: {', '.join(known)})"
                )
            elif not isinstance(value, dict):
                problems.append(f"'{role}.{name}': expected a mapping of {name}'s settings")
    if config.offline.engine not in backends.names("offline"):
        engines = ", ".join(backends.names("offline"))
        problems.append(
            f"'offline.engine': unknown engine '{config.offline.engine}' (registered: {engines})"
        )
    if problems:
        raise ConfigError(f"{file}: " + "; ".join(problems))
