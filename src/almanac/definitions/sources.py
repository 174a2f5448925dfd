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


Source = Annotated[FileSource | SqlSource | PushSource, PydanticField(discriminator="type")]
SOURCE_TYPES: dict[str, type[FileSource | SqlSource | PushSource]] = {
    "file": FileSource,
    "sql": SqlSource,
    "push": PushSource,
}
SourceBase = _SourceBase


def source_from_spec(spec: dict[str, Any]) -> FileSource | SqlSource | PushSource:
    return SOURCE_TYPES[spec.get("type", "file")].from_spec(spec)
