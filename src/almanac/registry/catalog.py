"""The catalog: one consistent, immutable set of definitions.

A `Catalog` is what a repo declares and what the registry holds at one version. It
validates the set as a whole (references resolve, names are unique, join keys are not
features) and resolves feature references for retrieval — the one place where
`"view:feature"`, whole views and feature services become concrete columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from almanac.definitions import Entity, FeatureService, FeatureView
from almanac.definitions.aggregation import AggregationView, input_dtypes
from almanac.definitions.base import Definition
from almanac.definitions.feature_view import Field, check_join_keys_not_features
from almanac.definitions.on_demand import OnDemandView, RequestSource
from almanac.definitions.permission import Permission
from almanac.definitions.sources import FileSource, PushSource, SqlSource, source_from_spec
from almanac.errors import DefinitionError, InputError, NotFoundError
from almanac.registry.on_demand import check_on_demand

Source = FileSource | SqlSource | PushSource

# Registry kinds in dependency order: an object may refer only to kinds before it.
KINDS: tuple[str, ...] = (
    "entity", "source", "request_source", "feature_view", "aggregation_view", "on_demand_view",
    "feature_service", "permission",
)  # fmt: skip


def definition_from_spec(kind: str, spec: dict[str, Any]) -> Definition:
    if kind == "entity":
        return Entity.from_spec(spec)
    if kind == "source":
        return source_from_spec(spec)
    if kind == "feature_view":
        return FeatureView.from_spec(spec)
    if kind == "aggregation_view":
        return AggregationView.from_spec(spec)
    if kind == "request_source":
        return RequestSource.from_spec(spec)
    if kind == "on_demand_view":
        return OnDemandView.from_spec(spec)
    if kind == "feature_service":
        return FeatureService.from_spec(spec)
    if kind == "permission":
        return Permission.from_spec(spec)
    raise ValueError(f"unknown registry kind {kind!r}")


def _kind(view: FeatureView) -> str:
    return "aggregation view" if isinstance(view, AggregationView) else "feature view"


@dataclass(frozen=True)
class FeatureRef:
    """One resolved feature: its view, its field, and the output column name."""

    view: str
    field: Field
    output_name: str

    @property
    def ref(self) -> str:
        return f"{self.view}:{self.field.name}"


@dataclass(frozen=True)
class Catalog:
    entities: dict[str, Entity] = field(default_factory=dict)
    sources: dict[str, Source] = field(default_factory=dict)
    views: dict[str, FeatureView] = field(default_factory=dict)
    services: dict[str, FeatureService] = field(default_factory=dict)
    version: int = 0
    aggregation_views: dict[str, AggregationView] = field(default_factory=dict)
    permissions: dict[str, Permission] = field(default_factory=dict)
    request_sources: dict[str, RequestSource] = field(default_factory=dict)
    on_demand_views: dict[str, OnDemandView] = field(default_factory=dict)
    # An on-demand view's features with their types (declared, or inferred from its
    # expressions), computed once per catalog.
    _on_demand_fields: dict[str, list[Field]] = field(
        default_factory=dict, compare=False, repr=False
    )

    # ---- building -------------------------------------------------------------------

    @classmethod
    def from_definitions(
        cls, objects: Iterable[Definition], version: int = 0, validate: bool = True
    ) -> Catalog:
        """Collect definitions (plus the entities and sources views were built from) and
        validate the set. Duplicate names of one kind are an error."""
        buckets: dict[str, dict[str, Definition]] = {kind: {} for kind in KINDS}

        def add(obj: Definition) -> None:
            bucket = buckets[obj.kind]
            existing = bucket.get(obj.name)  # type: ignore[attr-defined]
            if existing is not None and existing != obj:
                raise DefinitionError(
                    f"two different {obj.kind.replace('_', ' ')} definitions are named '{obj.name}'"  # type: ignore[attr-defined]
                )
            bucket[obj.name] = obj  # type: ignore[attr-defined]

        def add_with_parts(obj: Definition) -> None:
            if isinstance(obj, FeatureView):
                for entity in obj.entity_objects:
                    add(entity)
                if obj.source_object is not None:
                    add(obj.source_object)
            if isinstance(obj, OnDemandView):
                for source in obj.source_objects:
                    add_with_parts(source)
            if obj.kind == "source" and getattr(obj, "name", None) is None:
                return  # an unnamed source only counts through the view that uses it
            if obj.kind not in buckets:
                return  # a part of other definitions (a field, an aggregation ...)
            add(obj)

        for obj in objects:
            add_with_parts(obj)
        catalog = cls(
            entities=buckets["entity"],  # type: ignore[arg-type]
            sources=buckets["source"],  # type: ignore[arg-type]
            views=buckets["feature_view"],  # type: ignore[arg-type]
            services=buckets["feature_service"],  # type: ignore[arg-type]
            version=version,
            aggregation_views=buckets["aggregation_view"],  # type: ignore[arg-type]
            permissions=buckets["permission"],  # type: ignore[arg-type]
            request_sources=buckets["request_source"],  # type: ignore[arg-type]
            on_demand_views=buckets["on_demand_view"],  # type: ignore[arg-type]
        )
        if validate:
            catalog.validate()
        return catalog

    @classmethod
    def from_specs(cls, specs: dict[str, dict[str, dict[str, Any]]], version: int = 0) -> Catalog:
        """Rebuild from the registry's stored JSON: ``{kind: {name: spec}}``."""
        objects = [
            definition_from_spec(kind, spec)
            for kind in KINDS
            for spec in specs.get(kind, {}).values()
        ]
        return cls.from_definitions(objects, version=version)

    def to_specs(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {
            kind: {name: obj.to_spec() for name, obj in self.of_kind(kind).items()}
            for kind in KINDS
        }

    def of_kind(self, kind: str) -> Mapping[str, Definition]:
        by_kind: dict[str, Mapping[str, Definition]] = {
            "entity": self.entities,
            "source": self.sources,
            "feature_view": self.views,
            "aggregation_view": self.aggregation_views,
            "feature_service": self.services,
            "permission": self.permissions,
            "request_source": self.request_sources,
            "on_demand_view": self.on_demand_views,
        }
        return by_kind[kind]

    def all_views(self) -> dict[str, FeatureView]:
        """Feature views and aggregation views (one namespace: `view:feature`)."""
        return {**self.views, **self.aggregation_views}

    # ---- validation of the whole set ------------------------------------------------

    def validate(self) -> None:
        for name in sorted(set(self.views) & set(self.aggregation_views)):
            raise DefinitionError(
                f"a feature view and an aggregation view are both named '{name}'; "
                "views share one namespace"
            )
        for view in self.all_views().values():
            label = f"{type(view).__name__} '{view.name}'"
            for entity_name in view.entities:
                if entity_name not in self.entities:
                    raise DefinitionError(
                        f"{label}: field 'entities': {NotFoundError('entity', entity_name, self.entities)}"
                    )
            if view.source not in self.sources:
                raise DefinitionError(
                    f"{label}: field 'source': {NotFoundError('source', view.source, self.sources)}"
                )
            entities = [self.entities[name] for name in view.entities]
            check_join_keys_not_features(view, entities)
            owners: dict[str, str] = {}
            for entity in entities:
                for key in entity.join_keys:
                    if key in owners:
                        raise DefinitionError(
                            f"{label}: field 'entities': entities '{owners[key]}' and "
                            f"'{entity.name}' share the join key '{key}'"
                        )
                    owners[key] = entity.name
            source = self.sources[view.source]
            if isinstance(source, PushSource) and isinstance(view, AggregationView):
                _check_pushed_columns_typed(view, label)
            _check_expectation_columns(view, source, [*owners], label)
            reserved = {source.timestamp_field, source.created_timestamp_field}
            for feature in view.feature_names:
                if feature in reserved:
                    raise DefinitionError(
                        f"{label}: field 'schema': '{feature}' is a timestamp column of source "
                        f"'{source.name}', not a feature"
                    )
        check_on_demand(self)
        for service in self.services.values():
            for ref in service.features:
                try:
                    self.resolve([ref])
                except NotFoundError as error:
                    raise DefinitionError(
                        f"FeatureService '{service.name}': field 'features': {error}"
                    ) from None
            if service.prompt_template is not None:
                self._check_prompt_template(service)
            if service.transforms:
                self._check_transforms(service)

    def _check_transforms(self, service: FeatureService) -> None:
        """A model transform reads a feature of its service; a target is not a feature."""
        refs = self.resolve(service=service.name)
        known = {ref.ref for ref in refs}
        outputs = {ref.output_name for ref in refs}
        for transform in service.transforms:
            label = f"FeatureService '{service.name}': field 'transforms': {transform.label}"
            if transform.feature not in known:
                raise DefinitionError(f"{label}: {NotFoundError('feature of the service', transform.feature, known)}")  # fmt: skip
            target = getattr(transform, "target", None)
            if target is not None and target in outputs:
                raise DefinitionError(
                    f"{label}: the target '{target}' is a feature of the service; a target "
                    "is a label column of the training set"
                )

    def _check_prompt_template(self, service: FeatureService) -> None:
        """A prompt template may read the service's features and its entities' keys."""
        from almanac.definitions.prompt_template import template_variables

        label = f"FeatureService '{service.name}': field 'prompt_template'"
        try:
            names = template_variables(service.prompt_template or "")
        except DefinitionError as error:
            raise DefinitionError(
                f"{label}: {str(error).removeprefix('prompt_template: ')}"
            ) from None
        known = {ref.output_name for ref in self.resolve(service=service.name)}
        for view in service.views:
            if view not in self.on_demand_views:  # computed per request: no keys of its own
                known.update(self.join_keys(view))
        unknown = sorted(names - known)
        if unknown:
            raise DefinitionError(f"{label}: {NotFoundError('variable', unknown[0], known)}")

    def users_of(self, kind: str, name: str) -> list[str]:
        """Objects that refer to (kind, name): what blocks deleting it."""
        users: list[str] = []
        views = self.all_views().values()
        if kind == "entity":
            users += [f"{_kind(v)} '{v.name}'" for v in views if name in v.entities]
        if kind == "source":
            users += [f"{_kind(v)} '{v.name}'" for v in views if v.source == name]
        if kind in ("feature_view", "aggregation_view", "on_demand_view", "request_source"):
            users += [
                f"on-demand view '{v.name}'"
                for v in self.on_demand_views.values()
                if name in v.sources
            ]
        if kind in ("feature_view", "aggregation_view", "on_demand_view"):
            users += [
                f"feature service '{s.name}'" for s in self.services.values() if name in s.views
            ]
        return users

    # ---- lookups used by retrieval --------------------------------------------------

    def view(self, name: str) -> FeatureView:
        """A feature view or an aggregation view (an `AggregationView` is a `FeatureView`
        whose features are derived from its aggregations)."""
        found = self.views.get(name) or self.aggregation_views.get(name)
        if found is None:
            hint = f"'{name}' is an on-demand view" if name in self.on_demand_views else ""
            raise NotFoundError("feature view", name, {**self.all_views(), **self.on_demand_views}, hint)  # fmt: skip
        return found

    def online_views(self) -> dict[str, FeatureView | OnDemandView]:
        """What the online store holds values of, by name: the online views, then the
        write-time on-demand views (`write_to_online=True`, stored under their names)."""
        stored: dict[str, FeatureView | OnDemandView] = {n: v for n, v in self.all_views().items() if v.online}  # fmt: skip
        stored.update({n: v for n, v in self.on_demand_views.items() if v.write_to_online})
        return stored

    def on_demand_fields(self, name: str) -> list[Field]:
        """An on-demand view's features, typed: as declared, else as its expressions
        compute them (`almanac.registry.on_demand`)."""
        fields = self._on_demand_fields.get(name)
        if fields is None:
            from almanac.registry.on_demand import output_fields

            fields = self._on_demand_fields[name] = output_fields(self, self.on_demand_views[name])
        return fields

    def service(self, name: str) -> FeatureService:
        try:
            return self.services[name]
        except KeyError:
            raise NotFoundError("feature service", name, self.services) from None

    def source_of(self, view: str | FeatureView) -> Source:
        view = self.view(view) if isinstance(view, str) else view
        return self.sources[view.source]

    def join_keys(self, view: str | FeatureView) -> dict[str, str]:
        """The view's join keys and their dtypes, in declaration order."""
        view = self.view(view) if isinstance(view, str) else view
        keys: dict[str, str] = {}
        for entity_name in view.entities:
            keys.update(self.entities[entity_name].join_keys)
        return keys

    def resolve(
        self,
        features: Sequence[str] | None = None,
        service: str | None = None,
        full_feature_names: bool = False,
    ) -> list[FeatureRef]:
        """Turn feature references (or a service name) into concrete features.

        A reference is ``view:feature`` or a whole ``view``. Output names are the feature
        names, or ``view__feature`` with `full_feature_names`; two features that would get
        the same output name are an error that says how to fix it.
        """
        if (features is None) == (service is None):
            raise InputError("give either features or a feature service, not both or neither")
        refs = list(self.service(service).features) if service is not None else list(features or [])
        if not refs:
            raise InputError("no features requested")
        resolved: list[FeatureRef] = []
        for ref in refs:
            if not isinstance(ref, str):
                raise InputError(f"feature reference must be text like 'view:feature', got {ref!r}")
            view_name, _, feature_name = ref.partition(":")
            if view_name in self.on_demand_views:
                fields = self.on_demand_fields(view_name)
            else:
                fields = self.view(view_name).features
            if feature_name:
                known = [f"{view_name}:{f.name}" for f in fields]
                fields = [f for f in fields if f.name == feature_name]
                if not fields:
                    raise NotFoundError("feature", ref, known)
            for f in fields:
                name = f"{view_name}__{f.name}" if full_feature_names else f.name
                resolved.append(FeatureRef(view=view_name, field=f, output_name=name))
        seen: dict[str, str] = {}
        for item in resolved:
            if item.output_name in seen and seen[item.output_name] != item.ref:
                raise InputError(
                    f"features '{seen[item.output_name]}' and '{item.ref}' would both be named "
                    f"'{item.output_name}'; pass full_feature_names=True"
                )
            seen[item.output_name] = item.ref
        # The same feature asked for twice is returned once.
        return list({item.ref: item for item in resolved}.values())


def _check_expectation_columns(
    view: FeatureView, source: Source, keys: list[str], label: str
) -> None:
    """An expectation checks a column the view reads: a join key or a feature (an
    aggregation view: an aggregated column). Time columns have their own rules (rule 7)."""
    if isinstance(view, AggregationView):
        read = set(input_dtypes(view.aggregations, view.columns))
    else:
        read = set(view.feature_names)
    read |= set(keys)
    for expectation in view.expectations:
        if expectation.column is not None and expectation.column not in read:
            raise DefinitionError(
                f"{label}: field 'expectations': {expectation.label} checks column "
                f"'{expectation.column}', which the view does not read (it reads: "
                f"{', '.join(sorted(c for c in read if c))})"
            )


def _check_pushed_columns_typed(view: AggregationView, label: str) -> None:
    """Pushed rows carry no schema of their own: a column that a push-fed aggregation
    only counts needs a declared type, or every push could bring another one (1 and "1"
    would count as two values online and as one offline)."""
    for column, dtype in input_dtypes(view.aggregations, view.columns).items():
        if dtype is None:
            raise DefinitionError(
                f"{label}: field 'columns': column '{column}' is counted but has no declared "
                f"type, and source '{view.source}' is a push source, which keeps no schema; "
                f"declare it, e.g. columns=[Field('{column}', String)]"
            )
