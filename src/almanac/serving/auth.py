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
- With `server.auth.client_certificates` and mutual TLS, a request that carries no key
  or token is the principal its verified client certificate names
  (`certificate_principal`): ``cert:<common name>``, with a ``group:<unit>`` identity
  per organizational unit. A key or token, when sent, decides alone: a bad one is a
  401 whatever the certificate.

The principal is put in the ASGI scope (``scope["state"]["principal"]``) and in
`almanac.serving.access.PRINCIPAL` for the handlers that authorize.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

from almanac.security.access import Principal
from almanac.security.keys import KeyRing
from almanac.security.tokens import TokenVerifier

# Paths anyone may read: probes and scrapers carry no keys, and the docs show no data.
OPEN_PATHS = frozenset(
    {"/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)

Headers = Sequence[tuple[bytes, bytes]]
CREDENTIAL_HEADERS = (b"x-api-key", b"authorization")  # read by `_presented_key`


class Authenticator(Protocol):
    def authenticate(self, headers: Headers) -> Principal | None:
        """The caller's principal, or None when the request is not authenticated."""


def authenticate(auth: Authenticator, scope: Mapping[str, Any], certificates: bool) -> Principal | None:  # fmt: skip
    """The request's principal: its key or token, else (with `certificates`) its client
    certificate's."""
    headers = scope["headers"]
    if certificates and not _has_credential(headers):
        return certificate_principal(scope)
    principal = auth.authenticate(headers)
    if isinstance(principal, str):  # a replacement hook of the first protocol
        principal = Principal.of(principal)
    return principal


def certificate_principal(scope: Mapping[str, Any]) -> Principal | None:
    """The principal of the verified client certificate in the ASGI TLS extension."""
    tls = scope.get("extensions", {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    return _certificate_principal(chain[0]) if chain else None


@lru_cache(maxsize=1024)
def _certificate_principal(pem: str) -> Principal | None:
    subject = x509.load_pem_x509_certificate(pem.encode()).subject
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None  # no name to grant permissions to
    units = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return Principal.of(f"cert:{names[0].value!s}", [f"group:{u.value!s}" for u in units])


def _has_credential(headers: Headers) -> bool:
    return any(name in CREDENTIAL_HEADERS for name, _ in headers)


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
