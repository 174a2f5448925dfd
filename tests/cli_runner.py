"""Run `almanac ARGS...` in this process, for tests outside tests/cli (which has its own
`cli` fixture): the exit code and what it printed."""

from __future__ import annotations

import pytest

from almanac.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err
