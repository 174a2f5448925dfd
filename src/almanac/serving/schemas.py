"""Request and response bodies of the HTTP service, as Pydantic models.

Requests are validated with these models (`Model.model_validate_json`, in Rust, a few
microseconds for a typical body); responses are built as plain dicts and encoded with
orjson on the hot path, and the response models below document their shape in the
OpenAPI schema (and are checked against real responses by the schemathesis tests).

The online request and response follow Feast's feature server, so Feast HTTP clients
work unchanged: results are columnar, one entry per name in `metadata.feature_names`
(join keys first, then features), each with one value, status and event time per
entity. Almanac adds `metadata.join_keys` and `metadata.dtypes`, which Feast clients
ignore and Almanac's client uses to rebuild typed results. Pushes and
`/write-to-online-store` take Feast's bodies too (its extra flags are accepted and
ignored; `df` may be pandas' ``to_dict()`` shape, ``{column: {row: value}}``).

Every rule a request body must follow that JSON Schema can state is in the schema
(exactly one of `features` and `feature_service`, a non-empty entity, int64 bounds), so
a body the published schema accepts is never refused for its shape; what depends on
the catalog (names, which join keys, their types) is checked by the server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from almanac.online.response import FeatureStatus

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _integral(value: Any) -> Any:
    # JSON (and JSON Schema's "integer") does not tell 3.0 from 3: both are the number 3.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A join key value: int64 keys are JSON integers, string keys JSON strings (no coercion:
# 1.5, true or "1" for an int key would address another entity than the caller meant).
KeyValue = (
    Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX), BeforeValidator(_integral)] | StrictStr
)
# A request field's value: JSON's scalars (a timestamp is ISO 8601 text), or a list.
RequestValue = StrictBool | StrictInt | float | StrictStr | list[Any] | None
# Pushed columns: a list of values, or pandas' `to_dict()` shape {row label: value}
# (what Feast's server accepts, as it builds a DataFrame from the body).
Column = list[Any] | dict[str, Any]


class _Request(BaseModel):
    # Unknown fields are ignored, as Feast's server does (its clients send a few more).
    model_config = ConfigDict(extra="ignore")


class OnlineFeaturesRequest(_Request):
    """Exactly one of `features` and `feature_service` (the other absent or null)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "oneOf": [
                {"required": ["features"], "properties": {"features": {"type": "array"}}},
                {
                    "required": ["feature_service"],
                    "properties": {"feature_service": {"type": "string"}},
                },
            ]
        },
    )

    features: list[str] | None = Field(
        None,
        min_length=1,
        description="Feature references 'view:feature' (or a whole 'view').",
        examples=[["user_stats:clicks"]],
    )
    feature_service: str | None = Field(
        None, description="A feature service, instead of `features`."
    )
    entities: dict[str, list[KeyValue]] = Field(
        min_length=1,
        description=(
            "Join key columns: one list per join key, one value per entity (text and "
            "integer request fields of on-demand features may be given here too)."
        ),
        examples=[{"user_id": ["8a2f", "b13c"]}],
    )
    full_feature_names: bool = Field(False, description="Name features 'view__feature'.")
    request_data: dict[str, list[RequestValue] | RequestValue] | None = Field(
        None,
        description=(
            "Request fields of on-demand features: one value per entity (a single value "
            "is used for every entity). Timestamps as ISO 8601 text."
        ),
        examples=[{"amount": [129.0, 15.5]}],
    )
    transformed: bool = Field(
        False, description="Apply the feature service's fitted transforms (scaling, encoding)."
    )
    transforms_version: int | None = Field(
        None, ge=1, description="The fit to apply (default: the latest)."
    )

    @model_validator(mode="after")
    def _one_selection(self) -> OnlineFeaturesRequest:
        if (self.features is None) == (self.feature_service is None):
            raise ValueError("give either features or feature_service, not both or neither")
        return self


class ResponseMetadata(BaseModel):
    feature_names: list[str] = Field(
        description="Join keys first, then features, in request order."
    )
    join_keys: list[str] = Field(description="Almanac: which of `feature_names` are join keys.")
    dtypes: dict[str, str] = Field(description="Almanac: the dtype of every name.")


class FeatureVector(BaseModel):
    values: list[Any] = Field(description="One value per entity (null when not PRESENT).")
    statuses: list[FeatureStatus]
    event_timestamps: list[str] = Field(
        description="RFC 3339, UTC. As in Feast, join keys and NOT_FOUND values carry "
        "1970-01-01T00:00:00Z; the status is the source of truth."
    )


class OnlineFeaturesResponse(BaseModel):
    metadata: ResponseMetadata
    results: list[FeatureVector]


class EntityFeaturesResponse(BaseModel):
    """One entity's features. The entity's join keys are also top-level fields (for
    example ``"user_id": "8a2f"``), typed as declared."""

    model_config = ConfigDict(extra="allow")

    features: dict[str, Any]
    statuses: dict[str, FeatureStatus]
    event_timestamps: dict[str, str | None] = Field(
        description="RFC 3339, UTC; null when NOT_FOUND."
    )


