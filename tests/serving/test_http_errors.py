"""HTTP-level hygiene: bounded metric labels, one error shape for every error (unknown
routes and methods too), paths that are not UTF-8, bodies that never arrive."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from serving_helpers import seed, write_repo

from almanac import FeatureStore
from almanac.serving.app import create_app
from servers import free_port, wait_for_port

KEY = {"X-API-Key": "k-one"}
ROUTES = {
    "/get-online-features", "/entities/{entity}/{key}", "/context", "/push",
    "/write-to-online-store", "/entities", "/feature-views", "/feature-views/{name}",
    "/feature-services", "/features", "/health", "/metrics", "/docs", "/openapi.json",
    "/redoc", "/docs/oauth2-redirect", "other",
}  # fmt: skip


@pytest.fixture(scope="module")
def keyed_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keyed")
    return write_repo(folder / "repo", "sqlite:///.almanac/online.db", api_keys=["k-one"])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStore]:
    """One seeded repo for the module (nothing here writes): these are HTTP-level rules,
    the same whatever the online store."""
    repo = write_repo(tmp_path_factory.mktemp("open") / "repo", "sqlite:///.almanac/online.db")
    with FeatureStore(repo) as store:
        seed(store)
        yield store


def _endpoint_labels(metrics: str) -> set[str]:
    return set(re.findall(r'endpoint="([^"]*)"', metrics))


@pytest.mark.parametrize("fast_path", [True, False])
def test_metric_labels_are_route_templates_whatever_the_path(
    keyed_repo: Path, fast_path: bool
) -> None:
    with TestClient(create_app(keyed_repo, fast_path=fast_path)) as client:
        for i in range(100):  # unauthenticated: 401s
            assert client.get(f"/entities/user/secret-key-{i}").status_code == 401
            assert client.get(f"/feature-views/view-{i}").status_code == 401
            assert client.post(f"/nowhere/{i}", json={}).status_code == 401
        for i in range(50):  # authenticated: 404s, 405s, 422s
            assert client.get(f"/nowhere/{i}", headers=KEY).status_code == 404
            assert client.get(f"/entities/user/a/{i}", headers=KEY).status_code == 404
            assert client.delete(f"/feature-views/view-{i}", headers=KEY).status_code == 405
            assert client.get(f"/entities/item/x{i}", headers=KEY).status_code == 422
        assert client.get("/docs").status_code == 200
        text = client.get("/metrics").text
    labels = _endpoint_labels(text)
    assert labels <= ROUTES, labels - ROUTES
    assert "secret-key" not in text and "view-1" not in text
    assert (
        'almanac_http_requests_total{endpoint="/entities/{entity}/{key}",method="GET",status="401"} 100.0'
        in text
    )
    assert (
        'almanac_http_errors_total{endpoint="/feature-views/{name}",error="Unauthorized"} 100.0'
        in text
    )
    assert 'almanac_http_requests_total{endpoint="/docs",method="GET",status="200"} 1.0' in text
    assert (
        'almanac_http_requests_total{endpoint="/feature-views/{name}",method="DELETE",status="405"} 50.0'
        in text
    )
    assert 'almanac_http_requests_total{endpoint="other",method="GET",status="404"} 100.0' in text


@pytest.mark.parametrize("fast_path", [True, False])
def test_unknown_routes_and_methods_answer_the_error_shape(
    store: FeatureStore, fast_path: bool
) -> None:
    with TestClient(create_app(store, fast_path=fast_path)) as client:
        missing = client.get("/no-such-thing")
        assert missing.status_code == 404
        assert missing.json() == {"detail": "Not Found", "error": "NotFound"}
        wrong = client.put("/get-online-features", json={})
        assert wrong.status_code == 405
        assert wrong.json() == {"detail": "Method Not Allowed", "error": "MethodNotAllowed"}
        assert wrong.headers["allow"] == "POST"
        assert wrong.headers["content-type"] == "application/json"


@pytest.mark.parametrize("fast_path", [True, False])
def test_paths_and_queries_that_are_not_utf8_are_400(store: FeatureStore, fast_path: bool) -> None:
    with TestClient(create_app(store, fast_path=fast_path)) as client:
        for url in (
            "/entities/user/%ff?features=user_stats:clicks",  # would read key "\ufffd"
            "/entities/user/u1%c3?features=user_stats:clicks",
            "/entities/user/u1?features=user_stats:clicks%ff",
            "/feature-views/user_stats%ff",
        ):
            answer = client.get(url)
            assert answer.status_code == 400, (url, answer.text)
            assert answer.json()["error"] == "InvalidUrl"
            assert "UTF-8" in answer.json()["detail"]
        good = client.get("/entities/user/u%31", params={"features": "user_stats:clicks"})
        assert good.status_code == 200 and good.json()["features"] == {"clicks": 5}


@pytest.fixture
def live(store: FeatureStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The app under a real uvicorn (in a thread) on a free port, with a short body timeout."""
    import almanac.serving.body as body_module

    monkeypatch.setattr(body_module, "BODY_TIMEOUT_SECONDS", 0.5)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(20)


@pytest.mark.parametrize("path", ["/get-online-features", "/push", "/write-to-online-store"])
def test_a_body_that_never_arrives_is_408(live: int, path: str) -> None:
    with socket.create_connection(("127.0.0.1", live), timeout=20) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            'content-length: 1000\r\n\r\n{"features"'.encode()
        )
        answer = b""
        while b"}" not in answer:  # the whole (small) JSON error body
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), head
    assert b"connection: close" in head.lower()
    assert b'"error":"RequestTimeout"' in body and b"did not arrive" in body
