"""Authentication: who is calling, from the request's headers.

The server asks one object, `authenticate(headers)`, for every request outside the
open paths (health, metrics, docs); it returns a `Principal`, or None for a 401. The
credential comes as ``X-API-Key: <key>`` or ``Authorization: Bearer <token>``.

- `server.auth.type: api_keys` (`RegistryKeyAuth`): keys made by `almanac keys create`,
  kept hashed in the registry, scoped to principals, expiring and revocable without a
  restart; the keys of `server.api_keys` are accepted too, as principal ``key:config``.
- `server.auth.type: jwt` (`TokenAuth`): bearer tokens of an identity provider
  (`almanac.security.tokens`).
- Without `server.auth`, the legacy `server.api_keys` list (`ApiKeyAuth`): any of the
  keys may do everything.

The principal is put in the ASGI scope (``scope["state"]["principal"]``) and in
`almanac.serving.access.PRINCIPAL` for the handlers that authorize.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Protocol

from almanac.security.access import Principal
from almanac.security.keys import KeyRing
from almanac.security.tokens import TokenVerifier

# Paths anyone may read: probes and scrapers carry no keys, and the docs show no data.
OPEN_PATHS = frozenset(
    {"/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)

Headers = Sequence[tuple[bytes, bytes]]


class Authenticator(Protocol):
    def authenticate(self, headers: Headers) -> Principal | None:
        """The caller's principal, or None when the request is not authenticated."""


class ApiKeyAuth:
    """Accept requests carrying one of the configured API keys."""

    def __init__(self, keys: Iterable[str]) -> None:
        # Compare digests of equal length in constant time; the principal is a short,
        # loggable fingerprint of the key, never the key itself.
        self._keys = {hashlib.sha256(k.encode()).digest(): k for k in keys if k}
        if not self._keys:
            raise ValueError("ApiKeyAuth needs at least one non-empty key")

    def authenticate(self, headers: Headers) -> Principal | None:
        key = _presented_key(headers)
        if key is None:
            return None
        digest = hashlib.sha256(key).digest()
        found = False
        for known in self._keys:
            found |= hmac.compare_digest(digest, known)
        return Principal.of("key:config") if found else None


class RegistryKeyAuth:
    """`server.auth.type: api_keys`: the registry's keys, and the configured ones."""

    def __init__(self, keys: KeyRing, configured: Iterable[str] = ()) -> None:
        self.keys = keys
        self.configured = ApiKeyAuth(configured) if any(configured) else None

    def authenticate(self, headers: Headers) -> Principal | None:
        key = _presented_key(headers)
        if key is None:
            return None
        found = self.keys.principal(key.decode("latin-1"))
        if found is None and self.configured is not None:
            return self.configured.authenticate(headers)
        return found


class TokenAuth:
    """`server.auth.type: jwt`: bearer tokens of an identity provider."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    def authenticate(self, headers: Headers) -> Principal | None:
        token = _presented_key(headers)
        return None if token is None else self.verifier.principal(token.decode("latin-1"))


def _presented_key(headers: Headers) -> bytes | None:
    """The credential of `X-API-Key` or `Authorization: Bearer`. Two different ones, or
    an Authorization header of another scheme, are no credential at all (401): what
    counts must never depend on the order of headers."""
    found: bytes | None = None
    for name, value in headers:
        presented = None
        if name == b"x-api-key":
            presented = value.strip()
        elif name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() != b"bearer":
                return None  # a scheme Almanac does not read is no credential: 401
            presented = token.strip()
        if presented is not None:
            if not presented or (found is not None and presented != found):
                return None
            found = presented
    return found
