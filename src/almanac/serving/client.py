"""`Client`: the feature server from Python, with the SDK's signatures and objects.

    from almanac.serving.client import Client
    with Client("http://127.0.0.1:6566", api_key="...") as client:
        response = client.get_online_features(["user_stats:clicks"], [{"user_id": "8a2f"}])
        response.to_dict()  # the same OnlineResponse as FeatureStore.get_online_features

Server errors come back as Almanac's exceptions: 404 → NotFoundError, 400/413/422 →
InputError, 503 → StoreUnavailableError, 401 → AuthenticationError, so code written
against the SDK handles them the same way.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from almanac.errors import AlmanacError, InputError, NotFoundError, StoreUnavailableError
from almanac.online.context import Context
from almanac.online.response import NOT_FOUND, FeatureStatus, OnlineResponse

DEFAULT_URL = "http://127.0.0.1:6566"


class AuthenticationError(AlmanacError):
    """The server wants an API key (or another one)."""


class Client:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    # ---- serving ------------------------------------------------------------------------

    def get_online_features(
        self,
        features: Sequence[str] | None = None,
        entity_rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]] | Any = None,
        *,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        request_data: Mapping[str, Any] | None = None,
        transformed: bool = False,
        transforms_version: int | None = None,
    ) -> OnlineResponse:
        """Latest values for each entity row, as `FeatureStore.get_online_features`."""
        if isinstance(features, str):
            features = [features]
        body: dict[str, Any] = {
            "features": None if features is None else list(features),
            "feature_service": feature_service,
            "entities": _columns(entity_rows),
            "full_feature_names": full_feature_names,
        }
        if transformed:
            body["transformed"] = True
            body["transforms_version"] = transforms_version
        if request_data is not None:
            body["request_data"] = {
                name: _json_value(value) for name, value in request_data.items()
            }
        return online_response(self._post("/get-online-features", body))

    def get_context(
        self,
        feature_service: str,
        entity: Mapping[str, Any],
        *,
        placeholder: str | None = None,
        request_data: Mapping[str, Any] | None = None,
    ) -> Context:
        """One entity's context, as `FeatureStore.get_context` (values as JSON gives them)."""
        body: dict[str, Any] = {
            "feature_service": feature_service,
            "entity": dict(entity),
            "placeholder": placeholder,
        }
        if request_data is not None:
            body["request_data"] = {name: _json_value(v) for name, v in request_data.items()}
        data = self._post("/context", body)
        stamps = {k: _timestamp(v) for k, v in data["event_timestamps"].items()}
        return Context(
            data["service"], data["entity"], data["text"], data["values"], data["statuses"],
            stamps, data["ages_seconds"],
        )  # fmt: skip

    def get_entity(
        self,
        entity: str,
        key: Any,
        *,
        features: Sequence[str] | None = None,
        service: str | None = None,
    ) -> dict[str, Any]:
        """`GET /entities/{entity}/{key}` as a dict (key: a value, or a dict for composite keys)."""
        params: list[tuple[str, str]] = [("features", f) for f in features or []]
        if service is not None:
            params.append(("service", service))
        if isinstance(key, Mapping):
            params += [(k, str(v)) for k, v in key.items()]
            key = "_"
        path = f"/entities/{quote(entity, safe='')}/{quote(str(key), safe='')}"
        entity_features: dict[str, Any] = self._request("GET", path, params=params)
        return entity_features

    # ---- ingestion ----------------------------------------------------------------------

    def push(
        self,
        push_source: str,
        df: Any,
        to: str = "online_and_offline",
        idempotency_key: str | None = None,
    ) -> int:
        """Send rows to a push source (as `FeatureStore.push`); returns the rows accepted.
        Retrying with the same `idempotency_key` counts the rows once."""
        from almanac.ingest.push import to_arrow

        table = to_arrow(df, f"push to '{push_source}'")
        columns = {name: table.column(name).to_pylist() for name in table.column_names}
        body = {"push_source_name": push_source, "df": columns, "to": to}
        headers = {} if idempotency_key is None else {"idempotency-key": idempotency_key}
        return int(self._post("/push", body, headers)["rows"])

    # ---- catalog and operations ---------------------------------------------------------

    def list_feature_views(self) -> list[dict[str, Any]]:
        views: list[dict[str, Any]] = self._request("GET", "/feature-views")
        return views

    def search_features(self, q: str = "") -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._request("GET", "/features", params={"q": q})
        return found

    def health(self) -> dict[str, Any]:
        response = self._http.get("/health")
        health: dict[str, Any] = orjson.loads(response.content)
        return health

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing -----------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        content = orjson.dumps(body, default=_default, option=orjson.OPT_SERIALIZE_NUMPY)
        return self._request(
            "POST", path, content=content,
            headers={"content-type": "application/json", **(headers or {})},
        )  # fmt: skip

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise StoreUnavailableError(
                f"feature server at {self.url} is unreachable: {error}"
            ) from None
        if response.status_code >= 400:
            raise _error(response)
        return orjson.loads(response.content)


