"""The SDK's and CLI's side of access control: operations run on behalf of the
configured principal (`access.principal`) are checked against the applied permissions
before they touch anything, and each registry, materialization, read and write
operation gets an audit line (`audit.path`) when one is configured.

Permissions come from the *applied* catalog: an `apply` that adds a permission is
itself checked against the ones in force before it. Without `access.principal`
nothing is checked here (the server still checks its callers); audit lines then name
the operating-system user as ``local:<name>``, which no permission matches.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from almanac.config import RepoConfig
from almanac.errors import AccessDeniedError
from almanac.registry.catalog import Catalog
from almanac.security.access import AccessPolicy, Principal, Target
from almanac.security.audit import AuditLog

TargetsOf = Callable[[AccessPolicy], Iterable[Target]]


class OperationGuard:
    def __init__(self, config: RepoConfig) -> None:
        access = config.access
        self.principal = (
            None if access.principal is None else Principal.of(access.principal, access.identities)
        )
        self.audit = (
            None
            if config.audit is None
            else AuditLog(config.audit, config.repo_path, buffered=False)
        )
        self.who = access.principal or f"local:{_os_user()}"
        self._policy: tuple[Catalog, AccessPolicy] | None = None

    def policy(self, catalog: Catalog) -> AccessPolicy | None:
        """The applied catalog's policy when a principal is configured, else None."""
        if self.principal is None:
            return None
        if self._policy is None or self._policy[0] is not catalog:
            self._policy = (catalog, AccessPolicy(catalog))
        return self._policy[1]

    def require_features(self, catalog: Catalog, action: str, refs: Iterable[tuple[str, str]]) -> None:  # fmt: skip
        """The hot path's check (online reads): one cached lookup, no audit line."""
        policy = self.policy(catalog)
        if policy is not None and self.principal is not None:
            policy.require_features(self.principal, action, tuple(refs))

    @contextmanager
    def operation(self, catalog: Catalog, name: str, actions: Sequence[str], targets: TargetsOf, **detail: Any) -> Iterator[dict[str, Any]]:  # fmt: skip
        """Operation `name`: check each of `actions` on `targets`, run the block, and
        write its audit line (the block may add to the dictionary it is given: rows
        written, views done)."""
        started = time.perf_counter()
        notes = {"actions": list(actions), **detail}
        policy = self.policy(catalog)
        if policy is not None and self.principal is not None:
            try:
                chosen = list(targets(policy))
                for action in actions:
                    policy.require(self.principal, action, chosen)
            except AccessDeniedError as error:
                self._write(name, "error", started, notes, denied=True, error=str(error))
                raise
        try:
            yield notes
        except BaseException as error:
            self._write(name, "error", started, notes, error=type(error).__name__)
            raise
        self._write(name, "ok", started, notes)

    def _write(self, name: str, status: str, started: float, notes: dict[str, Any], **more: Any) -> None:  # fmt: skip
        if self.audit is not None:
            seconds = time.perf_counter() - started
            self.audit.operation(principal=self.who, name=name, status=status, seconds=seconds, **notes, **more)  # fmt: skip

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no USER and no passwd entry (some containers)
        return "unknown"
