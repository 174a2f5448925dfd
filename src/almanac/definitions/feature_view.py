"""Feature views: a named group of typed features of one entity from one source."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from pydantic import Field as PydanticField
from pydantic import PrivateAttr, field_validator, model_serializer

from almanac.definitions.base import Definition, Duration, Name, drop_defaults, format_duration
from almanac.definitions.entity import Entity
from almanac.definitions.expectations import Expectation, OnViolation
from almanac.definitions.sources import FileSource, PushSource, SourceBase, SqlSource
from almanac.definitions.transformations import Transformation, as_transformation
from almanac.definitions.types import parse_dtype


class Field(Definition):
    """One typed column: ``Field("watch_count_30d", Int64, description="...")``."""

    kind: ClassVar[str] = "field"

    name: Name
    dtype: str
    description: str = ""
    tags: dict[str, str] = {}

    def __init__(self, name: str | None = None, dtype: str | None = None, /, **data: Any) -> None:
        if name is not None:
            data["name"] = name
        if dtype is not None:
            data["dtype"] = dtype
        super().__init__(**data)

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: Any) -> str:
        return parse_dtype(value)


class FeatureView(Definition):
    """Features of one or more entities, read from one source.

    `schema` lists the features (not the join keys or timestamps; those come from the
    entities and the source). `ttl` bounds how old a value may be and still count, both
    in training sets and online. `materialize_every` is the cadence at which the online
    store should be refreshed.
    """

    kind: ClassVar[str] = "feature_view"

    name: Name
    entities: list[Name]
    source: Name
    schema_: list[Field] = PydanticField(alias="schema")
    ttl: Duration | None = None
    online: bool = True
    owner: str = ""
    description: str = ""
    tags: dict[str, str] = {}
    materialize_every: Duration | None = None
    transformation: Transformation | None = None
    # What rows must satisfy to enter the view's stores, and what a breach does (see
    # `almanac.definitions.expectations`).
    expectations: list[Expectation] = []
    on_violation: OnViolation = "reject"
    # The freshness SLO: the newest event should be no older than this (`almanac
    # freshness`, `/health`, the `almanac_view_freshness_seconds` gauge).
    freshness: Duration | None = None

    # The objects the user passed, so a repo loader can register them too.
    _entity_objects: list[Entity] = PrivateAttr(default_factory=list)
    _source_object: SourceBase | None = PrivateAttr(default=None)
    # The unnamed source object as passed, so a loader can name it after its variable.
    _unnamed_source: SourceBase | None = PrivateAttr(default=None)

    model_config = Definition.model_config | {"populate_by_name": True}

    def __init__(self, /, **data: Any) -> None:
        entity_objects = [e for e in data.get("entities") or [] if isinstance(e, Entity)]
        source = data.get("source")
        source_object = source if isinstance(source, SourceBase) else None
        if entity_objects:
            data["entities"] = [e.name if isinstance(e, Entity) else e for e in data["entities"]]
        if source_object is not None:
            # An unnamed inline source is named after the view (`<view>_source`).
            data["source"] = source_object.name or f"{data.get('name')}_source"
        if data.get("transformation") is not None:
            data["transformation"] = as_transformation(data["transformation"])
        super().__init__(**data)
        self._entity_objects = entity_objects
        if source_object is not None and source_object.name is None:
            self._unnamed_source = source_object
            source_object = source_object.model_copy(update={"name": self.source})
        self._source_object = source_object
        if entity_objects:
            check_join_keys_not_features(self, entity_objects)

    @model_serializer(mode="wrap")
    def _spec(self, handler: Any) -> Any:
        defaults: dict[str, Any] = {"expectations": [], "on_violation": "reject", "freshness": None}
        return drop_defaults(handler(self), defaults)

    @property  # shadows pydantic's deprecated `BaseModel.schema()` classmethod, on purpose
    def schema(self) -> list[Field]:  # type: ignore[override]
        return self.schema_

    @property
    def features(self) -> list[Field]:
        return self.schema_

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.schema_]

    def with_source_name(self, name: str) -> FeatureView:
        """This view reading its (inline) source under another name."""
        view = self.model_copy(update={"source": name})
        if self._source_object is not None:
            view._source_object = self._source_object.model_copy(update={"name": name})
        return view

    @property
    def source_object(self) -> FileSource | SqlSource | PushSource | None:
        return self._source_object  # type: ignore[return-value]

    @property
    def entity_objects(self) -> list[Entity]:
        return list(self._entity_objects)

    @field_validator("entities")
    @classmethod
    def _entities(cls, entities: list[str]) -> list[str]:
        if not entities:
            raise ValueError("a feature view needs at least one entity")
        if len(set(entities)) != len(entities):
            raise ValueError("an entity is listed twice")
        return entities

    @field_validator("schema_")
    @classmethod
    def _schema(cls, schema: list[Field]) -> list[Field]:
        return distinct_fields(schema, "a feature view", "feature")

    @field_validator("ttl", "materialize_every", "freshness")
    @classmethod
    def _non_negative(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError(f"must be a positive duration, got {format_duration(value)}")
        return value


def distinct_fields(schema: list[Field], owner: str, item: str) -> list[Field]:
    """`schema` when it has at least one field and no name twice (a ValueError else)."""
    if not schema:
        raise ValueError(f"{owner} needs at least one {item}")
    seen: set[str] = set()
    for field in schema:
        if field.name in seen:
            raise ValueError(f"duplicate {item} name '{field.name}'")
        seen.add(field.name)
    return schema


def check_join_keys_not_features(view: FeatureView, entities: list[Entity]) -> None:
    """A join key is not a feature: listing it in `schema` is a definition error."""
    from almanac.errors import DefinitionError

    features = set(view.feature_names)
    for entity in entities:
        for key in entity.join_keys:
            if key in features:
                raise DefinitionError(
                    f"FeatureView '{view.name}': field 'schema': '{key}' is the join key of "
                    f"entity '{entity.name}'; list only features in schema"
                )
