"""Authentication: a small hook that fuller access control can replace.

The server asks one object, `authenticate(headers)`, for every request outside the
open paths (health, metrics, docs); it returns who is calling, or None for a 401.
`ApiKeyAuth` is the built-in one: keys from `server.api_keys` (or the environment
variable ALMANAC_SERVER_API_KEYS), sent as ``X-API-Key: <key>`` or
``Authorization: Bearer <key>``. A replacement (OIDC, mTLS identities, per-project
permissions) implements the same protocol and is passed to `create_app(auth=...)`;
the principal it returns is stored in the ASGI scope (``scope["state"]["principal"]``)
for handlers that need to authorize.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Protocol

# Paths anyone may read: probes and scrapers carry no keys, and the docs show no data.
OPEN_PATHS = frozenset(
    {"/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)

Headers = Sequence[tuple[bytes, bytes]]


class Authenticator(Protocol):
    def authenticate(self, headers: Headers) -> str | None:
        """The caller's principal, or None when the request is not authenticated."""


class ApiKeyAuth:
    """Accept requests carrying one of the configured API keys."""

    def __init__(self, keys: Iterable[str]) -> None:
        # Compare digests of equal length in constant time; the principal is a short,
        # loggable fingerprint of the key, never the key itself.
        self._keys = {hashlib.sha256(k.encode()).digest(): k for k in keys if k}
        if not self._keys:
            raise ValueError("ApiKeyAuth needs at least one non-empty key")

    def authenticate(self, headers: Headers) -> str | None:
        key = _presented_key(headers)
        if key is None:
            return None
        digest = hashlib.sha256(key).digest()
        found = False
        for known in self._keys:
            found |= hmac.compare_digest(digest, known)
        return "api-key:" + digest.hex()[:12] if found else None


def _presented_key(headers: Headers) -> bytes | None:
    for name, value in headers:
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
    return None
