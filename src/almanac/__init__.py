"""Almanac: a feature store. Declare features once; train and serve them without skew."""

from typing import TYPE_CHECKING

from almanac.definitions import (
    Aggregation,
    AggregationView,
    Array,
    Bool,
    Bucketize,
    Bytes,
    Entity,
    Expect,
    Expectation,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    Float32,
    Float64,
    Impute,
    Int32,
    Int64,
    KafkaSource,
    Log1p,
    MinMaxScaler,
    OnDemandView,
    OneHot,
    OrdinalEncoder,
    Permission,
    PushSource,
    PythonTransformation,
    RedisStreamSource,
    RequestSource,
    Resource,
    RobustScaler,
    SqlSource,
    SqlTransformation,
    StandardScaler,
    String,
    TargetEncoder,
    Timestamp,
    batch_transformation,
    on_demand_view,
)
from almanac.errors import AlmanacError
from almanac.store import FeatureStore

if TYPE_CHECKING:  # imported lazily at run time (see __getattr__)
    from almanac.serving.client import Client

__version__ = "0.1.0"

__all__ = [
    "Aggregation",
    "AggregationView",
    "AlmanacError",
    "Array",
    "Bool",
    "Bucketize",
    "Bytes",
    "Client",
    "Entity",
    "Expect",
    "Expectation",
    "FeatureService",
    "FeatureStore",
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
    "__version__",
    "batch_transformation",
    "on_demand_view",
]


def __getattr__(name: str) -> object:
    # The HTTP client pulls in httpx: import it only when asked for.
    if name == "Client":
        from almanac.serving.client import Client

        return Client
    raise AttributeError(f"module 'almanac' has no attribute {name!r}")
