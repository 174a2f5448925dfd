"""Request and response bodies of the HTTP service, as Pydantic models.

Requests are validated with these models (`Model.model_validate_json`, in Rust, a few
microseconds for a typical body); responses are built as plain dicts and encoded with
orjson on the hot path, and the response models below document their shape in the
OpenAPI schema (and are checked against real responses by the schemathesis tests).

The online request and response follow Feast's feature server, so Feast HTTP clients
work unchanged: results are columnar, one entry per name in `metadata.feature_names`
(join keys first, then features), each with one value, status and event time per
entity. Almanac adds `metadata.join_keys` and `metadata.dtypes`, which Feast clients
ignore and Almanac's client uses to rebuild typed results.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from almanac.online.response import FeatureStatus

# A join key value: int64 keys are JSON integers, string keys JSON strings (no coercion:
# 1.0 or "1" for an int key would address another entity than the caller meant).
KeyValue = StrictInt | StrictStr


class _Request(BaseModel):
    # Unknown fields are ignored, as Feast's server does (its clients send a few more).
    model_config = ConfigDict(extra="ignore")


class OnlineFeaturesRequest(_Request):
    features: list[str] | None = Field(
        None,
        description="Feature references 'view:feature' (or a whole 'view').",
        examples=[["user_stats:clicks"]],
    )
    feature_service: str | None = Field(
        None, description="A feature service, instead of `features`."
    )
    entities: dict[str, list[KeyValue]] = Field(
        description="Join key columns: one list per join key, one value per entity.",
        examples=[{"user_id": ["8a2f", "b13c"]}],
    )
    full_feature_names: bool = Field(False, description="Name features 'view__feature'.")


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
    entity: dict[str, KeyValue] = Field(examples=[{"user_id": "8a2f"}])
    placeholder: str | None = Field(
        None,
        description="Rendered for missing or stale values (default: server.missing_placeholder).",
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
    df: dict[str, list[Any]] = Field(
        description="Columns: join keys, the source's event-time column (ISO-8601 text; "
        "naive means UTC) and every feature of the views reading the source (of an "
        "aggregation view, the columns it aggregates: its windowed values move at once). "
        "Bytes features are base64 text.",
        examples=[
            {"user_id": ["8a2f"], "event_timestamp": ["2024-05-01T12:00:00Z"], "clicks": [3]}
        ],
    )
    to: Literal["online", "offline", "online_and_offline"] = "online_and_offline"


class PushResponse(BaseModel):
    push_source_name: str
    to: str
    rows: int
    views: list[str]


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


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    registry: HealthCheck
    online_store: HealthCheck
    registry_version: int | None = None
