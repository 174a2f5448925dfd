"""`plan`: what `apply` would change, object by object and field by field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from almanac.errors import RegistryError
from almanac.registry.catalog import KINDS, Catalog

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
    """The changes from the registry's catalog (at `base_version`) to the repo's."""

    base_version: int
    changes: list[Change]
    target: Catalog

    @property
    def empty(self) -> bool:
        return not self.changes

    def counts(self) -> dict[str, int]:
        return {a: sum(c.action == a for c in self.changes) for a in ("create", "update", "delete")}

    def to_json(self) -> dict[str, Any]:
        return {"base_version": self.base_version, "changes": [c.to_json() for c in self.changes]}

    def views_with_stale_online_data(self) -> list[str]:
        """Views whose online values no longer fit their definition: deleted views, views
        whose join keys, feature names, dtypes or transformation change, and views that
        read a changed source (other rows, other time columns). Their online data and
        watermark must be cleared before the change lands (the next materialization
        then rewrites them from the offline store)."""
        stale: set[str] = set()
        for change in self.changes:
            if change.kind in _VIEW_KINDS and change.action == "delete":
                stale.add(change.name)
            elif change.kind in _VIEW_KINDS and change.action == "update":
                layout = _VIEW_KINDS[change.kind]
                if layout(change.before or {}) != layout(change.after or {}):
                    stale.add(change.name)
            elif change.kind == "entity" and change.action == "update" and _keys_changed(change):
                stale.update(
                    v.name for v in self.target.all_views().values() if change.name in v.entities
                )
            elif change.kind == "source" and change.action == "update" and _rows_changed(change):
                stale.update(
                    v.name for v in self.target.all_views().values() if v.source == change.name
                )
        return sorted(stale)


def _rows_changed(change: Change) -> bool:
    """Everything but documentation changes which rows a source yields."""
    cosmetic = ("owner", "description", "tags")
    return any(f.path.split(".")[0].split("[")[0] not in cosmetic for f in change.fields)


def _keys_changed(change: Change) -> bool:
    return (change.before or {}).get("join_keys") != (change.after or {}).get("join_keys")


def _layout(view_spec: dict[str, Any]) -> tuple[Any, ...]:
    """What the online store's data depends on: keys, feature names and dtypes, and
    the transformation that computes the values."""
    fields = tuple((f["name"], f["dtype"]) for f in view_spec.get("schema", []))
    return tuple(view_spec.get("entities", [])), fields, view_spec.get("transformation")


# Fields of an aggregation view that do not change its stored tiles.
_COSMETIC = ("owner", "description", "tags", "materialize_every", "online")


def _tile_layout(view_spec: dict[str, Any]) -> dict[str, Any]:
    """Tiles depend on everything but the cosmetic fields (entities, source, aggregations,
    column types, tile size, transformation)."""
    return {k: v for k, v in view_spec.items() if k not in _COSMETIC}


_VIEW_KINDS = {"feature_view": _layout, "aggregation_view": _tile_layout}


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


def make_plan(current: Catalog, target: Catalog) -> Plan:
    """Compare the applied catalog with the repo's; refuse deleting what is still used.

    Deletions are checked before the target is validated as a whole, so that removing a
    view a service still lists gets the message that says so."""
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
    return Plan(base_version=current.version, changes=changes, target=target)
