"""Entities: what features describe, identified by one or several typed join keys."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import field_validator, model_validator

from almanac.definitions.base import Definition, Name, check_name
from almanac.definitions.types import KEY_DTYPES, String, parse_dtype


class Entity(Definition):
    """An entity such as a user or an item.

    ``Entity(name="user", join_keys=["user_id"])`` declares a string key;
    ``Entity(name="user", join_keys=["user_id"], dtype=Int64)`` an int64 key; a
    composite key with mixed types is a dict: ``join_keys={"user_id": String,
    "item_id": Int64}``.
    """

    kind: ClassVar[str] = "entity"

    name: Name
    join_keys: dict[str, str]
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = {}

    @model_validator(mode="before")
    @classmethod
    def _keys_from_list(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("join_keys"), list | tuple):
            data = dict(data)
            dtype = data.pop("dtype", String)
            data["join_keys"] = {key: dtype for key in data["join_keys"]}
        elif isinstance(data, dict) and "dtype" in data:
            raise ValueError("'dtype' goes with a list of join_keys; use a dict for mixed types")
        return data

    @field_validator("join_keys")
    @classmethod
    def _check_keys(cls, keys: dict[str, str]) -> dict[str, str]:
        if not keys:
            raise ValueError("an entity needs at least one join key")
        checked = {}
        for key, dtype in keys.items():
            check_name(key)
            dtype = parse_dtype(dtype)
            if dtype not in KEY_DTYPES:
                raise ValueError(f"join key '{key}' has dtype {dtype}; keys are int64 or string")
            checked[key] = dtype
        return checked
