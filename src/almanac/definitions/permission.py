"""Who may do what to which features: `Permission` and `Resource`, definitions like any
other (applied, versioned and diffed by `plan`). What they mean is `almanac.security.access`.

```python
fraud_readers = Permission(name="fraud_readers", principals=["role:fraud-model"],
                           actions=["read_online", "describe"],
                           resources=[Resource(service="fraud_*")])
pii = Permission(name="pii_owners", principals=["group:privacy"],
                 actions=["read_online", "read_offline"], resources=[Resource(tags={"pii": "true"})])
```
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from almanac.definitions.base import Definition, check_name

Action = Literal[
    "describe", "read_online", "read_offline", "write_online", "write_offline", "materialize", "apply"
]  # fmt: skip
ACTIONS: tuple[str, ...] = Action.__args__  # type: ignore[attr-defined]
# A principal: kind:name, the name a glob (role:fraud-*, user:*), or "*" for everyone
# authenticated.
_PRINCIPAL = re.compile(r"^(\*|(user|role|group|key|cert):[A-Za-z0-9_.@*?\[\]/-]{1,200})$")
_PATTERN = re.compile(r"^[A-Za-z0-9_*?\[\]]{1,100}$")


def check_principal(value: str, glob: bool = True) -> str:
    """`value` if it is a principal (kind:name; with `glob`, a pattern or "*")."""
    if not _PRINCIPAL.fullmatch(value) or (not glob and any(c in value for c in "*?[]")):
        everyone = ", or * for everyone signed in" if glob else ""
        raise ValueError(
            f"{value!r} is not a principal: write kind:name with kind user, role, group, key "
            f"or cert (e.g. role:fraud-model, group:risk){everyone}"
        )
    return value


class Resource(BaseModel):
    """What a permission covers: every field given must match (names are globs:
    `fraud_*`); a feature matches by its own name, its view, the view's source, the
    feature services that list it, and the tags of the feature and its view.
    `Resource()` covers everything."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str | None = None
    view: str | None = None
    source: str | None = None
    name: str | None = None  # the feature's (or the object's) own name
    tags: dict[str, str] = {}

    @field_validator("service", "view", "source", "name")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None and not _PATTERN.fullmatch(value):
            raise ValueError(f"{value!r} is not a name or a glob of names (letters, digits, _ * ? [])")  # fmt: skip
        return value


class Permission(Definition):
    """Grants `actions` on `resources` to `principals`. With authentication on,
    everything no permission grants is denied."""

    kind: ClassVar[str] = "permission"
    name: str
    principals: list[str]
    actions: list[Action]
    resources: list[Resource] = [Resource()]
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("principals")
    @classmethod
    def _principals(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError("name at least one principal (role:…, group:…, user:…, key:…, cert:…)")
        for value in values:
            check_principal(value)
        return values

    @field_validator("actions")
    @classmethod
    def _actions(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError(f"name at least one action ({', '.join(ACTIONS)})")
        return values

    @field_validator("resources")
    @classmethod
    def _resources(cls, values: list[Resource]) -> list[Resource]:
        if not values:
            raise ValueError("name at least one resource (Resource() covers everything)")
        return values
