"""Registry fixtures: every registry test runs on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from almanac.registry.store import SqlRegistry, open_registry
from almanac.store import FeatureStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A registry database nobody has used yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry' / 'registry.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def open_backend(registry_url: str) -> Iterator[Callable[..., SqlRegistry]]:
    """Open another connection to the test's registry (optionally of another project)."""
    opened: list[SqlRegistry] = []

    def open_(project: str = "shop") -> SqlRegistry:
        backend = open_registry(registry_url, project)
        opened.append(backend)
        return backend

    yield open_
    for backend in opened:
        with contextlib.suppress(Exception):  # a test may have closed it already
            backend.close()


@pytest.fixture
def registry(open_backend: Callable[..., SqlRegistry]) -> SqlRegistry:
    return open_backend()


class FeatureRepo:
    """A feature repo on disk whose registry is the test's database."""

    def __init__(self, path: Path, registry_url: str) -> None:
        self.path = path
        self.registry_url = registry_url
        self._stores: list[FeatureStore] = []
        path.mkdir(parents=True, exist_ok=True)
        (path / "almanac.yaml").write_text(
            f"project: shop\nregistry:\n  url: {registry_url}\n  refresh_seconds: 0\n"
        )

    def write(self, text: str, name: str = "features.py") -> None:
        (self.path / name).write_text(textwrap.dedent(text))

    def store(self) -> FeatureStore:
        store = FeatureStore(self.path)
        self._stores.append(store)
        return store

    def close(self) -> None:
        for store in self._stores:
            store.close()


@pytest.fixture
def feature_repo(tmp_path: Path, registry_url: str) -> Iterator[FeatureRepo]:
    repo = FeatureRepo(tmp_path / "repo", registry_url)
    yield repo
    repo.close()
