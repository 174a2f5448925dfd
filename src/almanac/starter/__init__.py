"""`almanac init`: write the starter feature repo (a streaming platform) and its data."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from almanac.errors import RepoError
from almanac.starter.sample_data import generate

TEMPLATE = Path(__file__).parent / "template"


def create_starter_repo(
    path: str | Path, users: int = 3000, events: int = 300_000, end: datetime | None = None
) -> Path:
    """Write the template repo and its sample data (ending at `end`, default today 00:00 UTC)."""
    repo = Path(path)
    if repo.exists() and any(repo.iterdir()):
        raise RepoError(f"{repo} already exists and is not empty; choose another folder")
    if users < 1 or events < 1:
        raise RepoError("--users and --events must be positive")
    repo.mkdir(parents=True, exist_ok=True)
    for item in TEMPLATE.iterdir():
        if item.is_file():
            shutil.copy(item, repo / item.name)
    (repo / ".gitignore").write_text(".almanac/\ndata/offline/\n")
    generate(repo / "data", users=users, events=events, end=end)
    return repo
