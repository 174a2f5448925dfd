"""`almanac serve` over HTTPS, with certificates of a throwaway CA: HTTPS answers, plain
HTTP to the TLS port does not, and with `--ssl-client-cert required` a client without a
certificate of the CA is refused while one with it is served (mutual TLS)."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from servers import TlsFiles, free_port, make_tls_files, wait_for_port


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def serve(repo: Path, port: int, *options: str) -> subprocess.Popen[str]:
    args = [sys.executable, "-c", "from almanac.cli import main; main()", "--repo", str(repo),
            "serve", "--port", str(port), *options]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_port(port, timeout=60)
    return process


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "almanac.yaml").write_text("project: https\n")
    return root


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    process.communicate(timeout=30)


def test_https_and_plain_http_refused(repo: Path, tls: TlsFiles) -> None:
    port = free_port()
    server = serve(repo, port, "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key))
    try:
        assert httpx.get(f"https://127.0.0.1:{port}/health", verify=ssl.create_default_context(cafile=str(tls.ca))).status_code in (200, 503)  # fmt: skip
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        with pytest.raises(httpx.ConnectError):  # a certificate of no CA the client trusts
            httpx.get(f"https://127.0.0.1:{port}/health", timeout=5)
    finally:
        stop(server)


def test_mutual_tls_refuses_a_client_without_a_certificate(repo: Path, tls: TlsFiles) -> None:
    port = free_port()
    server = serve(repo, port, "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key),
                   "--ssl-ca-certs", str(tls.ca), "--ssl-client-cert", "required")  # fmt: skip
    try:
        with pytest.raises(httpx.HTTPError):
            httpx.get(
                f"https://127.0.0.1:{port}/health",
                verify=ssl.create_default_context(cafile=str(tls.ca)),
                timeout=5,
            )
        context = ssl.create_default_context(cafile=str(tls.ca))
        context.load_cert_chain(str(tls.client_cert), str(tls.client_key))
        assert httpx.get(f"https://127.0.0.1:{port}/health", verify=context).status_code in (200, 503)  # fmt: skip
    finally:
        stop(server)


def test_bad_tls_options_are_clean_errors(repo: Path, tls: TlsFiles) -> None:
    def run(*options: str) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-c", "from almanac.cli import main; main()", "--repo", str(repo), "serve", *options]  # fmt: skip
        return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)

    done = run("--ssl-certfile", str(tls.cert))
    assert done.returncode == 2 and "both --ssl-certfile and --ssl-keyfile" in done.stderr
    done = run("--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key), "--ssl-client-cert", "required")  # fmt: skip
    assert done.returncode == 2 and "needs --ssl-ca-certs" in done.stderr and "Traceback" not in done.stderr  # fmt: skip


CERT_REPO = """
from almanac import Entity, FeatureView, Field, Float64, Int64, Permission, PushSource, Resource

user = Entity(name="user", join_keys=["user_id"], dtype=Int64)
scores = FeatureView(name="scores", entities=[user], source=PushSource(name="events"),
                     schema=[Field("score", Float64)])
limits = FeatureView(name="limits", entities=[user], source=PushSource(name="limit_events"),
                     schema=[Field("limit", Float64)])
by_name = Permission(name="by_name", principals=["cert:fraud-model"], actions=["read_online"],
                     resources=[Resource(view="scores")])
by_unit = Permission(name="by_unit", principals=["group:risk"], actions=["read_online"],
                     resources=[Resource(view="limits")])
"""


def test_a_client_certificate_is_a_principal(repo: Path, tls: TlsFiles) -> None:
    from almanac import FeatureStore

    (repo / "almanac.yaml").write_text(
        "project: https\nserver:\n  auth:\n    type: api_keys\n    client_certificates: true\n"
        "    metrics: authenticated\n"
    )
    (repo / "features.py").write_text(CERT_REPO)
    with FeatureStore(repo) as store:
        store.apply()
        now = "2026-01-01T00:00:00+00:00"
        store.push("events", {"user_id": [1], "event_timestamp": [now], "score": [0.5]})
        store.push("limit_events", {"user_id": [1], "event_timestamp": [now], "limit": [900.0]})
    port = free_port()
    server = serve(repo, port, "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key),
                   "--ssl-ca-certs", str(tls.ca), "--ssl-client-cert", "optional")  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    ca_only = ssl.create_default_context(cafile=str(tls.ca))
    with_cert = ssl.create_default_context(cafile=str(tls.ca))
    with_cert.load_cert_chain(str(tls.client_cert), str(tls.client_key))

    def read(feature: str, verify: ssl.SSLContext, **headers: str) -> httpx.Response:
        body = {"entities": {"user_id": [1]}, "features": [feature]}
        return httpx.post(f"{url}/get-online-features", json=body, verify=verify, headers=headers, timeout=10)  # fmt: skip

    try:
        # The certificate's common name (cert:fraud-model) and unit (group:risk) are granted.
        answer = read("scores:score", with_cert)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][1]["values"] == [0.5]
        answer = read("limits:limit", with_cert)
        assert answer.status_code == 200, answer.text
        assert answer.json()["results"][1]["values"] == [900.0]
        # No certificate, no key: nobody.
        assert read("scores:score", ca_only).status_code == 401
        # A key that is sent decides alone: a wrong one is a 401 despite the certificate.
        assert read("scores:score", with_cert, **{"X-API-Key": "wrong"}).status_code == 401
        # /metrics is behind auth here: the certificate opens it, nothing else does.
        assert httpx.get(f"{url}/metrics", verify=ca_only, timeout=10).status_code == 401
        assert httpx.get(f"{url}/metrics", verify=with_cert, timeout=10).status_code == 200
    finally:
        stop(server)
