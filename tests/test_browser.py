"""The served web page in real headless Chromium, and a bounded load test over loopback."""

import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from cifar_cnn.pretrained import DEFAULT
from helpers import running_server

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip


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
    expect(page.locator("#model")).to_contain_text("keras_cnn")  # (no eval: the page's CSP forbids it)
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


PHOTO = Path(__file__).parent / "data" / "chelsea.jpg"  # Chelsea the cat, CC0 (Stefan van der Walt, via scikit-image)


def test_default_model_on_a_real_photo_and_why(browser):
    """The bundled default model on a real photo: "cat", then "Why?" puts the heatmap in place of the
    thumbnail (a data: image, allowed by the page's CSP). The screenshot is the README's."""
    with running_server(DEFAULT) as url:
        page = browser.new_page(viewport={"width": 760, "height": 560})
        refused = []
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(url)
        expect(page.locator("#model")).to_contain_text(DEFAULT)
        page.set_input_files("#file", [str(PHOTO)])
        card = page.locator(".card.done").first
        expect(card.locator(".top")).to_contain_text("cat", timeout=30000)
        card.locator("button.why").click()
        expect(card).to_have_class("card done explained", timeout=30000)
        assert card.locator("img").get_attribute("src").startswith("data:image/png;base64,")
        expect(card.locator("button.why")).to_have_text("Hide why")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve-page-photo.png"), full_page=True)
        card.locator("button.why").click()  # and back to the photo
        assert card.locator("img").get_attribute("src").startswith("blob:")
        assert not refused, refused


def test_page_asks_for_the_api_key_and_obeys_its_csp(model_file, browser, tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    env = {**os.environ, "CIFAR_CNN_API_KEY": "s3cret-key"}
    with running_server(model_file, env=env) as url:
        page = browser.new_page()
        refused = []  # the browser reports each Content-Security-Policy violation on the console
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(url)
        page.wait_for_selector("#keyform.shown", timeout=30000)
        assert "API key" in page.locator("#model").inner_text()
        page.fill("#key", "s3cret-key")
        page.click("#keyform button")
        expect(page.locator("#model")).to_contain_text("keras_cnn")  # (no eval: the page's CSP forbids it)
        page.set_input_files("#file", [str(image)])
        page.wait_for_selector(".card.done", timeout=30000)
        assert not page.locator("#keyform.shown").count()
        page.goto(f"{url}/docs")  # Swagger UI from this server (no CDN), under its own policy
        page.wait_for_selector(".swagger-ui .opblock", timeout=30000)
        assert page.locator(".opblock-summary-path").filter(has_text="/v1/predict").count() == 1
        assert not refused, refused


def test_page_shows_the_models_own_classes(folder_server, browser, own_folder):
    page = browser.new_page(viewport={"width": 420, "height": 860})
    page.goto(folder_server)
    page.wait_for_selector("#classes li")
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
