"""Every code snippet in the README and docs/ runs, so the docs cannot rot.

In each Markdown file, in order: ```bash blocks run in a shell (from a scratch folder, with
the project's `almanac` on PATH; `source` lines, which only activate the venv, are
skipped), ```python blocks run in one shared namespace per file (from the same folder),
and ```yaml blocks that look like an `almanac.yaml` are validated as one. Blocks meant
only to be read are fenced as ```console or ```text.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from almanac.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def snippets(path: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text())]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_snippet_runs(doc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("ALMANAC_REPO", None)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for number, (language, code) in enumerate(snippets(doc), 1):
        where = f"{doc.name}, snippet {number} ({language})"
        if language == "bash":
            script = "\n".join(line for line in code.splitlines() if not line.startswith("source "))
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert done.returncode == 0, f"{where} failed:\n{script}\n{done.stdout}\n{done.stderr}"
        elif language == "python":
            exec(compile(code, where, "exec"), namespace)  # the docs' own code
        elif language == "yaml" and re.search(r"^project:", code, re.M):
            folder = tmp_path / f"yaml_{number}"
            folder.mkdir()
            (folder / "almanac.yaml").write_text(code)
            assert yaml.safe_load(code)
            load_config(folder, environ={})


def test_the_reference_pages_match_the_code(tmp_path: Path) -> None:
    """docs/cli.md and docs/http-api.md are generated (`make docs`): regenerate and compare."""
    from almanac.serving.app import openapi_schema
    from almanac.serving.openapi_docs import render

    assert (ROOT / "docs" / "http-api.md").read_text() == render(openapi_schema()), (
        "docs/http-api.md is stale: run `make docs`"
    )
    typer = Path(sys.executable).parent / "typer"
    out = tmp_path / "cli.md"
    subprocess.run(
        [str(typer), "almanac.cli", "utils", "docs", "--name", "almanac", "--title", "CLI reference", "--output", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert (ROOT / "docs" / "cli.md").read_text() == out.read_text(), (
        "docs/cli.md is stale: run `make docs`"
    )
