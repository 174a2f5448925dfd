"""The feature server: `create_app(repo_or_store)` → an ASGI app (`almanac serve`).

Two layers:

* a FastAPI app declares every endpoint, so `/docs` and `/openapi.json` describe the
  whole API with its Pydantic models, and serves the cold endpoints (catalog, health,
  metrics, and the writes: push and Feast's write-to-online-store, in `writes`);
* `FeatureServer`, a thin ASGI layer in front of it, answers the hot endpoints
  (`POST /get-online-features`, `POST /context`, `GET /entities/{entity}/{key}`, and
  `POST /push`, which many pushers make hot too) itself: measured on 2 cores, FastAPI's per-request machinery (routing, dependency
  solving, its middleware stack) costs about as much as the whole online read. Both
  paths call the same handler functions (`handlers`), errors map in one place
  (`errors`), and `create_app(fast_path=False)` serves everything through FastAPI (the
  tests check that the two give identical answers).

The same layer authenticates (`auth`, a replaceable hook), refuses paths that are not
UTF-8 (400), and records metrics for every request, whichever path serves it, under its
route template. Bodies are read by `body` on both paths (bounded in size and time); every
error, the framework's 404 and 405 included, has the body ``{"detail", "error"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError as FastAPIValidationError
from fastapi.responses import Response
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Message, Receive, Scope, Send

from almanac import __version__
from almanac.errors import AccessDeniedError, AlmanacError
from almanac.quality import results
from almanac.security import audit
from almanac.security.access import Principal
from almanac.security.keys import KeyRing
from almanac.security.tokens import TokenVerifier
from almanac.serving import access, handlers, writes
from almanac.serving.access import PRINCIPAL
from almanac.serving.auth import (
    OPEN_PATHS,
    ApiKeyAuth,
    Authenticator,
    RegistryKeyAuth,
    TokenAuth,
    authenticate,
)
from almanac.serving.body import read_body
from almanac.serving.encode import dumps
from almanac.serving.errors import (
    ClientDisconnectedError,
    HttpError,
    InvalidUrlError,
    RequestValidationError,
    TooManyRequestsError,
    UnauthorizedError,
    error_reply,
    status_error,
    storage_full,
)
from almanac.serving.handlers import ServingState
from almanac.serving.metrics import Metrics
from almanac.serving.operations import operations_router
from almanac.serving.quality import quality_router
from almanac.serving.schemas import (
    ContextRequest,
    ContextResponse,
    EntityFeaturesResponse,
    EntityInfo,
    ErrorResponse,
    FeatureInfo,
    FeatureServiceInfo,
    FeatureViewInfo,
    HealthResponse,
    OnlineFeaturesRequest,
    OnlineFeaturesResponse,
    PushRequest,
    PushResponse,
    WriteToOnlineStoreRequest,
    WriteToOnlineStoreResponse,
)
from almanac.store import FeatureStore

log = logging.getLogger("almanac.serving")

JSON = b"application/json"
ENTITY_ROUTE = "/entities/{entity}/{key}"
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in [
        (400, "Malformed JSON, or a path or query string that is not UTF-8"),
        (401, "Missing or invalid API key (when keys are configured)"),
        (403, "No permission grants the action on what was asked (with server.auth)"),
        (404, "Unknown feature, view, service, entity or push source (close names listed)"),
        (413, "Too many entities (server.max_entities) or too large a body"),
        (422, "Invalid request: the message names the field"),
        (429, "Over a per-principal limit (server.limits): see Retry-After"),
        (503, "Online store or registry unavailable"),
    ]
}
_BODY_ERRORS: dict[int | str, dict[str, Any]] = dict(sorted({
    **_ERRORS,
    408: {"model": ErrorResponse, "description": "The request body did not arrive in time"},
}.items()))  # fmt: skip
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_BODY_ERRORS,
    507: {"model": ErrorResponse, "description": "Storage full: the write was refused"},
}

Handler = Callable[..., Awaitable[bytes]]


def create_app(
    store: FeatureStore | str | Path = ".",
    *,
    auth: Authenticator | str | None = "config",
    fast_path: bool = True,
) -> FeatureServer:
    """The ASGI app serving `store` (a FeatureStore or a repo folder).

    `auth`: "config" (default) checks `server.api_keys` when any are set; None turns
    authentication off; any `Authenticator` replaces it."""
    owned = not isinstance(store, FeatureStore)
    store = FeatureStore(store) if not isinstance(store, FeatureStore) else store
    if auth == "config":
        auth = _authenticator(store)
    state = ServingState(store, auth, Metrics())  # type: ignore[arg-type]
    state.metrics.watch_streams(lambda: store.registry.state.status("stream"))
    state.metrics.watch_runs(lambda: store.registry.state.run_summary("materialize"))
    api = _fastapi(state, owned)
    return FeatureServer(api, state, fast_path)


def openapi_schema(api_keys: bool = False) -> dict[str, Any]:
    """The server's OpenAPI schema without a repo (for generated docs): the routes are
    declared against a stub state that no request ever reaches."""
    from types import SimpleNamespace

    stub = SimpleNamespace(auth=ApiKeyAuth(["-"]) if api_keys else None, open_paths=OPEN_PATHS)
    return _fastapi(stub, owned=False).openapi()  # type: ignore[arg-type]


def _authenticator(store: FeatureStore) -> Authenticator | None:
    """What `server.auth` (or the legacy `server.api_keys`) configures."""
    server = store.config.server
    if server.auth is None:
        return ApiKeyAuth(server.api_keys) if server.api_keys else None
    if server.auth.type == "jwt":
        return TokenAuth(TokenVerifier(server.auth, store.config.repo_path))
    keys = KeyRing(store.registry.state, server.auth.refresh_seconds)
    return RegistryKeyAuth(keys, server.api_keys)


def app_from_env() -> FeatureServer:
    """The factory `almanac serve` gives uvicorn (workers import it by name): the repo
    comes from ALMANAC_REPO."""
    return create_app(os.environ.get("ALMANAC_REPO", "."))


class FeatureServer:
    """The ASGI entry point: auth, metrics and the fast path, then FastAPI.

    Metrics label every request with its route template (``/entities/{entity}/{key}``),
    never its path: whatever paths clients send, 401s and 404s included, the number of
    series stays bounded and no key reaches the open `/metrics`. Paths that match no
    route count as ``other``."""

    def __init__(self, api: FastAPI, state: ServingState, fast_path: bool) -> None:
        self.api = api
        self.state = state
        self.fast_path = fast_path
        self._post: dict[str, Handler] = {
            "/get-online-features": handlers.online_features,
            "/context": handlers.context,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan (and websockets, which we do not serve)
            await self.api(scope, receive, send)
            return
        started = time.perf_counter()
        state = self.state
        path, method = scope["path"], scope["method"]
        detail: dict[str, Any] | None = None
        if state.audit is not None and path not in state.open_paths:
            detail = {}
            audit.DETAIL.set(detail)
        principal: Principal | None = None
        # The raw path, so that a key holding an encoded '/' stays one segment.
        raw = (scope.get("raw_path") or path.encode()).split(b"?")[0]
        status = 0
        if state.auth is not None and path not in state.open_paths:
            principal = authenticate(state.auth, scope, state.certificates)
            if principal is None:
                error: HttpError = UnauthorizedError(
                    "missing or invalid API key: send X-API-Key: <key> or Authorization: Bearer <key>",
                    {"www-authenticate": "Bearer"},
                )
                endpoint = self._template(scope, raw)
                status = await self._answer_error(send, error, endpoint)
            else:
                scope.setdefault("state", {})["principal"] = principal
                PRINCIPAL.set(principal)  # this request's task (and the threads it starts)
                try:
                    state.limiter.take(principal.name)
                except TooManyRequestsError as limited:
                    endpoint = self._template(scope, raw)
                    status = await self._answer_error(send, limited, endpoint)
        if status == 0 and (b"%" in raw or not raw.isascii()):
            try:
                unquote_to_bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                # Decoded with replacement characters, it would address another key.
                error = InvalidUrlError("the path is not valid UTF-8 (after %-decoding)")
                endpoint = self._template(scope, raw)
                status = await self._answer_error(send, error, endpoint)
        if status == 0:
            served: str | None = None  # the endpoint, when the fast path answered
            if self.fast_path:
                if method == "POST" and path in self._post:
                    served = path
                    status = await self._serve_body(self._post[path], receive, send, scope)
                elif method == "POST" and path == "/push":  # hot under many pushers too
                    served = path
                    key = _header(scope, b"idempotency-key")
                    push = lambda st, body: writes.push_rows(st, body, key)  # noqa: E731
                    status = await self._serve_body(push, receive, send, scope)
                elif method == "GET" and _is_entity_path(raw):
                    served = ENTITY_ROUTE
                    entity, key = (unquote_to_bytes(p).decode() for p in raw.split(b"/")[2:])
                    status = await self._serve_entity(entity, key, scope, send)
            if served is None:
                status, endpoint = await self._forward(scope, receive, send, raw)
            else:
                endpoint = served
        seconds = time.perf_counter() - started
        state.metrics.observe_request(endpoint, method, status, seconds)
        if detail is not None and state.audit is not None:
            name = None if principal is None else principal.name
            state.audit.request(principal=name, method=method, endpoint=endpoint, status=status, seconds=seconds, detail=detail)  # fmt: skip

    def _template(self, scope: Scope, raw: bytes) -> str:
        """The route template `scope` is for (also when its method is not allowed), else
        "other"."""
        if _is_entity_path(raw):
            return ENTITY_ROUTE
        for route in self.api.router.routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return getattr(route, "path", "other")
        return "other"

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, raw: bytes
    ) -> tuple[int, str]:
        seen = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen[0] = message["status"]
            await send(message)

        await self.api(scope, receive, send_status)
        route = scope.get("route")
        return seen[0], route.path if route is not None else self._template(scope, raw)

    async def _serve_body(
        self, handler: Handler, receive: Receive, send: Send, scope: Scope
    ) -> int:
        endpoint = scope["path"]
        try:
            body = await read_body(scope, receive)
            answer = await handler(self.state, body)
        except ClientDisconnectedError:
            return ClientDisconnectedError.status  # nobody to answer
        except Exception as error:
            return await self._answer_error(send, error, endpoint)
        await _send(send, 200, answer)
        return 200

    async def _serve_entity(self, entity: str, key: str, scope: Scope, send: Send) -> int:
        try:
            query = handlers.parse_query(scope.get("query_string", b""))
            answer = await handlers.entity_features(self.state, entity, key, query)
        except Exception as error:
            return await self._answer_error(send, error, ENTITY_ROUTE)
        await _send(send, 200, answer)
        return 200

    async def _answer_error(self, send: Send, error: BaseException, endpoint: str) -> int:
        status, body, headers = error_reply(error)
        self.state.metrics.observe_error(endpoint, _error_name(error))
        await _send(send, status, body, headers)
        return status


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _is_entity_path(raw: bytes) -> bool:
    """`/entities/<entity>/<key>`, split on the raw path's slashes."""
    parts = raw.split(b"/")
    return len(parts) == 4 and parts[1] == b"entities" and bool(parts[2]) and bool(parts[3])


