"""The server is safe to expose: body caps that hold for chunked uploads, read deadlines for slow
clients, security headers, an API key, a rate limit, CORS by allowlist, offline docs, an OpenAPI
document that lists every error, and no internals in any response."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cifar_cnn.predict import Classifier, load
from cifar_cnn.serve import ServeError, create_app, serve
from cifar_cnn.serve.guards import RateLimit, is_loopback
from helpers import encode, running_server

KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def clf(model_file):
    return load(model_file)


@pytest.fixture(scope="module")
def open_client(clf):
    with TestClient(create_app(clf, max_upload_bytes=2**20)) as c:
        yield c


@pytest.fixture(scope="module")
def keyed_client(clf):
    with TestClient(create_app(clf, api_key=KEY, rate_limit=1000, cors_origins=["https://ok.example"])) as c:
        yield c


def png() -> bytes:
    return encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)), "PNG")


def test_security_headers_on_page_api_and_errors(open_client):
    for path in ("/", "/v1/models", "/healthz", "/no-such-page", "/static/app.js"):
        r = open_client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert "server" not in r.headers
    page_csp = open_client.get("/").headers["content-security-policy"]
    assert "script-src 'self';" in page_csp and "unsafe-inline" not in page_csp
    # The page has no inline script or style for that policy to block.
    html = open_client.get("/").text
    assert "<script>" not in html and "<style>" not in html and 'src="/static/app.js"' in html


def test_errors_are_json_without_internals(clf, open_client):
    missing = open_client.get("/no-such-page")
    assert missing.status_code == 404 and missing.json()["error"] == "not found"

    class Broken(Classifier):  # a model that fails inside the forward pass
        def scores(self, images, *args, **kwargs):
            raise RuntimeError(f"boom in {os.getcwd()}/secret.py")

    broken = Broken(clf.model, clf.card)
    with TestClient(create_app(broken), raise_server_exceptions=False) as c:
        r = c.post("/v1/predict", files=[("files", ("a.png", png(), "image/png"))])
    assert r.status_code == 500 and r.json() == {"error": "internal server error", "filename": None}
    assert "Traceback" not in r.text and "secret" not in r.text and os.getcwd() not in r.text


def test_body_cap_holds_for_chunked_uploads(open_client):
    cap = 2**20 * 16 + 2**20  # max_upload_bytes x MAX_FILES + room for the multipart framing
    sent = 0

    def chunks():  # no Content-Length: the body streams chunked
        nonlocal sent
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
        while sent < 3 * cap:
            sent += 2**20
            yield b"x" * 2**20

    r = open_client.post("/v1/predict", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "limit" in r.json()["error"] and r.headers["connection"] == "close"
    # (The test client buffers the whole body first; over TCP the server stops reading at the cap: see below.)
    declared = open_client.post("/v1/predict", content=b"x", headers={"Content-Length": str(10 * cap)})
    assert declared.status_code == 413


def test_api_key(keyed_client):
    assert keyed_client.get("/v1/models").status_code == 401
    r = keyed_client.get("/v1/models", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and "not valid" in r.json()["error"]
    assert keyed_client.get("/v1/models", headers={"Authorization": f"Basic {KEY}"}).status_code == 401
    assert keyed_client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    ok = keyed_client.post("/v1/predict", files=[("files", ("a.png", png(), "image/png"))],
                           headers={"Authorization": f"bearer {KEY}"})  # fmt: skip
    assert ok.status_code == 200
    # Health checks, the page and the docs stay open; the API behind them does not.
    for path in ("/healthz", "/readyz", "/", "/docs", "/openapi.json", "/static/app.js"):
        assert keyed_client.get(path).status_code == 200, path
    assert keyed_client.post("/v1/predict", files=[("files", ("a.png", png(), "image/png"))]).status_code == 401


def test_cors_only_for_listed_origins(keyed_client, open_client):
    def preflight(client, origin):
        return client.options("/v1/predict", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "authorization"})  # fmt: skip

    allowed = preflight(keyed_client, "https://ok.example")
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://ok.example"
    assert "access-control-allow-origin" not in preflight(keyed_client, "https://evil.example").headers
    simple = keyed_client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers
    assert "access-control-allow-origin" not in open_client.get("/healthz", headers={"Origin": "https://x.y"}).headers


def test_rate_limit_token_bucket():
    now = [0.0]
    limit = RateLimit(None, per_second=2, clock=lambda: now[0])  # bursts of 4
    assert [limit.take("a") for _ in range(4)] == [0, 0, 0, 0]
    assert limit.take("a") == pytest.approx(0.5)  # a token comes back every 0.5 s
    assert limit.take("b") == 0  # clients have buckets of their own
    now[0] += 0.5
    assert limit.take("a") == 0
    small = RateLimit(None, per_second=1, max_clients=3, clock=lambda: now[0])
    for i in range(10):
        small.take(f"client{i}")
    assert len(small.buckets) == 3  # memory stays bounded however many clients come


def test_rate_limit_answers_429_with_retry_after(clf):
    with TestClient(create_app(clf, rate_limit=1)) as c:  # bursts of 2
        codes = [c.get("/v1/models").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = c.get("/v1/models")
        assert int(r.headers["retry-after"]) >= 1 and "too many requests" in r.json()["error"]
        assert all(c.get("/healthz").status_code == 200 for _ in range(10))  # health checks are never limited


def test_openapi_documents_every_error(keyed_client, clf):
    with TestClient(create_app(clf, api_key=KEY, rate_limit=5)) as c:
        doc = c.get("/openapi.json").json()
    predict = doc["paths"]["/v1/predict"]["post"]
    for status in ("200", "401", "408", "413", "415", "422", "429"):
        assert status in predict["responses"], status
    error = predict["responses"]["415"]["content"]["application/json"]["schema"]["$ref"]
    assert error.endswith("/ErrorBody") and "error" in doc["components"]["schemas"]["ErrorBody"]["properties"]
    assert "Retry-After" in predict["responses"]["429"]["headers"]
    assert predict["security"] == [{"bearer": []}] and "401" not in doc["paths"]["/healthz"]["get"]["responses"]
    models = doc["paths"]["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert models["type"] == "array" and models["items"]["$ref"].endswith("/ModelInfo")


def test_docs_work_offline(open_client):
    html = open_client.get("/docs").text
    assert "cdn" not in html.lower() and "https://" not in html.split("<body>")[-1]
    for asset in ("/static-offline-docs/swagger-ui-bundle.js", "/static-offline-docs/swagger-ui.css"):
        assert asset in html
        r = open_client.get(asset)
        assert r.status_code == 200 and len(r.content) > 10_000


def test_loopback_and_exposed_hosts(model_file, capsys, monkeypatch):
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org"))
    monkeypatch.delenv("CIFAR_CNN_API_KEY", raising=False)
    with pytest.raises(ServeError, match="--api-key"):
        serve(str(model_file), host="0.0.0.0", port=9)
    cli = subprocess.run([sys.executable, "-m", "cifar_cnn.cli", "serve", str(model_file), "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "CIFAR_CNN_API_KEY": ""})  # fmt: skip
    assert cli.returncode == 2 and "API needs a key" in cli.stderr and "Traceback" not in cli.stderr


# Below: a real server over TCP, where the read deadlines and the connection handling live.


@pytest.fixture(scope="module")
def live(model_file):
    with running_server(model_file, "--header-timeout", "2", "--body-timeout", "3", "--max-upload-mb", "1") as url:
        yield url, running_server.proc.pid


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:"))


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def drip(sock: socket.socket, data: bytes, every: float) -> tuple[float, bytes]:
    """Send `data` a byte every `every` s until the server answers or closes; (seconds, answer)."""
    start = time.time()
    sock.setblocking(False)
    for i in range(len(data)):
        try:
            sock.send(data[i : i + 1])
        except OSError:
            break
        time.sleep(every)
        try:
            answer = sock.recv(4096)
            return time.time() - start, answer
        except BlockingIOError:
            continue
    sock.settimeout(10)
    try:
        return time.time() - start, sock.recv(4096)
    except OSError:
        return time.time() - start, b""


def test_slow_clients_are_cut_off_while_others_are_served(live):
    url, _ = live
    results = {}

    def silent():
        with connect(url) as s:
            start = time.time()
            answer = s.recv(100)
            results["silent"] = (time.time() - start, answer)

    def slow_headers():
        with connect(url) as s:
            results["headers"] = drip(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200, 0.2)

    def slow_body():
        part = b'--zz\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n\x89PNG' + b"y" * 400
        head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=zz\r\n"
        with connect(url) as s:
            s.sendall(head + b"Content-Length: %d\r\n\r\n" % (len(part) + 10))
            results["body"] = drip(s, part, 0.2)

    threads = [threading.Thread(target=f) for f in (silent, slow_headers, slow_body)]
    for t in threads:
        t.start()
    health = []
    while any(t.is_alive() for t in threads):  # the server answers others meanwhile
        start = time.time()
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        health.append(time.time() - start)
        time.sleep(0.2)
    for t in threads:
        t.join()
    seconds, answer = results["headers"]
    assert 1.5 < seconds < 4 and answer.startswith(b"HTTP/1.1 408"), results["headers"]
    seconds, answer = results["body"]
    assert 2.5 < seconds < 5.5 and answer.startswith(b"HTTP/1.1 408"), results["body"]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"].startswith("request body not received")
    assert 1.5 < results["silent"][0] < 4 and results["silent"][1] == b""  # closed without a word
    print(f"\nslow clients cut off: headers {results['headers'][0]:.1f} s, body {results['body'][0]:.1f} s; "
          f"health meanwhile max {1000 * max(health):.0f} ms over {len(health)} checks")  # fmt: skip


def test_chunked_upload_is_stopped_at_the_cap(live):
    url, _ = live
    with connect(url) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: multipart/form-data; boundary=zz\r\n\r\n")  # fmt: skip
        part = b'--zz\r\nContent-Disposition: form-data; name="files"; filename="big.png"\r\n\r\n'
        s.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
        chunk = b"%x\r\n" % 2**16 + b"x" * 2**16 + b"\r\n"
        sent = 0
        try:
            while sent < 300 * 2**20:
                s.sendall(chunk)
                sent += 2**16
        except OSError:  # the server closed the connection after its 413
            pass
        s.settimeout(10)
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert sent < 60 * 2**20, f"{sent >> 20} MiB were accepted before the server stopped reading"


def test_burst_from_a_few_clients_keeps_memory_flat(live):
    url, pid = live
    image = png()
    before = rss_mib(pid)
    statuses: list[int] = []
    health: list[float] = []

    def client():
        with httpx.Client(timeout=60) as c:
            for _ in range(100):
                r = c.post(f"{url}/v1/predict", files=[("files", ("a.png", image, "image/png"))])
                statuses.append(r.status_code)

    threads = [threading.Thread(target=client) for _ in range(6)]
    start = time.time()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        t0 = time.time()
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        health.append(time.time() - t0)
        time.sleep(0.1)
    elapsed = time.time() - start
    after = rss_mib(pid)
    assert statuses.count(200) == 600
    assert after - before < 100, f"memory grew from {before:.0f} to {after:.0f} MiB"
    print(f"\nburst: 600 requests from 6 clients in {elapsed:.1f} s ({600 / elapsed:.0f} req/s), health max "
          f"{1000 * max(health):.0f} ms, RSS {before:.0f} -> {after:.0f} MiB")  # fmt: skip
