"""JWT bearer tokens of an identity provider (PyJWT): the signing keys from a JWKS URL, a
PEM public key or a shared secret; the algorithms pinned to the configured list (`none`
is refused by the configuration and never reaches PyJWT); expiry, not-before, issuer and
audience checked; subject, roles and groups read from configurable claim paths, so
Keycloak (``realm_access.roles``), Entra ID (``roles``, ``groups``) and Okta (``groups``)
tokens all map to principals ``user:<sub>``, ``role:<r>``, ``group:<g>``."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import jwt

from almanac.config import AuthConfig
from almanac.errors import ConfigError
from almanac.security.access import Principal

_ENV = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_CACHED_TOKENS = 10_000


class TokenVerifier:
    def __init__(self, config: AuthConfig, repo_path: Path) -> None:
        self.config = config
        sources = [s for s in (config.jwks_url, config.public_key, config.secret) if s]
        if len(sources) != 1:
            raise ConfigError("server.auth: for type jwt, set exactly one of jwks_url, public_key or secret")  # fmt: skip
        self._jwks = jwt.PyJWKClient(config.jwks_url, cache_keys=True) if config.jwks_url else None
        self._key: Any = None
        self._verified: dict[str, tuple[Principal, float]] = {}  # token → (principal, exp)
        if config.public_key:
            path = Path(config.public_key)
            path = path if path.is_absolute() else repo_path / path
            try:
                self._key = path.read_text()
            except OSError as error:
                raise ConfigError(f"server.auth.public_key: cannot read {path}: {error.strerror}") from None  # fmt: skip
        elif config.secret:
            self._key = _expand(config.secret, "server.auth.secret")

    def principal(self, token: str) -> Principal | None:
        """The token's principal, or None when it is not valid (bad signature, another
        algorithm, expired, not yet valid, wrong issuer or audience, no subject). A
        valid token is verified once and remembered until it expires (clients send the
        same token for minutes; verifying costs tens of microseconds)."""
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires = cached
            if time.time() < expires:
                return principal
            del self._verified[token]
        found, expires = self._verify(token)
        if found is not None:
            if len(self._verified) >= _CACHED_TOKENS:
                self._verified.pop(next(iter(self._verified)))  # the oldest
            self._verified[token] = (found, expires)
        return found

    def _verify(self, token: str) -> tuple[Principal | None, float]:
        config = self.config
        try:
            key = self._jwks.get_signing_key_from_jwt(token).key if self._jwks else self._key
            claims = jwt.decode(
                token, key, algorithms=config.algorithms, audience=config.audience,
                issuer=config.issuer, leeway=config.leeway_seconds,
                options={"require": ["exp", config.subject_claim.split(".")[0]], "verify_aud": config.audience is not None},
            )  # fmt: skip
        except (jwt.PyJWTError, ValueError, KeyError):
            return None, 0.0
        subject = _claim(claims, config.subject_claim)
        if not isinstance(subject, str) or not subject:
            return None, 0.0
        identities = [f"role:{r}" for r in _strings(_claim(claims, config.roles_claim))]
        identities += [f"group:{g}" for g in _strings(_claim(claims, config.groups_claim))]
        return Principal.of(f"user:{subject}", identities), float(claims["exp"])


def _claim(claims: dict[str, Any], path: str | None) -> Any:
    value: Any = claims
    for part in (path or "").split(".") if path else []:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value if path else None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _expand(value: str, where: str) -> str:
    match = _ENV.fullmatch(value.strip())
    if match is None:
        return value
    found = os.environ.get(match.group(1))
    if not found:
        raise ConfigError(f"{where}: the environment variable {match.group(1)} is not set")
    return found