def _error_name(error: BaseException) -> str:
    if isinstance(error, HttpError):
        return error.error
    return "StorageFullError" if storage_full(error) is not None else type(error).__name__


async def _request_body(request: Request) -> bytes:
    """The body of a request routed through FastAPI, bounded as on the fast path."""
    return await read_body(request.scope, request.receive)


async def _send(
    send: Send, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    raw = [(b"content-type", JSON), (b"content-length", b"%d" % len(body))]
    if headers:
        raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


# ---- the FastAPI app --------------------------------------------------------------------


def _reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _fastapi(state: ServingState, owned: bool) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Load the catalog before serving (a server without one cannot answer), then keep
        # it fresh in the background: requests never wait on the registry.
        catalog = await asyncio.to_thread(state.registry.catalog, True)
        state.metrics.registry_version.set(catalog.version)
        refresher = asyncio.create_task(_refresh_forever(state))
        unobserve = results.observe(state.metrics.observe_expectation)
        try:
            yield
        finally:
            unobserve()
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await state.online.aclose()
            if state.serving_log is not None:
                await asyncio.to_thread(state.serving_log.close)
            if owned:
                state.store.close()

    api = FastAPI(
        title="Almanac feature server",
        version=__version__,
        description="Online features, LLM context, pushes and the catalog of an Almanac repo. "
        "`POST /get-online-features` speaks Feast's feature-server format.",
        lifespan=lifespan,
    )

    async def _almanac_error(request: Request, error: Exception) -> Response:
        route = request.scope.get("route")
        state.metrics.observe_error(getattr(route, "path", "other"), _error_name(error))
        return _reply(*error_reply(error))

    async def _validation_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, FastAPIValidationError)
        detail = [
            {"loc": list(p["loc"]), "msg": p["msg"], "type": p["type"]} for p in error.errors()
        ]
        return await _almanac_error(request, RequestValidationError(detail))

    async def _http_error(request: Request, error: Exception) -> Response:
        # Unknown routes (404) and methods (405): the same body as every other error.
        assert isinstance(error, StarletteHTTPException)
        return await _almanac_error(
            request, status_error(error.status_code, error.detail, dict(error.headers or {}))
        )

    api.add_exception_handler(FastAPIValidationError, _validation_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(AlmanacError, _almanac_error)
    api.add_exception_handler(HttpError, _almanac_error)
    api.add_exception_handler(Exception, _almanac_error)  # bugs: a 500 body, then logged

    def body_of(model: type) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{model.__name__}"}
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}

    @api.post("/get-online-features", response_model=OnlineFeaturesResponse, responses=_BODY_ERRORS,
              openapi_extra=body_of(OnlineFeaturesRequest), tags=["serving"])  # fmt: skip
    async def get_online_features(request: Request) -> Response:
        """Latest feature values for entities, in Feast's columnar format: statuses
        PRESENT, NULL_VALUE, NOT_FOUND or OUTSIDE_MAX_AGE (older than the view's TTL)."""
        return _reply(200, await handlers.online_features(state, await _request_body(request)))

    @api.get(
        ENTITY_ROUTE, response_model=EntityFeaturesResponse, responses=_ERRORS, tags=["serving"]
    )
    async def get_entity(
        request: Request,
        entity: str,
        key: str,
        features: list[str] | None = Query(
            None, description="'view:feature' references; repeat or comma-separate."
        ),
        service: str | None = Query(None, description="A feature service, instead of features."),
        full_feature_names: bool = Query(False),
    ) -> Response:
        """One entity's features as a plain object. The key is typed as the entity
        declares it (int64 keys must be integers). For a composite key, pass `_` as the
        key and every join key as a query parameter named after it:
        `/entities/user_item/_?user_id=8a2f&item_id=42&service=ranker`."""
        query = handlers.parse_query(request.scope.get("query_string", b""))
        return _reply(200, await handlers.entity_features(state, entity, key, query))

    @api.post("/context", response_model=ContextResponse, responses=_BODY_ERRORS,
              openapi_extra=body_of(ContextRequest), tags=["serving"])  # fmt: skip
    async def get_context(request: Request) -> Response:
        """A feature service's values for one entity rendered by its prompt template,
        with raw values, statuses and the age of each value."""
        return _reply(200, await handlers.context(state, await _request_body(request)))

    @api.post("/push", response_model=PushResponse, responses=_WRITE_ERRORS,
              openapi_extra=body_of(PushRequest), tags=["ingestion"])  # fmt: skip
    async def push(request: Request) -> Response:
        """Rows for a push source, validated against every view reading it and written
        all or nothing to the online store, the offline store or both. Takes Feast's
        push body too. With an `Idempotency-Key` header, a retried push counts once."""
        key = request.headers.get("idempotency-key")
        return _reply(200, await writes.push_rows(state, await _request_body(request), key))

    @api.post("/write-to-online-store", response_model=WriteToOnlineStoreResponse,
              responses=_WRITE_ERRORS, openapi_extra=body_of(WriteToOnlineStoreRequest),
              tags=["ingestion"])  # fmt: skip
    async def write_to_online_store(request: Request) -> Response:
        """Feast's endpoint (its `remote` online store writes through it): rows of one
        feature view fed by a push source, validated as a push and written to the
        online store only."""
        body = await _request_body(request)
        return _reply(200, await writes.write_to_online_store(state, body))

    @api.get("/entities", response_model=list[EntityInfo], tags=["catalog"])
    async def entities() -> Response:
        found = [e for e in handlers.list_entities(state.catalog) if access.visible(state, "entity", e["name"])]  # fmt: skip
        return _reply(200, dumps(found))

    @api.get("/feature-views", response_model=list[FeatureViewInfo], tags=["catalog"])
    async def feature_views() -> Response:
        views = [v for v in handlers.list_views(state.catalog) if access.visible(state, "view", v["name"])]  # fmt: skip
        return _reply(200, dumps(views))

    @api.get("/feature-views/{name}", response_model=FeatureViewInfo,
             responses={403: _ERRORS[403], 404: _ERRORS[404]},
             tags=["catalog"])  # fmt: skip
    async def feature_view(name: str) -> Response:
        if access.policy(state) is not None and not (name in state.catalog.all_views() and access.visible(state, "view", name)):  # fmt: skip
            raise AccessDeniedError(f"may not describe feature view '{name}'")
        return _reply(200, dumps(handlers.describe_view(state.catalog, name)))

    @api.get("/feature-services", response_model=list[FeatureServiceInfo], tags=["catalog"])
    async def feature_services() -> Response:
        services = [s for s in handlers.list_services(state.catalog) if access.visible(state, "service", s["name"])]  # fmt: skip
        return _reply(200, dumps(services))

    @api.get("/features", response_model=list[FeatureInfo], tags=["catalog"])
    async def features(
        request: Request,
        q: str | None = Query(None, description="Words to find in name, description, tags, owner."),
    ) -> Response:
        given = len(request.query_params.getlist("q"))
        if given > 1:  # FastAPI would silently keep the last one
            raise RequestValidationError(
                [{"loc": ["query", "q"], "msg": f"given {given} times; give it once",
                  "type": "repeated"}]
            )  # fmt: skip
        found = handlers.search_features(state.catalog, q)
        if access.policy(state) is not None:
            found = [f for f in found if access.visible_feature(state, f["view"], f["feature"])]
        return _reply(200, dumps(found))

    @api.get(
        "/health",
        response_model=HealthResponse,
        responses={503: {"model": HealthResponse}},
        tags=["operations"],
    )
    async def health(request: Request) -> Response:
        """ok, degraded or unavailable, with each store's check. With server.auth on,
        only a caller that authenticates sees the checks (they name addresses, errors)."""
        status, body = await handlers.health(state)
        secured = state.store.config.server.auth is not None and state.auth is not None
        if secured and authenticate(state.auth, request.scope, state.certificates) is None:  # type: ignore[arg-type]
            body = {"status": body["status"]}
        return _reply(status, dumps(body))

    @api.get("/metrics", response_class=Response, tags=["operations"],
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})  # fmt: skip
    async def metrics() -> Response:
        # In a thread: with several workers, rendering reads every worker's files.
        text = await asyncio.to_thread(state.metrics.render)
        return Response(text, media_type=state.metrics.content_type)

    api.include_router(quality_router(state))
    api.include_router(operations_router(state))
    _document(api, state)
    return api