def online_response(data: Mapping[str, Any]) -> OnlineResponse:
    """An `OnlineResponse` from a `/get-online-features` answer (Feast's shape; with
    Almanac's metadata, values are typed back: timestamps, bytes)."""
    metadata = data["metadata"]
    names = metadata["feature_names"]
    join_keys = set(metadata.get("join_keys", []))
    dtypes: dict[str, str] = metadata.get("dtypes", {})
    keys: dict[str, list[Any]] = {}
    values: dict[str, list[Any]] = {}
    statuses: dict[str, list[FeatureStatus]] = {}
    stamps: dict[str, list[datetime | None]] = {}
    for name, result in zip(names, data["results"], strict=True):
        if name in join_keys:
            keys[name] = result["values"]
            continue
        row_statuses = [FeatureStatus(s) for s in result["statuses"]]
        statuses[name] = row_statuses
        values[name] = _typed(result["values"], dtypes.get(name, ""))
        stamps[name] = [
            None if status is NOT_FOUND else _timestamp(t)
            for status, t in zip(row_statuses, result["event_timestamps"], strict=True)
        ]
    return OnlineResponse(keys, values, statuses, stamps, dtypes)


def _typed(column: list[Any], dtype: str) -> list[Any]:
    if dtype == "timestamp":
        return [_timestamp(v) for v in column]
    if dtype == "bytes":
        return [None if v is None else base64.b64decode(v) for v in column]
    if dtype == "list<timestamp>":
        return [None if v is None else [_timestamp(x) for x in v] for v in column]
    if dtype == "list<bytes>":
        return [
            None if v is None else [None if x is None else base64.b64decode(x) for x in v]
            for v in column
        ]
    return column


def _timestamp(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _columns(entity_rows: Any) -> dict[str, list[Any] | str | bytes]:
    """Entity rows as JSON columns (list of dicts, dict of columns, pandas, Polars, Arrow)."""
    if entity_rows is None:
        raise InputError("no entity rows given: pass entity_rows=[{<join key>: <value>}, ...]")
    if hasattr(entity_rows, "column_names") and hasattr(entity_rows, "to_pydict"):
        columns: dict[str, list[Any] | str | bytes] = entity_rows.to_pydict()
        return columns
    if hasattr(entity_rows, "columns") and hasattr(entity_rows, "to_dict"):
        return {str(c): list(entity_rows[c].tolist() if hasattr(entity_rows[c], "tolist") else entity_rows[c])
                for c in entity_rows.columns}  # fmt: skip
    if isinstance(entity_rows, Mapping):
        return {k: list(v) if not isinstance(v, str | bytes) else v for k, v in entity_rows.items()}
    rows = list(entity_rows)
    names = list(dict.fromkeys(k for row in rows for k in row))
    return {name: [row.get(name) for row in rows] for name in names}


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


def _error(response: httpx.Response) -> AlmanacError:
    try:
        body = orjson.loads(response.content)
        detail = body.get("detail", response.text)
    except (orjson.JSONDecodeError, AttributeError):
        detail = response.text
    if isinstance(detail, list):  # body validation: "field: problem; ..."
        detail = "; ".join(
            f"{'.'.join(map(str, p.get('loc', [])))}: {p.get('msg')}" for p in detail
        )
    message = f"{detail} (HTTP {response.status_code})"
    status = response.status_code
    if status == 404:
        error = NotFoundError.__new__(NotFoundError)  # keep `except NotFoundError` working
        Exception.__init__(error, message)
        error.kind, error.name = "", ""
        return error
    if status in (400, 413, 422):
        return InputError(message)
    if status == 401:
        return AuthenticationError(message)
    if status == 503:
        return StoreUnavailableError(message)
    return AlmanacError(message)


def _json_value(value: Any) -> Any:
    """A request field's value(s) as JSON carries them (times as ISO 8601 text)."""
    if hasattr(value, "tolist"):  # numpy, pandas
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
