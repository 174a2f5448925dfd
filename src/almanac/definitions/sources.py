"""Sources: where a view's rows come from.

Every source names its event-time column and, optionally, a created-time column
(used to break ties between rows with the same event time).
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import Field as PydanticField
from pydantic import field_validator, model_serializer, model_validator

from almanac.definitions.base import (
    Definition,
    Dialect,
    Name,
    check_dialect,
    drop_default_dialect,
    drop_defaults,
)


class _SourceBase(Definition):
    kind: ClassVar[str] = "source"

    # Optional in code: a repo loader names an unnamed source after its variable or view.
    name: Name | None = None
    timestamp_field: Name = "event_timestamp"
    created_timestamp_field: Name | None = None
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = {}

    @model_validator(mode="after")
    def _distinct_time_columns(self) -> Self:
        if self.created_timestamp_field == self.timestamp_field:
            raise ValueError("created_timestamp_field must differ from timestamp_field")
        return self


class FileSource(_SourceBase):
    """Parquet or CSV: one file, a folder of files, or a glob. Relative paths are read
    from the feature repo's folder."""

    type: Literal["file"] = "file"
    path: str
    format: Literal["parquet", "csv"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _infer_format(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("format") is None:
            path = data.get("path")
            if isinstance(path, str) and path.strip():
                suffix = PurePath(path).suffix.lower()
                data = {**data, "format": "csv" if suffix in (".csv", ".tsv") else "parquet"}
        return data

    @model_validator(mode="after")
    def _path_not_empty(self) -> Self:
        if not self.path.strip():
            raise ValueError("path must not be empty")
        return self


class SqlSource(_SourceBase):
    """A SQL query, in the `dialect` of the engine that runs it: DuckDB's by default (it
    may read files with read_parquet/read_csv), or ``"spark"`` for Spark SQL. An engine
    refuses, at `plan`, a dialect it cannot run."""

    type: Literal["sql"] = "sql"
    query: str
    dialect: str = Dialect.DEFAULT

    _dialect = field_validator("dialect")(check_dialect)

    @model_serializer(mode="wrap")
    def _spec(self, handler: Any) -> Any:
        return drop_default_dialect(handler(self))

    @model_validator(mode="after")
    def _query_not_empty(self) -> Self:
        if not self.query.strip():
            raise ValueError("query must not be empty")
        return self


class PushSource(_SourceBase):
    """Rows sent by API (`store.push`, `POST /push`). Almanac keeps their history as a
    Parquet dataset under the offline store's data path.

    A pushed column that no view of the source reads (and that is not a join key or a
    time column) is refused, naming it: a typo'd feature never vanishes silently.
    `extra_columns="ignore"` drops such columns instead (raw events often carry more)."""

    type: Literal["push"] = "push"
    extra_columns: Literal["reject", "ignore"] = "reject"

    @model_serializer(mode="wrap")
    def _spec(self, handler: Any) -> Any:
        return drop_defaults(handler(self), {"extra_columns": "reject"})


class StreamSource(PushSource):
    """Events read from a stream by `almanac stream` (see `almanac.ingest.stream`). Like a
    push source, Almanac keeps their history as a Parquet dataset (the offline log), so
    training sets read exactly the events that were served; rows may also be pushed.

    `timestamp_format` says how the event time is written: ISO 8601 text (`iso`), epoch
    seconds or milliseconds (`epoch_s`, `epoch_ms`), or absent and taken from the broker's
    time of the message (`broker`). `dead_letter` names where messages that cannot be
    read go (another topic or stream); by default a Parquet dataset under the offline
    store's data path (`<data_path>/.dead_letter/<source>/`)."""

    timestamp_format: Literal["iso", "epoch_s", "epoch_ms", "broker"] = "iso"
    dead_letter: str | None = None
    format: Literal["json", "fields"] = "json"

    @model_serializer(mode="wrap")
    def _spec(self, handler: Any) -> Any:
        defaults = {"extra_columns": "reject", "timestamp_format": "iso", "dead_letter": None}
        return drop_defaults(handler(self), defaults)


class KafkaSource(StreamSource):
    """A Kafka topic: one JSON object per message value (`format="json"`). `options` are
    librdkafka settings passed through (`security.protocol`, `sasl.mechanism`,
    `sasl.username`, `ssl.ca.location`, ...); a value `${NAME}` is read from the
    environment when the worker connects, so secrets stay out of the registry.
    Needs the `kafka` extra (confluent-kafka)."""

    type: Literal["kafka"] = "kafka"  # type: ignore[assignment]
    topic: str
    bootstrap_servers: str
    format: Literal["json"] = "json"
    options: dict[str, str] = {}


class RedisStreamSource(StreamSource):
    """A Redis stream, read by a consumer group. Each entry holds either one field per
    column (`format="fields"`: text, parsed by the declared types) or one field `json`
    holding the object (`format="json"`). `url` may be `${NAME}` (read from the
    environment when the worker connects)."""

    type: Literal["redis_stream"] = "redis_stream"  # type: ignore[assignment]
    stream: str
    url: str = "redis://localhost:6379/0"
    format: Literal["fields", "json"] = "fields"


AnySource = FileSource | SqlSource | PushSource | KafkaSource | RedisStreamSource
Source = Annotated[
    FileSource | SqlSource | PushSource | KafkaSource | RedisStreamSource,
    PydanticField(discriminator="type"),
]
SOURCE_TYPES: dict[str, type[AnySource]] = {
    "file": FileSource,
    "sql": SqlSource,
    "push": PushSource,
    "kafka": KafkaSource,
    "redis_stream": RedisStreamSource,
}
SourceBase = _SourceBase


def source_from_spec(spec: dict[str, Any]) -> AnySource:
    return SOURCE_TYPES[spec.get("type", "file")].from_spec(spec)
