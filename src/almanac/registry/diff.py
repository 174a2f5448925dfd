"""`plan`: what `apply` would change, object by object and field by field."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from almanac.errors import RegistryError
from almanac.registry.catalog import KINDS, Catalog
from almanac.registry.on_demand import write_time_views, written_from

Action = Literal["create", "update", "delete"]


@dataclass(frozen=True)
class FieldChange:
    path: str  # e.g. "schema[watch_count_30d].dtype", "ttl"
    before: Any
    after: Any

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "before": self.before, "after": self.after}


@dataclass(frozen=True)
class Change:
    kind: str
    name: str
    action: Action
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    fields: list[FieldChange] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "fields": [f.to_json() for f in self.fields],
        }


@dataclass(frozen=True)
class Plan:
    """The changes from the registry's catalog (at `base_version`) to the repo's.

    `kept` lists (kind, name) of registered objects that the repo does not declare and
    never applied (another author's): they stay, and `target` holds them too."""

    base_version: int
    changes: list[Change]
    target: Catalog
    kept: list[tuple[str, str]] = field(default_factory=list)
    base: Catalog = field(default_factory=Catalog)

    @property
    def empty(self) -> bool:
        return not self.changes

    def counts(self) -> dict[str, int]:
        return {a: sum(c.action == a for c in self.changes) for a in ("create", "update", "delete")}

    def to_json(self) -> dict[str, Any]:
        return {
            "base_version": self.base_version,
            "changes": [c.to_json() for c in self.changes],
            "kept": [{"kind": kind, "name": name} for kind, name in self.kept],
        }

    def views_with_stale_online_data(self) -> list[str]:
        """Views whose online values no longer fit their definition: deleted views, and
        views whose `values_fingerprint` changes (another source or source query, keys,
        features, types, transformation, aggregations...). Their online data and
        watermark must be cleared before the change lands (the next materialization
        then rewrites them from the offline store); another online store finds out from
        its watermark's fingerprint when it is next materialized. Write-time on-demand
        views count as views: their values are stored too."""
        after = {*self.target.all_views(), *(v.name for v in write_time_views(self.target))}
        before = {*self.base.all_views(), *(v.name for v in write_time_views(self.base))}
        return sorted(
            name
            for name in before
            if name not in after
            or values_fingerprint(self.base, name) != values_fingerprint(self.target, name)
        )


# Documentation: changes nothing a store holds, at any depth (a field's description).
_DOCUMENTATION = ("owner", "description", "tags")
# Fields of a view that are read-time settings or schedules, not what its stored values are
# computed from: a TTL is applied at read time, a cadence only says when to run.
_READ_TIME = ("ttl", "materialize_every", "freshness")
# Rules that admit rows at the door: they decide what is written, not how stored values
# are computed from it (values admitted before an edit stay valid).
_ADMISSION = ("expectations", "on_violation", "extra_columns")


def _values_layout(spec: Any) -> Any:
    """A spec without its documentation, at any depth, and without settings left unset
    (None, [], {}): a field a later version of Almanac adds, unset by default, leaves
    every view's fingerprint as it was, so an upgrade never clears an online store."""
    if isinstance(spec, dict):
        return {
            k: _values_layout(v)
            for k, v in spec.items()
            if k not in _DOCUMENTATION and k not in _ADMISSION and v not in (None, [], {})
        }
    if isinstance(spec, list):
        return [_values_layout(item) for item in spec]
    return spec


def _view_layout(view_spec: dict[str, Any]) -> Any:
    """What a view's online values depend on: every field of its spec but documentation,
    its TTL and its cadence — the source it reads, its keys, features and types, its
    transformation, aggregations and tile size, and whether it is served at all (a view
    switched back online must not serve what it held before it was switched off)."""
    return {k: v for k, v in _values_layout(view_spec).items() if k not in _READ_TIME}


def values_fingerprint(catalog: Catalog, view: str) -> str:
    """A short hash of everything a view's online values are computed from: the view
    (but documentation, TTL and cadence), its source (but documentation) and its
    entities' join keys. Two definitions with the same fingerprint store the same
    values; materialization records it with each watermark, so that an online store
    holding values of an earlier definition is cleared and rewritten."""
    cached = _fingerprints.get((id(catalog), view))
    if cached is not None and cached[0] is catalog:  # pushes ask for every batch
        return cached[1]
    on_demand = catalog.on_demand_views.get(view)
    if on_demand is not None:  # a write-time view: its definition and its source view's
        stored_from = written_from(catalog, on_demand).name
        layout: dict[str, Any] = {
            "on_demand": _values_layout(on_demand.to_spec()),
            "from": values_fingerprint(catalog, stored_from),
        }
    else:
        definition = catalog.view(view)
        layout = {
            "view": _view_layout(definition.to_spec()),
            "source": _values_layout(catalog.source_of(definition).to_spec()),
            "keys": catalog.join_keys(definition),
        }
    text = json.dumps(layout, sort_keys=True, separators=(",", ":"), default=str)
    fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]
    if len(_fingerprints) >= 1024:
        _fingerprints.clear()
    _fingerprints[(id(catalog), view)] = (catalog, fingerprint)  # the catalog: ids not reused
    return fingerprint


