"""The served web page in real headless Chromium, and a bounded load test over loopback."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(model_path):
    """`cifar-cnn serve MODEL` in a subprocess on a free loopback port; yields its URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "cifar_cnn.cli", "serve", str(model_path), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"server did not start: {proc.stdout.read().decode()[-2000:]}")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def server(model_file):
    with running_server(model_file) as url:
        yield url


@pytest.fixture(scope="module")
def folder_server(folder_model):
    with running_server(folder_model) as url:
        yield url


@pytest.fixture
def browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (make test installs it)")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def test_page_classifies_an_upload(server, browser, tmp_path):
    image = tmp_path / "truck.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(image)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")
    page = browser.new_page(viewport={"width": 420, "height": 860})  # a phone-sized window
    page.goto(server)
    page.wait_for_function("document.getElementById('model').textContent.includes('keras_cnn')")
    page.set_input_files("#file", [str(image)])
    page.wait_for_selector(".card.done", timeout=30000)
    card = page.locator(".card.done").first
    assert card.locator(".bar").count() == 5
    top = card.locator(".top").inner_text()
    classes = httpx.get(f"{server}/v1/models").json()[0]["classes"]
    assert any(top.startswith(c) for c in classes), top
    page.set_input_files("#file", [str(broken)])
    page.wait_for_selector(".card.failed", timeout=30000)
    assert "Could not classify" in page.locator(".card.failed .error").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)


def test_page_shows_the_models_own_classes(folder_server, browser, own_folder):
    page = browser.new_page(viewport={"width": 420, "height": 860})
    page.goto(folder_server)
    page.wait_for_function("document.querySelectorAll('#classes li').length > 0")
    assert page.locator("#classes li").all_inner_texts() == ["blue sky", "grün", "red"]
    assert "32" in page.locator("#model").inner_text() and "keras_cnn" in page.title()
    page.set_input_files("#file", [str(own_folder / "blue sky" / "2.png")])
    page.wait_for_selector(".card.done", timeout=30000)
    card = page.locator(".card.done").first
    assert card.locator(".bar").count() == 3  # top 5 of a 3-class model: its 3 classes
    assert sorted(card.locator(".bar .label").all_inner_texts()) == ["blue sky", "grün", "red"]
    assert card.locator(".top").inner_text().startswith("blue sky")
    text = page.locator("body").inner_text()
    alts = " ".join(page.eval_on_selector_all("img", "els => els.map(e => e.alt)"))
    for word in ("airplane", "automobile", "truck", "CIFAR", "ten classes"):
        assert word not in text and word not in alts and word not in page.title(), word
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-page-own-classes.png"), full_page=True)


def test_bounded_load_test(server):
    from cifar_cnn.loadtest import load_test

    result = load_test(server, clients=32, requests=200)
    assert result["errors"] == 0 and result["requests"] == 200
    assert result["p99_ms"] >= result["p50_ms"] > 0
    print(f"\nload test: {result}")


def test_load_test_refuses_remote_hosts():
    from cifar_cnn.loadtest import load_test

    with pytest.raises(ValueError, match="loopback"):
        load_test("http://example.com")
