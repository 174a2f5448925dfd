"""The one place where errors become HTTP answers.

Almanac's own errors map by type (`STATUS`); request problems found by the server
itself (malformed JSON, an invalid body, too many entities, a missing API key) are
`HttpError`s. Anything else is a bug: 500, logged with its traceback, and the answer
says no more than that (no internals leak to clients).
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from almanac.errors import (
    AlmanacError,
    ConcurrentApplyError,
    ConfigError,
    DefinitionError,
    InputError,
    NotFoundError,
    RegistryError,
    RepoError,
    StoreUnavailableError,
)

log = logging.getLogger("almanac.serving")

# Most specific first. DefinitionError is 422: a definition that cannot serve this
# request (a prompt template failing on these values), not a server crash.
STATUS: list[tuple[type[AlmanacError], int]] = [
    (NotFoundError, 404),
    (InputError, 422),
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


def error_reply(error: BaseException) -> tuple[int, bytes, dict[str, str]]:
    """Status, JSON body and extra headers for any exception raised by a handler."""
    if isinstance(error, HttpError):
        return error.status, _body(error.detail, error.error), error.headers
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