def _document(api: FastAPI, state: ServingState) -> None:
    """Add the request models (read by the handlers, not by FastAPI) and, when keys are
    configured, the API-key schemes to the OpenAPI schema."""
    generate = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        schema = generate()
        requests = (OnlineFeaturesRequest, ContextRequest, PushRequest, WriteToOnlineStoreRequest)
        mode: Literal["validation"] = "validation"
        models = [(m, mode) for m in requests]
        _, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions["$defs"])
        if state.auth is not None:
            unauthorized = {
                "description": _ERRORS[401]["description"],
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                },
            }
            schema["components"]["securitySchemes"] = {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            }
            for path, operations in schema["paths"].items():
                if path not in state.open_paths:
                    for operation in operations.values():
                        operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
                        operation["responses"].setdefault("401", unauthorized)
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


async def _refresh_forever(state: ServingState) -> None:
    """Reload the catalog when an apply lands (checked every registry.refresh_seconds,
    in a thread: the check is a database round trip)."""
    interval = max(state.registry.refresh_seconds, 0.1)
    while True:
        await asyncio.sleep(interval)
        try:
            catalog = await asyncio.to_thread(state.registry.refresh)
        except Exception as error:  # keep serving the last good catalog; /health reports it
            if state.refresh_error is None:
                log.warning("registry refresh failed (serving the last catalog): %s", error)
            state.refresh_error = f"{type(error).__name__}: {error}"
            state.metrics.registry_refresh_errors.inc()
        else:
            state.refresh_error = None
            state.metrics.registry_version.set(catalog.version)
