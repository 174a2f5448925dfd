"""`almanac serve` as users run it: a subprocess with two workers, stopped afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from serving_helpers import seed, write_repo

from almanac import FeatureStore
from servers import free_port


def test_serve_help(capsys: pytest.CaptureFixture[str]) -> None:
    from almanac.cli import main

    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--port" in out and "--workers" in out


def _get(url: str, body: dict | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_serve_with_two_workers(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", "sqlite:///.almanac/online.db")
    with FeatureStore(repo) as store:
        seed(store)
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("ALMANAC_REPO", "PROMETHEUS_MULTIPROC_DIR")
    }
    process = subprocess.Popen(
        [sys.executable, "-c", "from almanac.cli import main; main()", "--repo", str(repo),
         "serve", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
            try:
                if _get(base + "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)
        body = {"features": ["user_stats:clicks"], "entities": {"user_id": ["u1"]}}
        for _ in range(6):
            status, answer = _get(base + "/get-online-features", body)
            assert status == 200
            assert json.loads(answer)["results"][1]["values"] == [5]
        status, metrics = _get(base + "/metrics")
        assert status == 200
        # Both workers' counts add up (multiprocess mode), whichever answered.
        assert (
            b'almanac_http_requests_total{endpoint="/get-online-features",method="POST",status="200"} 6.0'
            in metrics
        )
        status, docs = _get(base + "/docs")
        assert status == 200 and b"swagger" in docs.lower()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
