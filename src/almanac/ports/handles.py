"""What the verbs below `FeatureStore` need of it, as narrow Protocols.

Ingestion, materialization and retrieval take one of these instead of the store itself,
so nothing below `almanac.store` imports it (the layering `make lint` checks), and a
test or the server can hand them any object with these attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from almanac.config import RepoConfig
    from almanac.ports.offline import OfflineEngine
    from almanac.ports.online import OnlineStore
    from almanac.registry.catalog import Catalog


class OnlineHandle(Protocol):
    """The applied definitions and the online store: enough to read features."""

    @property
    def catalog(self) -> Catalog: ...
    @property
    def online(self) -> OnlineStore: ...
    @property
    def project(self) -> str: ...


class StoreHandle(OnlineHandle, Protocol):
    """Both stores and the repo's settings: enough to push and to materialize."""

    @property
    def config(self) -> RepoConfig: ...
    @property
    def offline(self) -> OfflineEngine: ...
