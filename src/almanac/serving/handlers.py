"""What each endpoint does, independent of the web framework.

A handler takes the server state and the raw request parts (body bytes, path and
query values) and returns the body bytes, or raises; `errors.error_reply` turns every
exception into an answer. The FastAPI routes and the server's fast path (see `app`)
both call these functions, so the two cannot disagree.

Nothing here blocks the event loop: online reads go through `OnlineStore.read_async`,
the registry is read from memory (`catalog(check=False)`; a background task refreshes
it), and the health checks run in worker threads with a timeout. The write endpoints
(push, Feast's write-to-online-store) are in `writes`.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from almanac.errors import AccessDeniedError, NotFoundError
from almanac.materialize.jobs import views_to_materialize
from almanac.online.context import check_entity, render_context
from almanac.online.response import OnlineResponse
from almanac.online.retrieval import finish_read, prepare_read
from almanac.quality.parquet_log import retention_of
from almanac.quality.serving_log import ServingLog, log_folder
from almanac.security import audit
from almanac.security.audit import AuditLog
from almanac.serving import access, encode
from almanac.serving.auth import OPEN_PATHS
from almanac.serving.errors import (
    InvalidUrlError,
    PayloadTooLargeError,
    RequestValidationError,
    TooManyRequestsError,
    parse_body,
)
from almanac.serving.group_commit import GroupCommit
from almanac.serving.limits import RateLimiter
from almanac.serving.metrics import Metrics
from almanac.serving.monitoring import FreshnessMonitor
from almanac.serving.schemas import INT64_MAX, INT64_MIN, ContextRequest, OnlineFeaturesRequest

if TYPE_CHECKING:
    from almanac.config import ServerConfig
    from almanac.ports.online import OnlineStore
    from almanac.registry.catalog import Catalog
    from almanac.registry.store import CachedRegistry
    from almanac.serving.auth import Authenticator
    from almanac.store import FeatureStore

_INT = re.compile(r"-?[0-9]+")
# /health reports storage as full below this much free space where the stores write.
STORAGE_FLOOR_BYTES = 1024 * 1024


class ServingState:
    """What the handlers share: the store, its cached registry, metrics and auth."""

    def __init__(self, store: FeatureStore, auth: Authenticator | None, metrics: Metrics) -> None:
        self.store = store
        self.registry: CachedRegistry = store.registry
        self.online: OnlineStore = store.online
        self.project = store.project
        self.config: ServerConfig = store.config.server
        self.timeout_seconds = store.config.online.timeout_seconds
        self.auth = auth
        auth_config = store.config.server.auth
        # A client certificate is a principal (mutual TLS); /metrics needs one too.
        self.certificates = auth_config is not None and auth_config.client_certificates
        protect_metrics = auth_config is not None and auth_config.metrics == "authenticated"
        self.open_paths = OPEN_PATHS - {"/metrics"} if protect_metrics else OPEN_PATHS
        self.metrics = metrics
        self.refresh_error: str | None = None  # the last background refresh's failure
        # The last write's storage-full error, until a write succeeds (`writes`).
        self.storage_error: str | None = None
        self.offline_lock = threading.Lock()
        self.limiter = RateLimiter(store.config.server.limits)
        audit_config = store.config.audit
        self.audit = (
            None if audit_config is None else AuditLog(audit_config, store.config.repo_path)
        )
        self.freshness = FreshnessMonitor(store, metrics)
        self._push_groups: GroupCommit | None = None
        rate = store.config.server.log_sample_rate
        keep = retention_of(store.config.offline.log_retention_days)
        self.serving_log = (
            ServingLog(log_folder(store.config), rate, retention=keep) if rate > 0 else None
        )
        config = store.config
        # Where writes land on local disks: the offline data path, a SQLite online file.
        self.storage_paths = [config.resolve_path(config.offline.data_path)]
        if config.online.url.startswith("sqlite:///"):
            online = config.resolve_url(config.online.url).removeprefix("sqlite:///")
            self.storage_paths.append(Path(online).parent)

    @property
    def catalog(self) -> Catalog:
        # Never a database round trip on a request: the background task refreshes it.
        return self.registry.catalog(check=False)

    def push_groups(self, catalog: Catalog) -> GroupCommit:
        """The group commit of concurrent pushes (`almanac.serving.group_commit`)."""
        if self._push_groups is None:
            from almanac.ingest.push import push

            def write(source: str, df: Any, to: str) -> int:
                with self.offline_lock:  # the engine is created on first use; once
                    self.store.offline  # noqa: B018
                return push(self.store, source, df, to, catalog=self.catalog)

            def groupable(source: str) -> bool:
                views = self.catalog.all_views().values()
                return not any(v.source == source and v.expectations and v.on_violation == "quarantine" for v in views)  # fmt: skip

            self._push_groups = GroupCommit(write, groupable)
        return self._push_groups


# ---- online features --------------------------------------------------------------------


async def read_online(
    state: ServingState,
    features: Sequence[str] | None,
    entity_rows: Mapping[str, Sequence[Any]],
    feature_service: str | None,
    full_feature_names: bool,
    endpoint: str,
    request_data: Mapping[str, Any] | None = None,
) -> OnlineResponse:
    """The async online read shared by every endpoint (one round trip to the store)."""
    count = max((len(column) for column in entity_rows.values()), default=0)
    if count > state.config.max_entities:
        raise PayloadTooLargeError(
            f"{count:,} entities in one request; the limit is server.max_entities = "
            f"{state.config.max_entities:,}: split the request"
        )
    cap = state.config.limits.entities_per_request
    if cap is not None and count > cap:
        raise TooManyRequestsError(
            f"{count:,} entities in one request; the limit per principal is "
            f"server.limits.entities_per_request = {cap:,}: split the request",
            {"retry-after": "0"},
        )
    state.metrics.observe_entities(endpoint, count)
    try:
        plan, keys, requests, request = prepare_read(
            state.catalog, features, entity_rows, feature_service, full_feature_names,
            request_data,
        )  # fmt: skip
    except NotFoundError as error:
        if access.policy(state) is not None:  # a denial must not list what exists
            raise AccessDeniedError(f"may not read_online {error.kind} '{error.name}'") from None
        raise
    if audit.DETAIL.get() is not None:
        audit.note(action="read_online", entities=count, features=plan.labels)
    access.require_features(state, "read_online", plan.features)
    started = time.perf_counter()
    rows = await state.online.read_async(state.project, requests)
    state.metrics.observe_store(state.online.backend, time.perf_counter() - started)
    response = finish_read(plan, keys, rows, None, request, state.store.repo_path)
    if state.serving_log is not None and response.read_time is not None:
        state.serving_log.record(
            response, response.read_time, features, feature_service, full_feature_names
        )
    return response


async def online_features(state: ServingState, body: bytes) -> bytes:
    request = parse_body(OnlineFeaturesRequest, body)
    response = await read_online(
        state, request.features, request.entities, request.feature_service,
        request.full_feature_names, "/get-online-features", request.request_data,
    )  # fmt: skip
    if request.transformed:
        response = state.store.transform_response(
            response, request.feature_service, request.transforms_version
        )
    return encode.feast_response(response)


async def entity_features(
    state: ServingState, entity_name: str, key: str, query: Sequence[tuple[str, str]]
) -> bytes:
    """`GET /entities/{entity}/{key}`: one entity's features as a plain object.

    Single-key entities put the key in the path; composite entities pass ``_`` as the
    key and each join key as a query parameter named after it
    (``/entities/user_item/_?user_id=8a2f&item_id=42&service=ranker``)."""
    catalog = state.catalog
    entity = catalog.entities.get(entity_name)
    if entity is None:
        raise NotFoundError("entity", entity_name, catalog.entities)
    features: list[str] = []
    service = None
    full_feature_names = False
    given: dict[str, str] = {}
    for name, value in query:
        if name == "features":
            features += [ref.strip() for ref in value.split(",") if ref.strip()]
        elif name == "service":
            service = value
        elif name == "full_feature_names":
            full_feature_names = _query_bool(name, value)
        else:
            given[name] = value
    join_keys = entity.join_keys
    if key != "_":
        if len(join_keys) > 1:
            message = (
                f"entity '{entity.name}' has a composite key ({', '.join(join_keys)}): pass "
                "'_' as the key and each join key as a query parameter"
            )
            raise RequestValidationError([_problem(["path", "key"], message, "composite_key")])
        given[next(iter(join_keys))] = key
    rows: dict[str, list[Any]] = {}
    for name, dtype in join_keys.items():
        where = ["path", "key"] if key != "_" else ["query", name]
        if name not in given:
            raise RequestValidationError(
                [_problem(where, f"join key '{name}' is missing", "missing")]
            )
        rows[name] = [_typed_key(name, dtype, given[name], where)]
    response = await read_online(
        state, features or None, rows, service, full_feature_names, "/entities/{entity}/{key}"
    )
    return encode.entity_object(response)


def _typed_key(name: str, dtype: str, text: str, where: list[str]) -> int | str:
    if dtype != "int64":
        return text
    if _INT.fullmatch(text) and INT64_MIN <= int(text) <= INT64_MAX:
        return int(text)
    raise RequestValidationError(
        [_problem(where, f"join key '{name}' must be an int64, got {text!r}", "int_parsing")]
    )


def _query_bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise RequestValidationError(
        [_problem(["query", name], f"not a boolean: {value!r}", "bool_parsing")]
    )


def _problem(loc: list[str], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def parse_query(raw: bytes) -> list[tuple[str, str]]:
    """A query string's parameters; 400 when it is not UTF-8 (decoding with replacement
    characters would address another key than the one sent)."""
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise InvalidUrlError("the query string is not valid UTF-8 (after %-decoding)") from None


# ---- context ----------------------------------------------------------------------------


async def context(state: ServingState, body: bytes) -> bytes:
    request = parse_body(ContextRequest, body)
    check_entity(request.entity)
    service = state.catalog.service(request.feature_service)
    rows = {key: [value] for key, value in request.entity.items()}
    response = await read_online(state, None, rows, service.name, False, "/context", request.request_data)  # fmt: skip
    placeholder = (
        state.config.missing_placeholder if request.placeholder is None else request.placeholder
    )
    return encode.context_body(render_context(service, request.entity, response, placeholder))


# ---- catalog ----------------------------------------------------------------------------


def list_entities(catalog: Catalog) -> list[dict[str, Any]]:
    return [
        {"name": e.name, "join_keys": e.join_keys, "description": e.description,
         "owner": e.owner, "tags": e.tags}
        for e in sorted(catalog.entities.values(), key=lambda e: e.name)
    ]  # fmt: skip


def describe_view(catalog: Catalog, name: str) -> dict[str, Any]:
    view = catalog.view(name)
    spec = view.to_spec()
    return {
        "name": view.name,
        "entities": list(view.entities),
        "join_keys": catalog.join_keys(view),
        "source": view.source,
        "features": [
            {"name": f.name, "dtype": f.dtype, "description": f.description, "tags": f.tags}
            for f in view.features
        ],
        "ttl": spec.get("ttl"),
        "online": view.online,
        "owner": view.owner,
        "description": view.description,
        "tags": view.tags,
        "materialize_every": spec.get("materialize_every"),
    }


def list_views(catalog: Catalog) -> list[dict[str, Any]]:
    return [describe_view(catalog, name) for name in sorted(catalog.all_views())]


def list_services(catalog: Catalog) -> list[dict[str, Any]]:
    return [
        {"name": s.name, "features": list(s.features), "description": s.description,
         "owner": s.owner, "tags": s.tags, "prompt_template": s.prompt_template}
        for s in sorted(catalog.services.values(), key=lambda s: s.name)
    ]  # fmt: skip


def search_features(catalog: Catalog, q: str | None) -> list[dict[str, Any]]:
    """Features whose name, description, tags (keys or values), view or owner contain
    every word of `q` (case-insensitive); all features without `q`."""
    words = (q or "").lower().split()
    found = []
    for view in sorted(catalog.all_views().values(), key=lambda v: v.name):
        for field in view.features:
            haystack = " ".join(
                [view.name, field.name, f"{view.name}:{field.name}", field.description,
                 view.description, view.owner, *_tag_words(field.tags), *_tag_words(view.tags)]
            ).lower()  # fmt: skip
            if all(word in haystack for word in words):
                found.append(
                    {"name": f"{view.name}:{field.name}", "view": view.name, "feature": field.name,
                     "dtype": field.dtype, "description": field.description, "tags": field.tags,
                     "owner": view.owner, "view_tags": view.tags}
                )  # fmt: skip
    return found


def _tag_words(tags: dict[str, str]) -> list[str]:
    return [f"{k}:{v} {k}={v}" for k, v in tags.items()]


# ---- health -----------------------------------------------------------------------------


async def health(state: ServingState) -> tuple[int, dict[str, Any]]:
    """Registry and online store reachable (each within the online timeout)?"""
    timeout = state.timeout_seconds
    registry: dict[str, Any] = {"status": "ok"}
    online: dict[str, Any] = {"status": "ok"}
    version = None
    try:
        version = await asyncio.wait_for(asyncio.to_thread(state.registry.backend.version), timeout)
    except Exception as error:  # any failure means "not healthy", with the reason
        registry = {"status": "unavailable", "detail": _reason(error)}
    else:
        if state.refresh_error is not None:
            registry = {
                "status": "unavailable",
                "detail": f"refresh failing: {state.refresh_error}",
            }
    try:
        await asyncio.wait_for(state.online.ping_async(), timeout)
    except Exception as error:
        online = {"status": "unavailable", "detail": _reason(error)}
    else:
        online = await materialization_check(state)
    storage = await storage_check(state)
    fresh = await state.freshness.check(timeout)
    ok = registry["status"] == "ok" and online["status"] != "unavailable"
    degraded = storage["status"] != "ok" or online["status"] != "ok" or fresh["status"] != "ok"
    status = "unavailable" if not ok else "degraded" if degraded else "ok"
    body = {
        "status": status,
        "registry": registry,
        "online_store": online,
        "storage": storage,
        "freshness": fresh,
        "registry_version": version,
    }
    return (200 if ok else 503), body


async def materialization_check(state: ServingState) -> dict[str, Any]:
    """The online store answers: does it hold every batch view's values? A store that
    lost its data (a Redis restarted without persistence) is found out here, instead of
    silently answering NOT_FOUND: "stale", naming the views, until they are materialized."""
    try:
        missing = await asyncio.wait_for(
            asyncio.to_thread(views_to_materialize, state.catalog, state.online, state.project),
            state.timeout_seconds,
        )
    except Exception as error:
        return {"status": "unavailable", "detail": _reason(error)}
    if not missing:
        return {"status": "ok"}
    return {
        "status": "stale",
        "detail": "run `almanac materialize-incremental`: "
        + "; ".join(f"{view}: {why}" for view, why in sorted(missing.items())),
        "views": missing,
    }


async def storage_check(state: ServingState) -> dict[str, Any]:
    """Full after a write refused for lack of space (until one succeeds), or when a disk
    the stores write to has less than STORAGE_FLOOR_BYTES free. Reads are still served:
    /health says "degraded" with 200, not 503."""
    if state.storage_error is not None:
        return {"status": "full", "detail": f"the last write was refused: {state.storage_error}"}
    for path in state.storage_paths:
        try:
            free = await asyncio.wait_for(
                asyncio.to_thread(_free_bytes, path), state.timeout_seconds
            )
        except (OSError, TimeoutError):
            continue  # a disk we cannot measure is not known to be full
        if free < STORAGE_FLOOR_BYTES:
            return {"status": "full", "detail": f"{free:,} bytes free on the disk of {path}"}
    return {"status": "ok"}


def _free_bytes(path: Path) -> int:
    while not path.exists() and path.parent != path:  # not created yet: its disk
        path = path.parent
    return shutil.disk_usage(path).free


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer within the timeout"
    return f"{type(error).__name__}: {error}"
