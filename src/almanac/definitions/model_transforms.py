"""Model transforms: per-feature preprocessing a model needs, declared with its features.

Some model inputs depend on statistics of the training data (a standard scaler's mean,
a one-hot encoder's categories, a target encoder's per-category means). They are
declared here, as plain data, on the features of a feature service::

    StandardScaler("txn:amount")
    OneHot("user:country", max_categories=20)
    TargetEncoder("merchant:id", target="is_fraud")

fitted once on a training set (`almanac.transforms.fitted.fit`), stored as a versioned
JSON artifact, and applied identically offline and online. Several transforms of one
feature apply in the order declared (``Impute`` then ``StandardScaler``). Formulas,
null and unknown-category rules: docs/transforms.md.

Every transform names its feature as ``"view:feature"`` (its first positional argument)
and has a `type` that tells the kinds apart in a spec. Specs leave out the fields that
hold their default, so adding an optional field later changes no stored spec.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic import Field as PydanticField

from almanac.definitions.base import Definition, check_name, describe_validation_error
from almanac.errors import DefinitionError

Scalar = bool | int | float | str
ImputeStrategy = Literal["mean", "median", "most_frequent", "constant"]
UNKNOWN = "__unknown__"  # a one-hot encoder's column for unseen categories and nulls


def check_feature_ref(value: Any) -> str:
    """A transform applies to one feature: ``view:feature``, both plain names."""
    if not isinstance(value, str) or value.count(":") != 1:
        raise ValueError(f"{value!r} is not a feature reference 'view:feature'")
    view, feature = value.split(":")
    check_name(view)
    check_name(feature)
    return value


FeatureRef = Annotated[str, BeforeValidator(check_feature_ref)]


class _Transform(Definition):
    """What every model transform shares: its feature, its label, a default-free spec."""

    kind: ClassVar[str] = "model_transform"
    # False for the kinds that learn nothing from the training set (Log1p, Bucketize).
    learns: ClassVar[bool] = True

    feature: FeatureRef

    def __init__(self, feature: str | None = None, /, **data: Any) -> None:
        if feature is not None:
            data["feature"] = feature
        try:
            BaseModel.__init__(self, **data)
        except ValidationError as error:
            # Labelled by the feature, as transforms have no name of their own.
            raise DefinitionError(
                describe_validation_error(type(self).__name__, data.get("feature"), error)
            ) from None

    @model_serializer(mode="wrap")
    def _spec(self, handler: Any) -> Any:
        spec = handler(self)
        defaults = {
            name: field.default
            for name, field in type(self).model_fields.items()
            if name != "type" and not field.is_required()
        }
        kept = {k: v for k, v in spec.items() if k not in defaults or v != defaults[k]}
        return {"type": kept.pop("type"), **kept}  # the kind first, for people reading specs

    @property
    def label(self) -> str:
        """The transform as messages name it: ``StandardScaler('txn:amount')``."""
        return f"{type(self).__name__}({self.feature!r})"

    def __repr__(self) -> str:
        return self.label


class StandardScaler(_Transform):
    """``(x - mean) / std``, with the population standard deviation (0.0 when it is 0)."""

    type: Literal["standard_scaler"] = "standard_scaler"


class MinMaxScaler(_Transform):
    """``(x - min) / (max - min)`` (0.0 when max equals min). Values outside the fitted
    range are not clipped: they map below 0 or above 1."""

    type: Literal["min_max_scaler"] = "min_max_scaler"


class RobustScaler(_Transform):
    """``(x - median) / (q3 - q1)``, quantiles by linear interpolation (0.0 when the
    interquartile range is 0)."""

    type: Literal["robust_scaler"] = "robust_scaler"


class Log1p(_Transform):
    """``log(1 + x)``; null for x <= -1. Learns nothing."""

    learns: ClassVar[bool] = False
    type: Literal["log1p"] = "log1p"


class Bucketize(_Transform):
    """The int64 index of x's bucket: i when ``boundaries[i-1] <= x < boundaries[i]``,
    0 below the first boundary, ``len(boundaries)`` from the last one on."""

    learns: ClassVar[bool] = False
    type: Literal["bucketize"] = "bucketize"
    boundaries: list[float]

    @field_validator("boundaries")
    @classmethod
    def _increasing(cls, boundaries: list[float]) -> list[float]:
        if not boundaries:
            raise ValueError("needs at least one boundary")
        if not all(math.isfinite(b) for b in boundaries):
            raise ValueError("boundaries must be finite numbers")
        if any(b >= after for b, after in itertools.pairwise(boundaries)):
            raise ValueError("boundaries must be strictly increasing")
        return boundaries


class Impute(_Transform):
    """Nulls (and NaN) replaced by the training mean, median, most frequent value, or
    `value` (``strategy="constant"``)."""

    type: Literal["impute"] = "impute"
    strategy: ImputeStrategy = "mean"
    value: Scalar | None = None

    @model_validator(mode="after")
    def _value(self) -> Self:
        if (self.strategy == "constant") != (self.value is not None):
            raise ValueError("value is needed with strategy='constant', and only with it")
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise ValueError("value must be a finite number")
        return self


class OneHot(_Transform):
    """One 0/1 float64 column per fitted category, and one for anything else (unseen
    categories and nulls). Categories seen fewer than `min_frequency` times are left
    out; `max_categories` keeps the most frequent ones."""

    type: Literal["one_hot"] = "one_hot"
    max_categories: int | None = PydanticField(None, ge=1)
    min_frequency: int = PydanticField(1, ge=1)

    @staticmethod
    def output_columns(output: str, categories: Sequence[bool | int | str]) -> list[str]:
        """The columns `output` becomes, given the fitted categories: ``output=category``
        for each (booleans as true/false), then ``output=__unknown__``."""
        texts = [("true" if c else "false") if isinstance(c, bool) else str(c) for c in categories]
        return [f"{output}={text}" for text in [*texts, UNKNOWN]]


class OrdinalEncoder(_Transform):
    """The int64 position of the category among the fitted ones sorted by value; -1 for
    unseen categories and nulls."""

    type: Literal["ordinal_encoder"] = "ordinal_encoder"


class TargetEncoder(_Transform):
    """The smoothed mean of `target` per category, ``(sum + smoothing * prior) /
    (count + smoothing)``; the prior (the target's mean) for unseen categories and
    nulls. On the training rows it was fitted on, each row's value comes from the other
    `folds` only (out of fold: row i is in fold ``i % folds``), so no row sees its own
    target."""

    type: Literal["target_encoder"] = "target_encoder"
    target: str = PydanticField(min_length=1)
    folds: int = PydanticField(5, ge=2)
    smoothing: float = PydanticField(10.0, ge=0, allow_inf_nan=False)


ModelTransform = Annotated[
    StandardScaler | MinMaxScaler | RobustScaler | Log1p | Bucketize | Impute | OneHot | OrdinalEncoder | TargetEncoder,
    PydanticField(discriminator="type"),
]  # fmt: skip

TRANSFORM_KINDS: dict[str, type[_Transform]] = {
    kind.model_fields["type"].default: kind
    for kind in (StandardScaler, MinMaxScaler, RobustScaler, Log1p, Bucketize, Impute, OneHot, OrdinalEncoder, TargetEncoder)
}  # fmt: skip


def as_model_transform(value: Any) -> ModelTransform:
    """A model transform given as itself or as its spec (``{"type": "one_hot", ...}``)."""
    if isinstance(value, _Transform):
        return value  # type: ignore[return-value]  # every concrete kind is in the union
    if isinstance(value, dict):
        kind = TRANSFORM_KINDS.get(value.get("type"))  # type: ignore[arg-type]
        if kind is None:
            raise DefinitionError(
                f"model transform {value.get('feature', '')!r}: unknown type "
                f"{value.get('type')!r} (known: {', '.join(TRANSFORM_KINDS)})"
            )
        return kind(**value)  # type: ignore[return-value]
    raise DefinitionError(
        f"{value!r} is not a model transform (StandardScaler('view:feature'), OneHot(...), ...)"
    )
