"""What users write: entities, sources, feature views and services, and their types."""

from almanac.definitions.aggregation import Aggregation, AggregationView
from almanac.definitions.base import Definition, format_duration, parse_duration
from almanac.definitions.entity import Entity
from almanac.definitions.expectations import Expect, Expectation
from almanac.definitions.feature_service import FeatureService
from almanac.definitions.feature_view import FeatureView, Field
from almanac.definitions.model_transforms import (
    Bucketize,
    Impute,
    Log1p,
    MinMaxScaler,
    OneHot,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
    TargetEncoder,
)
from almanac.definitions.on_demand import OnDemandView, RequestSource, on_demand_view
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
    "Bucketize",
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
    "Impute",
    "Int32",
    "Int64",
    "KafkaSource",
    "Log1p",
    "MinMaxScaler",
    "OnDemandView",
    "OneHot",
    "OrdinalEncoder",
    "Permission",
    "PushSource",
    "PythonTransformation",
    "RedisStreamSource",
    "RequestSource",
    "Resource",
    "RobustScaler",
    "SqlSource",
    "SqlTransformation",
    "StandardScaler",
    "String",
    "TargetEncoder",
    "Timestamp",
    "batch_transformation",
    "format_duration",
    "on_demand_view",
    "parse_duration",
]
