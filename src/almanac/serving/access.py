"""Authorization in the server: the caller's principal (set per request by the ASGI entry
point, read by every handler through a context variable) checked against the catalog's
permissions (`almanac.security.access`).

Enforcement is on once `server.auth` is configured: then every endpoint but the open
ones (health, metrics, docs) needs a principal, and each action on each target is
checked — reads feature by feature, pushes on their source, catalog listings filtered
to what the caller may describe. Without `server.auth` (no keys, or the legacy
`server.api_keys` list), any authenticated caller may do everything, as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from almanac.security.access import AccessPolicy, Principal, Target

if TYPE_CHECKING:
    from almanac.serving.handlers import ServingState

PRINCIPAL: ContextVar[Principal | None] = ContextVar("almanac_principal", default=None)
_policies: dict[int, tuple[Any, AccessPolicy]] = {}


def policy(state: ServingState) -> AccessPolicy | None:
    """The catalog's access policy when enforcement is on, else None."""
    if state.store.config.server.auth is None:
        return None
    catalog = state.catalog
    cached = _policies.get(id(catalog))
    if cached is None or cached[0] is not catalog:
        _policies.clear()  # one catalog is served at a time
        cached = _policies[id(catalog)] = (catalog, AccessPolicy(catalog))
    return cached[1]


def _principal() -> Principal:
    principal = PRINCIPAL.get()
    return principal if principal is not None else Principal.of("anonymous")


def require(state: ServingState, action: str, targets: Iterable[Target] | None = None, **what: str) -> None:  # fmt: skip
    """Raise AccessDeniedError (403) unless the caller may `action` every target (or
    the one `what` names: view=, source=, service=)."""
    found = policy(state)
    if found is None:
        return
    chosen = list(targets) if targets is not None else [_target(found, **what)]
    found.require(_principal(), action, chosen)


def require_features(state: ServingState, action: str, refs: Iterable[tuple[str, str]]) -> None:
    found = policy(state)
    if found is not None:
        found.require_features(_principal(), action, tuple(refs))


def visible(state: ServingState, kind: str, name: str) -> bool:
    """Whether the caller may describe an object (catalog listings show only those)."""
    return allowed(state, "describe", **{kind: name})


def allowed(state: ServingState, action: str, **what: str) -> bool:
    found = policy(state)
    if found is None:
        return True
    return found.allowed(_principal(), action, _target(found, **what))


def visible_feature(state: ServingState, view: str, feature: str) -> bool:
    found = policy(state)
    if found is None:
        return True
    [target] = found.feature_targets([(view, feature)])
    return found.allowed(_principal(), "describe", target)


def _target(found: AccessPolicy, view: str | None = None, source: str | None = None, service: str | None = None, entity: str | None = None) -> Target:  # fmt: skip
    if entity is not None:
        return found.definition_target("entity", entity, found.catalog.entities[entity])
    if view is not None:
        return found.view_target(view)
    if source is not None:
        return found.source_target(source)
    if service is not None:
        return found.service_target(service)
    raise ValueError("name a view, a source, a service or an entity")
