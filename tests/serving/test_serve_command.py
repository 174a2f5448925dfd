"""`almanac serve` as users run it: a subprocess with two workers, stopped afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_helpers import http, seed, serving, write_repo

from almanac import FeatureStore


def test_serve_help(capsys: pytest.CaptureFixture[str]) -> None:
    from almanac.cli import main

    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--port" in out and "--workers" in out


def test_serve_with_two_workers(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", "sqlite:///.almanac/online.db")
    with FeatureStore(repo) as store:
        seed(store)
    with serving(repo, "--workers", "2") as served:
        base = served.url
        body = {"features": ["user_stats:clicks"], "entities": {"user_id": ["u1"]}}
        for _ in range(6):
            status, answer = http("POST", base + "/get-online-features", body)
            assert status == 200
            assert answer["results"][1]["values"] == [5]
        status, metrics = http("GET", base + "/metrics")
        assert status == 200
        # Both workers' counts add up (multiprocess mode), whichever answered.
        assert (
            'almanac_http_requests_total{endpoint="/get-online-features",method="POST",status="200"} 6.0'
            in metrics
        )
        status, docs = http("GET", base + "/docs")
        assert status == 200 and "swagger" in docs.lower()
