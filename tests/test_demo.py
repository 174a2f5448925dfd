"""`make demo` runs the whole product end to end, on the embedded defaults and on Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_demo(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "almanac.demo"],
        cwd=cwd, env={**os.environ, **env, "COLUMNS": "120"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def check(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for step in range(1, 7):
        assert f"{step}. " in out
    assert "8 to create" in out
    assert "5,000 labelled rows" in out
    assert "PRESENT" in out and "POST http" in out
    assert "watched" in out and "None" not in out.split("context for user")[1].split("values:")[0]
    assert "server stopped" in out


def test_the_demo_on_the_embedded_defaults(tmp_path: Path) -> None:
    check(run_demo(tmp_path))
    assert (tmp_path / "demo_repo" / ".almanac" / "online.db").is_file()


@pytest.mark.redis
def test_the_demo_on_redis(tmp_path: Path, redis_url: str) -> None:
    check(run_demo(tmp_path, ALMANAC_ONLINE_URL=redis_url))
    assert not (tmp_path / "demo_repo" / ".almanac" / "online.db").exists()
