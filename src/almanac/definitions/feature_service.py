"""Feature services: the named set of features one model consumes."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import field_validator, model_serializer

from almanac.definitions.base import Definition, Name, check_name, drop_defaults
from almanac.definitions.model_transforms import ModelTransform


class FeatureService(Definition):
    """``FeatureService(name="ranker_v1", features=[user_stats, "user_profile:segment"])``.

    Items are feature views (all their features), on-demand views, view names, or
    ``view:feature`` references. `prompt_template` (Jinja2) renders the features as LLM
    context. `transforms` are the model's own preprocessing, fitted on a training set
    (`FeatureStore.fit_transforms`) and applied with ``transformed=True`` offline and
    online alike: ``[StandardScaler("view:feature"), OneHot(...), TargetEncoder(...)]``.
    """

    kind: ClassVar[str] = "feature_service"

    name: Name
    features: list[str]
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = {}
    prompt_template: str | None = None
    transforms: list[ModelTransform] = []

    def __init__(self, /, **data: Any) -> None:
        items = data.get("features")
        if isinstance(items, list | tuple):
            data["features"] = [getattr(item, "name", item) for item in items]
        super().__init__(**data)

    @model_serializer(mode="wrap")
    def _spec(self, handler: Any) -> Any:
        return drop_defaults(handler(self), {"transforms": []})

    @field_validator("features")
    @classmethod
    def _refs(cls, refs: list[str]) -> list[str]:
        if not refs:
            raise ValueError("a feature service needs at least one feature")
        for ref in refs:
            parts = ref.split(":")
            if len(parts) > 2:
                raise ValueError(f"'{ref}' is not a feature reference ('view' or 'view:feature')")
            for part in parts:
                check_name(part)
        if len(set(refs)) != len(refs):
            raise ValueError("a feature is listed twice")
        return refs

    @property
    def views(self) -> list[str]:
        return list(dict.fromkeys(ref.split(":")[0] for ref in self.features))
