"""What users write: entities, sources, feature views and services, and their types."""

from almanac.definitions.aggregation import Aggregation, AggregationView
from almanac.definitions.base import Definition, format_duration, parse_duration
from almanac.definitions.entity import Entity
from almanac.definitions.expectations import Expect, Expectation
from almanac.definitions.feature_service import FeatureService
from almanac.definitions.feature_view import FeatureView, Field
from almanac.definitions.permission import Permission, Resource
from almanac.definitions.sources import (
    FileSource,
    KafkaSource,
    PushSource,
    RedisStreamSource,
    SqlSource,
)
from almanac.definitions.transformations import (
    PythonTransformation,
    SqlTransformation,
    batch_transformation,
)
from almanac.definitions.types import (
    Array,
    Bool,
    Bytes,
    Float32,
    Float64,
    Int32,
    Int64,
    String,
    Timestamp,
)

__all__ = [
    "Aggregation",
    "AggregationView",
    "Array",
    "Bool",
    "Bytes",
    "Definition",
    "Entity",
    "Expect",
    "Expectation",
    "FeatureService",
    "FeatureView",
    "Field",
    "FileSource",
    "Float32",
    "Float64",
    "Int32",
    "Int64",
    "KafkaSource",
    "Permission",
    "PushSource",
    "PythonTransformation",
    "RedisStreamSource",
    "Resource",
    "SqlSource",
    "SqlTransformation",
    "String",
    "Timestamp",
    "batch_transformation",
    "format_duration",
    "parse_duration",
]
