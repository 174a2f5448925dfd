"""Backends are plug-ins, found by entry point: one package each, Almanac's own included.

A package adds a backend by declaring, in its own `pyproject.toml`,

    [project.entry-points."almanac.backends"]
    "offline.myengine" = "my_package.engine:MyEngine"      # offline: {engine: myengine}
    "online.mystore" = "my_package.store:MyStore"          # online: {url: mystore://...}

The name is `<role>.<name>`: the offline engine `offline.engine` names, or the scheme of
`online.url`. The class implements the role's port (`almanac.ports.offline.OfflineEngine`,
`almanac.ports.online.OnlineStore`) and builds itself with `from_config(config)`; if it
has settings of its own it declares a Pydantic model as `settings`, which validates its
section of almanac.yaml (`offline: {engine: spark, spark: {master: ...}}`) when the repo's
config is read. Almanac's built-in backends are registered the same way, in its own
`pyproject.toml`. Nothing is imported until a backend is used, so naming one costs
nothing (pyspark is imported only by a repo that runs on Spark).
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

from pydantic import BaseModel

from almanac.errors import ConfigError

GROUP = "almanac.backends"
Role = Literal["offline", "online", "stream"]
_SETTING_OF_ROLE = {"offline": "offline.engine", "online": "online.url", "stream": "kind"}


@cache
def _registered() -> dict[str, EntryPoint]:
    return {point.name: point for point in entry_points(group=GROUP)}


def names(role: Role) -> list[str]:
    """The registered backend names of a role, sorted."""
    prefix = f"{role}."
    return sorted(name.removeprefix(prefix) for name in _registered() if name.startswith(prefix))


def load(role: Role, name: str) -> Any:
    """The backend class registered as `<role>.<name>`; a ConfigError naming the setting
    and the registered choices when there is none or it cannot be imported."""
    point = _registered().get(f"{role}.{name}")
    if point is None:
        known = ", ".join(names(role)) or "none"
        if not _registered():
            known += f" (no '{GROUP}' entry points at all: is almanac installed? `make install`)"
        raise ConfigError(
            f"{_SETTING_OF_ROLE[role]}: unknown backend '{name}' (registered: {known})"
        )
    try:
        return point.load()
    except ImportError as error:
        raise ConfigError(
            f"{_SETTING_OF_ROLE[role]}: backend '{name}' ({point.value}) cannot be imported: "
            f"{error} (is the package that provides it installed? For Spark: "
            '`pip install "almanac[spark]"`)'
        ) from None


def settings_model(role: Role, name: str) -> type[BaseModel] | None:
    """The Pydantic model that validates backend `name`'s own section, if it has one."""
    model = getattr(load(role, name), "settings", None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None