class ContextRequest(_Request):
    feature_service: str
    entity: dict[str, KeyValue] = Field(min_length=1, examples=[{"user_id": "8a2f"}])
    placeholder: str | None = Field(
        None,
        description="Rendered for missing or stale values (default: server.missing_placeholder).",
    )
    request_data: dict[str, RequestValue] | None = Field(
        None, description="Request fields of the service's on-demand features, one value each."
    )


class ContextResponse(BaseModel):
    service: str
    entity: dict[str, Any]
    text: str = Field(description="The service's prompt template rendered with the values.")
    values: dict[str, Any]
    statuses: dict[str, FeatureStatus]
    event_timestamps: dict[str, str | None]
    ages_seconds: dict[str, float | None] = Field(description="Age of each value at read time.")


class PushRequest(_Request):
    push_source_name: str
    df: dict[str, Column] = Field(
        description="Columns: join keys, the source's event-time column (ISO-8601 text; "
        "naive means UTC) and every feature of the views reading the source (of an "
        "aggregation view, the columns it aggregates: its windowed values move at once). "
        "Bytes features are base64 text. A column is a list, or an object by row label "
        "(pandas' `to_dict()`).",
        examples=[
            {"user_id": ["8a2f"], "event_timestamp": ["2024-05-01T12:00:00Z"], "clicks": [3]}
        ],
    )
    to: Literal["online", "offline", "online_and_offline"] = Field(
        "online_and_offline",
        description="Where the rows go. Almanac keeps their history by default (Feast's "
        "server defaults to 'online').",
    )
    allow_registry_cache: bool = Field(True, description="Feast's flag; accepted, ignored.")
    transform_on_write: bool = Field(True, description="Feast's flag; accepted, ignored.")


class PushResponse(BaseModel):
    push_source_name: str
    to: str
    rows: int
    views: list[str]


class WriteToOnlineStoreRequest(_Request):
    """Feast's `write-to-online-store` (what its `remote` online store sends): rows of
    one feature view, written to the online store only, validated as a push is."""

    feature_view_name: str = Field(description="A view fed by a push source.")
    df: dict[str, Column] = Field(
        description="Columns: the view's join keys, `event_timestamp` (or the source's "
        "event-time column), optionally `created`, and every feature of the view. "
        "Timestamp features may be epoch seconds, as Feast sends them.",
        examples=[{"user_id": ["8a2f"], "event_timestamp": ["2024-05-01T12:00:00"], "clicks": [3]}],
    )
    allow_registry_cache: bool = Field(True, description="Feast's flag; accepted, ignored.")
    transform_on_write: bool = Field(True, description="Feast's flag; accepted, ignored.")


class WriteToOnlineStoreResponse(BaseModel):
    feature_view_name: str
    rows: int


class ErrorResponse(BaseModel):
    detail: str | list[dict[str, Any]] = Field(
        description="What is wrong (a list for body validation)."
    )
    error: str = Field(description="The error's type, e.g. NotFoundError, InputError.")


class FieldInfo(BaseModel):
    name: str
    dtype: str
    description: str = ""
    tags: dict[str, str] = {}


class EntityInfo(BaseModel):
    name: str
    join_keys: dict[str, str]
    description: str
    owner: str
    tags: dict[str, str]


class FeatureViewInfo(BaseModel):
    name: str
    entities: list[str]
    join_keys: dict[str, str]
    source: str
    features: list[FieldInfo]
    ttl: str | None
    online: bool
    owner: str
    description: str
    tags: dict[str, str]
    materialize_every: str | None


class FeatureServiceInfo(BaseModel):
    name: str
    features: list[str]
    description: str
    owner: str
    tags: dict[str, str]
    prompt_template: str | None


class FeatureInfo(BaseModel):
    name: str = Field(description="The reference, 'view:feature'.")
    view: str
    feature: str
    dtype: str
    description: str
    tags: dict[str, str]
    owner: str
    view_tags: dict[str, str]


class HealthCheck(BaseModel):
    status: Literal["ok", "unavailable"]
    detail: str | None = None


class StorageCheck(BaseModel):
    status: Literal["ok", "full"]
    detail: str | None = Field(
        None, description="Why: the last write's storage error, or the free space left."
    )


class FreshnessCheck(BaseModel):
    status: Literal["ok", "degraded", "unknown"]
    detail: str | None = Field(None, description="The views out of their freshness SLO.")
    views: dict[str, Literal["stale", "lagging"]] | None = Field(
        None,
        description="stale: the newest event is older than the SLO; lagging: the "
        "online store was last refreshed longer ago than that.",
    )


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="unavailable (503): a store cannot be reached; degraded (200): reads "
        "are served but something needs attention (storage full, the online store missing "
        "a view's values, a view out of its freshness SLO)."
    )
    # The details, for callers that authenticate when server.auth is on (they name the
    # stores' addresses and errors): an anonymous probe gets the status only.
    registry: HealthCheck | None = None
    online_store: HealthCheck | None = None
    storage: StorageCheck | None = None
    freshness: FreshnessCheck | None = None
    registry_version: int | None = None
