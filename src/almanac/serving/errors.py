"""The one place where errors become HTTP answers.

Almanac's own errors map by type (`STATUS`); request problems found by the server
itself (malformed JSON, an invalid body, too many entities, a missing API key, a body
that never arrives) are `HttpError`s. A full disk is 507 whichever layer noticed it
(`StorageFullError`, or an OSError with ENOSPC/EDQUOT from a library below), logged on
one line. Anything else is a bug: 500, logged with its traceback, and the answer says
no more than that (no internals leak to clients). Every error body has the same shape:
``{"detail": ..., "error": <name>}``.
"""

from __future__ import annotations

import errno
import logging
from http import HTTPStatus
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from almanac.errors import (
    AccessDeniedError,
    AlmanacError,
    ConcurrentApplyError,
    ConfigError,
    DefinitionError,
    InputError,
    NotFoundError,
    RegistryError,
    RepoError,
    StorageFullError,
    StoreUnavailableError,
)

log = logging.getLogger("almanac.serving")

# Most specific first. DefinitionError is 422: a definition that cannot serve this
# request (a prompt template failing on these values), not a server crash.
STATUS: list[tuple[type[AlmanacError], int]] = [
    (AccessDeniedError, 403),
    (NotFoundError, 404),
    (InputError, 422),
    (StorageFullError, 507),
    (StoreUnavailableError, 503),
    (ConcurrentApplyError, 409),
    (RegistryError, 409),
    (DefinitionError, 422),
    (ConfigError, 500),
    (RepoError, 500),
    (AlmanacError, 500),
]

Model = TypeVar("Model", bound=BaseModel)


class HttpError(Exception):
    """A request problem found by the server: status, detail and an error name."""

    status = 400
    error = "BadRequest"

    def __init__(self, detail: str | list[dict[str, Any]], headers: dict[str, str] | None = None):
        super().__init__(detail if isinstance(detail, str) else "invalid request")
        self.detail = detail
        self.headers = headers or {}


class MalformedBodyError(HttpError):
    status, error = 400, "MalformedBody"


class RequestValidationError(HttpError):
    status, error = 422, "RequestValidationError"


class UnauthorizedError(HttpError):
    status, error = 401, "Unauthorized"


class PayloadTooLargeError(HttpError):
    status, error = 413, "PayloadTooLarge"


class TooManyRequestsError(HttpError):
    status, error = 429, "TooManyRequests"


class RequestTimeoutError(HttpError):
    status, error = 408, "RequestTimeout"


class InvalidUrlError(HttpError):
    """A path or query string that is not UTF-8 once %-decoded."""

    status, error = 400, "InvalidUrl"


class ClientDisconnectedError(HttpError):
    """The client went away before sending its whole body (nginx's 499, for metrics)."""

    status, error = 499, "ClientClosedRequest"


_FULL = {errno.ENOSPC, errno.EDQUOT}


def storage_full(error: BaseException) -> StorageFullError | None:
    """`error` as a StorageFullError when it (or what caused it) says the disk is full."""
    seen: BaseException | None = error
    for _ in range(8):  # the cause chain, bounded
        if seen is None:
            return None
        if isinstance(seen, StorageFullError):
            return seen
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return StorageFullError(
                f"storage full: {seen.strerror or seen}; free space where the stores "
                "keep their data (offline.data_path, the online store) and retry"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def status_error(status: int, detail: Any, headers: dict[str, str] | None = None) -> HttpError:
    """An HTTP error raised by the framework itself (unknown route 404, 405) in the
    shape of every other error: its name is the status phrase (NotFound,
    MethodNotAllowed)."""
    error = HttpError(str(detail), headers)
    error.status = status
    try:
        error.error = HTTPStatus(status).phrase.title().replace(" ", "").replace("-", "")
    except ValueError:
        error.error = f"Http{status}"
    return error


def error_reply(error: BaseException) -> tuple[int, bytes, dict[str, str]]:
    """Status, JSON body and extra headers for any exception raised by a handler."""
    if isinstance(error, HttpError):
        return error.status, _body(error.detail, error.error), error.headers
    full = storage_full(error)
    if full is not None:
        log.error("write refused, storage full: %s", full)
        return 507, _body(str(full), "StorageFullError"), {}
    if isinstance(error, AlmanacError):
        status = next(code for kind, code in STATUS if isinstance(error, kind))
        if status >= 500:
            log.error("server-side error: %s", error)
        return status, _body(str(error), type(error).__name__), {}
    log.exception("unexpected error while serving a request", exc_info=error)
    return 500, _body("internal server error (logged by the server)", "InternalError"), {}


def _body(detail: str | list[dict[str, Any]], name: str) -> bytes:
    return orjson.dumps({"detail": detail, "error": name})


def parse_body(model: type[Model], body: bytes) -> Model:
    """Validate a JSON body with `model`: 400 when it is not JSON, 422 naming the field
    (FastAPI's `detail` list: loc, msg, type) when it does not fit."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_context=False, include_input=False)
        if any(p["type"] == "json_invalid" for p in problems):
            raise MalformedBodyError(
                f"request body is not valid JSON: {problems[0]['msg']}"
            ) from None
        raise RequestValidationError(
            [{"loc": ["body", *p["loc"]], "msg": p["msg"], "type": p["type"]} for p in problems]
        ) from None


def single_query_values(request: Request) -> None:
    """A FastAPI dependency: a query parameter given twice is a 422 (FastAPI would keep
    the last one silently)."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            problem = {"loc": ["query", name], "msg": "given more than once; give it once"}
            raise RequestValidationError([{**problem, "type": "repeated"}])
        seen.add(name)