_fingerprints: dict[tuple[int, str], tuple[Catalog, str]] = {}


def diff_specs(before: Any, after: Any, path: str = "") -> list[FieldChange]:
    """Field-level differences between two JSON values. Lists of named objects (a view's
    schema) are compared by name, so adding one field does not shift the others."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[FieldChange] = []
        for key in [*before, *(k for k in after if k not in before)]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in after:
                changes.append(FieldChange(sub, before[key], None))
            elif key not in before:
                changes.append(FieldChange(sub, None, after[key]))
            else:
                changes += diff_specs(before[key], after[key], sub)
        return changes
    if _named_list(before) and _named_list(after):
        old = {item["name"]: item for item in before}
        new = {item["name"]: item for item in after}
        changes = []
        for name in [*old, *(n for n in new if n not in old)]:
            sub = f"{path}[{name}]"
            if name not in new:
                changes.append(FieldChange(sub, old[name], None))
            elif name not in old:
                changes.append(FieldChange(sub, None, new[name]))
            else:
                changes += diff_specs(old[name], new[name], sub)
        if not changes and [i["name"] for i in before] != [i["name"] for i in after]:
            changes.append(
                FieldChange(
                    f"{path} (order)", [i["name"] for i in before], [i["name"] for i in after]
                )
            )
        return changes
    return [] if before == after else [FieldChange(path, before, after)]


def _named_list(value: Any) -> bool:
    """A list of objects with distinct names (an aggregation's name may be null)."""
    if not (isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)):
        return False
    names = [i["name"] for i in value]
    return all(isinstance(n, str) for n in names) and len(set(names)) == len(names)


def make_plan(
    current: Catalog, target: Catalog, owned: Collection[tuple[str, str]] | None = None
) -> Plan:
    """Compare the applied catalog with the repo's; refuse deleting what is still used.

    A registered object that the repo does not declare is deleted only if it is `owned`:
    (kind, name) pairs the repo applied before and has since removed. Any other is
    another author's, kept (`Plan.kept`) and validated with the repo's objects, so an
    apply never deletes work it did not know about. `owned=None` owns everything (prune).
    Deletions are checked before the target is validated as a whole, so that removing a
    view a service still lists gets the message that says so."""
    kept = [
        (kind, name)
        for kind in KINDS
        for name in sorted(set(current.of_kind(kind)) - set(target.of_kind(kind)))
        if owned is not None and (kind, name) not in owned
    ]
    if kept:
        objects = [obj for kind in KINDS for obj in target.of_kind(kind).values()]
        objects += [current.of_kind(kind)[name] for kind, name in kept]
        target = Catalog.from_definitions(objects, version=target.version, validate=False)
    changes: list[Change] = []
    for kind in KINDS:
        old, new = current.of_kind(kind), target.of_kind(kind)
        for name in sorted(set(old) | set(new)):
            before = old[name].to_spec() if name in old else None
            after = new[name].to_spec() if name in new else None
            if before is None:
                changes.append(Change(kind, name, "create", None, after))
            elif after is None:
                users = target.users_of(kind, name)
                if users:
                    raise RegistryError(
                        f"cannot delete {kind.replace('_', ' ')} '{name}': "
                        f"{', '.join(users)} still uses it"
                    )
                changes.append(Change(kind, name, "delete", before, None))
            elif before != after:
                changes.append(
                    Change(kind, name, "update", before, after, diff_specs(before, after))
                )
    target.validate()
    return Plan(current.version, changes, target, kept, base=current)
