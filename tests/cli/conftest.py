"""CLI fixtures: a small starter repo, and `almanac` run in-process with its output."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from almanac.cli import main
from almanac.starter import create_starter_repo


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(scope="session")
def starter_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repo `almanac init` writes, generated once (small) and copied by each test."""
    path = tmp_path_factory.mktemp("starter") / "repo"
    create_starter_repo(path, users=50, events=2000)
    return path


@pytest.fixture
def starter_repo(starter_template: Path, tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(starter_template, repo)
    return repo


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """Run `almanac ARGS...` in this process: exit code, stdout and stderr."""
    monkeypatch.delenv("ALMANAC_REPO", raising=False)

    def run(*args: str | Path) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else int(done.code is not None)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run
