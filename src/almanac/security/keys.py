"""API keys, kept in the registry (`almanac.registry.state`, status kind ``api_key``):
named, scoped to principals, expiring, revocable. Only a hash of each key is stored; the
key itself is shown once, by `almanac keys create`.

A key is ``alm_<name>_<32 random url-safe characters>``: the name in it lets the server
find the record without trying every hash, and the hash (SHA-256: the key is random,
so a slow hash adds nothing) is compared in constant time. A server reads the records
again every `refresh_seconds`, so a revoked or expired key stops working without a
restart.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from almanac.definitions.base import check_name
from almanac.definitions.permission import _PRINCIPAL
from almanac.errors import InputError, NotFoundError
from almanac.registry.state import OperationalState
from almanac.security.access import Principal

KIND = "api_key"
_KEY = re.compile(r"^alm_([A-Za-z_][A-Za-z0-9_]{0,62})_([A-Za-z0-9_-]{32,64})$")


@dataclass(frozen=True)
class ApiKey:
    name: str
    principals: list[str]
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    digest: str  # SHA-256 of the key, hex

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and datetime.fromisoformat(self.expires_at) <= datetime.now(UTC):
            return "expired"
        return "active"

    def public(self) -> dict[str, Any]:
        """What `keys list` shows (never the digest)."""
        out = {k: v for k, v in asdict(self).items() if k != "digest"}
        out["status"] = self.status
        return out


def create_key(state: OperationalState, name: str, principals: list[str], expires: timedelta | None = None) -> str:  # fmt: skip
    """Make a key, store its hash, and return the key (shown once)."""
    try:
        check_name(name)
    except ValueError as error:
        raise InputError(f"key name: {error}") from None
    if not principals:
        raise InputError("a key needs at least one principal (--principal role:fraud-model)")
    for principal in principals:
        if not _PRINCIPAL.fullmatch(principal) or "*" in principal:
            raise InputError(f"{principal!r} is not a principal: write kind:name (role:…, group:…, user:…)")  # fmt: skip
    if name in state.status(KIND):
        raise InputError(f"an API key named '{name}' exists (revoked ones too): choose another name")  # fmt: skip
    key = f"alm_{name}_{secrets.token_urlsafe(24)}"
    now = datetime.now(UTC)
    record = ApiKey(
        name=name, principals=list(principals), created_at=now.isoformat(),
        expires_at=None if expires is None else (now + expires).isoformat(),
        revoked_at=None, digest=hashlib.sha256(key.encode()).hexdigest(),
    )  # fmt: skip
    state.put_status(KIND, name, asdict(record))
    return key


def list_keys(state: OperationalState) -> list[ApiKey]:
    return sorted((ApiKey(**value) for _, value in state.status(KIND).values()), key=lambda k: k.name)  # fmt: skip


def revoke_key(state: OperationalState, name: str) -> ApiKey:
    records = state.status(KIND)
    if name not in records:
        raise NotFoundError("API key", name, records)
    key = ApiKey(**records[name][1])
    if key.revoked_at is None:
        key = ApiKey(**{**asdict(key), "revoked_at": datetime.now(UTC).isoformat()})
        state.put_status(KIND, name, asdict(key))
    return key


class KeyRing:
    """The server's view of the keys: records read again every `refresh_seconds`."""

    def __init__(self, state: OperationalState, refresh_seconds: float = 1.0) -> None:
        self.state, self.refresh_seconds = state, refresh_seconds
        self._keys: dict[str, ApiKey] = {}
        self._read_at = -1e9
        self._lock = threading.Lock()

    def principal(self, presented: str) -> Principal | None:
        match = _KEY.fullmatch(presented)
        if match is None:
            return None
        record = self._records().get(match.group(1))
        if record is None or record.status != "active":
            return None
        digest = hashlib.sha256(presented.encode()).hexdigest()
        if not hmac.compare_digest(digest, record.digest):
            return None
        return Principal.of(f"key:{record.name}", record.principals)

    def _records(self) -> dict[str, ApiKey]:
        if time.monotonic() - self._read_at >= self.refresh_seconds:
            with self._lock:
                if time.monotonic() - self._read_at >= self.refresh_seconds:
                    self._keys = {k.name: k for k in list_keys(self.state)}
                    self._read_at = time.monotonic()
        return self._keys
