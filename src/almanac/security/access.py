"""Authorization: what a `Permission` grants, decided in one place.

A principal is a set of identities (``user:alice``, ``role:fraud-model``,
``group:risk``, ``key:ci``): what its API key is scoped to, or what its token's claims
say. A request asks for an action on targets — the features it reads (feature-level:
each feature is a target), a view, a source, a service. The rules:

1. **Deny by default.** A target no permission grants the action on is denied.
2. A permission grants when one of its principals matches one of the caller's
   identities (globs: ``role:fraud-*``; ``*`` is everyone signed in), the action is one
   of its actions, and one of its resources matches the target: every field the
   resource sets matches (names are globs; `service` matches the services listing the
   feature or view; `tags` are matched against the feature's tags and its view's).
3. **Sensitive tags.** A tag (key and value) that some permission's resource names is
   sensitive: a feature carrying it also needs, for each such tag, a permission that
   grants the action with a resource naming that tag. So `pii: "true"` on a feature
   keeps it from every reader of its view who is not also granted `pii` features.

A denial names the action and the target asked for, never what else exists.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from almanac.definitions.permission import Permission, Resource
from almanac.errors import AccessDeniedError
from almanac.registry.catalog import Catalog
from almanac.registry.on_demand import stored_as


@dataclass(frozen=True)
class Principal:
    """Who is calling: `name` for the audit log, `identities` for permissions."""

    name: str
    identities: frozenset[str]

    @classmethod
    def of(cls, name: str, identities: Iterable[str] = ()) -> Principal:
        return cls(name, frozenset([name, *identities]))


@dataclass(frozen=True)
class Target:
    """One thing an action is on."""

    kind: str  # feature | feature_view | aggregation_view | source | feature_service
    name: str
    view: str | None = None
    source: str | None = None
    services: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        if self.kind == "feature":
            return f"feature '{self.view}:{self.name}'"
        return f"{self.kind.replace('_', ' ')} '{self.name}'"


@dataclass
class Decision:
    allowed: bool
    action: str
    target: Target
    granted_by: list[str] = field(default_factory=list)
    reason: str = ""


class AccessPolicy:
    """The permissions of one catalog, with what its targets are (built once per
    catalog version; decisions are cached per principal, action and target)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.permissions: list[Permission] = list(catalog.permissions.values())
        self.sensitive = frozenset(
            item for p in self.permissions for r in p.resources for item in r.tags.items()
        )
        # (view, feature) → the services that list it; (view, "*"): those listing it whole.
        self._services_of: dict[tuple[str, str], set[str]] = {}
        for service in catalog.services.values():
            for ref in service.features:
                view, _, feature = ref.partition(":")
                self._services_of.setdefault((view, feature or "*"), set()).add(service.name)
        self._decide = lru_cache(maxsize=65_536)(self._decide_uncached)
        self._denied_feature = lru_cache(maxsize=65_536)(self._denied_feature_uncached)
        self._feature_targets: dict[tuple[str, str], Target] = {}

    # ---- targets ------------------------------------------------------------------------

    def feature_targets(self, refs: Iterable[tuple[str, str]]) -> list[Target]:
        """The targets of reading features (view, feature name) — one per feature."""
        out = []
        for ref in refs:
            target = self._feature_targets.get(ref)
            if target is None:
                target = self._feature_targets[ref] = self._feature_target(*ref)
            out.append(target)
        return out

    def require_features(self, principal: Principal, action: str, refs: tuple[tuple[str, str], ...]) -> None:  # fmt: skip
        """`require` on the features' targets, the whole answer cached per principal,
        action and feature list (a request's check is then one dictionary lookup)."""
        denied = self._denied_feature(principal.identities, action, refs)
        if denied is not None:
            raise AccessDeniedError(f"{principal.name} may not {action} {denied}")

    def _denied_feature_uncached(self, identities: frozenset[str], action: str, refs: tuple[tuple[str, str], ...]) -> str | None:  # fmt: skip
        for target in self.feature_targets(refs):
            if not self._decide(identities, action, target).allowed:
                return target.label
        return None

    def _feature_target(self, view_name: str, feature: str) -> Target:
        on_demand = self.catalog.on_demand_views.get(view_name)
        view = on_demand or self.catalog.all_views()[view_name]
        features = self.catalog.on_demand_fields(view_name) if on_demand else getattr(view, "features", [])  # fmt: skip
        fields = {f.name: f for f in features}
        own = fields[feature].tags if feature in fields else {}
        tags = tuple(sorted({**view.tags, **own}.items()))
        services = self._services_of.get((view_name, feature), set()) | self._services_of.get((view_name, "*"), set())  # fmt: skip
        source = None if on_demand else getattr(view, "source", None)
        return Target("feature", feature, view_name, source, tuple(sorted(services)), tags)

    def view_target(self, name: str) -> Target:
        services = tuple(sorted({s for (v, _), found in self._services_of.items() if v == name for s in found}))  # fmt: skip
        on_demand = self.catalog.on_demand_views.get(name)
        if on_demand is not None:  # materialized when write-time: its source view's source
            source = stored_as(self.catalog, name).source if on_demand.write_to_online else None
            return Target("on_demand_view", name, name, source, services, tuple(sorted(on_demand.tags.items())))  # fmt: skip
        view = self.catalog.view(name)
        kind = "aggregation_view" if name in self.catalog.aggregation_views else "feature_view"
        return Target(kind, name, name, view.source, services, tuple(sorted(view.tags.items())))

    def source_target(self, name: str) -> Target:
        return Target("source", name, source=name)

    def service_target(self, name: str) -> Target:
        service = self.catalog.service(name)
        return Target("feature_service", name, services=(name,), tags=tuple(sorted(service.tags.items())))  # fmt: skip

    def definition_target(self, kind: str, name: str, definition: Any) -> Target:
        """The target of applying (creating, changing, deleting) a definition: built from
        the definition itself, as a new one is not in this policy's catalog yet."""
        tags = tuple(sorted(getattr(definition, "tags", {}).items()))
        if kind in ("feature_view", "aggregation_view"):
            return Target(kind, name, name, definition.source, tags=tags)
        if kind == "source":
            return Target(kind, name, source=name, tags=tags)
        if kind == "feature_service":
            return Target(kind, name, services=(name,), tags=tags)
        return Target(kind, name, tags=tags)

    # ---- decisions ----------------------------------------------------------------------

    def decide(self, principal: Principal, action: str, target: Target) -> Decision:
        return self._decide(principal.identities, action, target)

    def _decide_uncached(self, identities: frozenset[str], action: str, target: Target) -> Decision:  # fmt: skip
        granting = [
            (p, r) for p in self.permissions
            if action in p.actions and _any_principal(p.principals, identities)
            for r in p.resources if _matches(r, target)
        ]  # fmt: skip
        if not granting:
            return Decision(False, action, target, reason=f"no permission grants {action} on {target.label} to {_who(identities)}")  # fmt: skip
        names = sorted({p.name for p, _ in granting})
        for tag in target.tags:
            if tag not in self.sensitive:
                continue
            if not any(tag in r.tags.items() for _, r in granting):
                key, value = tag
                return Decision(False, action, target, names, f"{target.label} is tagged {key}={value}: no permission grants {action} on {key}={value} features to {_who(identities)}")  # fmt: skip
        return Decision(True, action, target, names, "granted by " + ", ".join(names))

    def require(self, principal: Principal, action: str, targets: Iterable[Target]) -> None:
        """AccessDeniedError naming the first target the action is denied on."""
        for target in targets:
            decision = self.decide(principal, action, target)
            if not decision.allowed:
                raise AccessDeniedError(f"{principal.name} may not {action} {target.label}")

    def allowed(self, principal: Principal, action: str, target: Target) -> bool:
        return self.decide(principal, action, target).allowed


def _any_principal(patterns: list[str], identities: frozenset[str]) -> bool:
    for pattern in patterns:
        if pattern == "*":
            return True
        if pattern in identities or any(fnmatch.fnmatchcase(i, pattern) for i in identities):
            return True
    return False


def _matches(resource: Resource, target: Target) -> bool:
    if resource.view is not None and (target.view is None or not fnmatch.fnmatchcase(target.view, resource.view)):  # fmt: skip
        return False
    if resource.source is not None and (target.source is None or not fnmatch.fnmatchcase(target.source, resource.source)):  # fmt: skip
        return False
    if resource.name is not None and not fnmatch.fnmatchcase(target.name, resource.name):
        return False
    if resource.service is not None and not any(fnmatch.fnmatchcase(s, resource.service) for s in target.services):  # fmt: skip
        return False
    tags = dict(target.tags)
    return all(tags.get(k) == v for k, v in resource.tags.items())


def _who(identities: frozenset[str]) -> str:
    return ", ".join(sorted(identities))
