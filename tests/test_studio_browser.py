"""The studio's whole flow in real headless Chromium with a fake camera: create a project and three
classes, add images by upload, drag and drop, paste and webcam bursts, train, read the accuracy,
open a confusion-matrix cell, predict an upload and the live webcam, download the exports (the ONNX
file checked in onnxruntime), restart the server and find the project again. Screenshots of each
stage go to test-artifacts/studio-*.png."""

import base64
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect

from helpers import running_server

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
PROJECT = "Shapes & Co"
TRAINING_TIMEOUT_MS = 900_000  # a loaded 2-core CI machine; alone it takes well under a minute


@pytest.fixture
def camera_browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS + FAKE_CAMERA)
        yield b
        b.close()


def shape_files(root: Path, kind: str, n: int, seed: int) -> list[Path]:
    from cifar_cnn.demo import shape_image

    rng = np.random.default_rng(seed)
    (root / kind).mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(root / kind / f"{kind}-{seed}-{i}.png")
        shape_image(kind, rng).save(paths[-1])
    return paths


def data_transfer(page, paths: list[Path]):
    """A DataTransfer holding these files, as a drop or a paste carries them."""
    items = [[p.name, base64.b64encode(p.read_bytes()).decode()] for p in paths]
    return page.evaluate_handle("""items => {
        const dt = new DataTransfer();
        for (const [name, b64] of items) {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            dt.items.add(new File([bytes], name, { type: "image/png" }));
        }
        return dt;
    }""", items)  # fmt: skip


def card(page, name: str):
    return page.locator(f'.class-card[data-class="{name}"]')


def count(page, name: str) -> int:
    return int(card(page, name).locator(".count").inner_text().split()[0])


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"studio-{name}.png"), full_page=True)


@pytest.mark.slow
def test_studio_flow_in_chromium(camera_browser, model_file, tmp_path):
    images = tmp_path / "shapes"
    circles, squares = shape_files(images, "circle", 30, 1), shape_files(images, "square", 30, 2)
    workdir = tmp_path / "studio"
    refused = []  # Content-Security-Policy violations, reported on the console
    with running_server(model_file, "--studio", "--workdir", str(workdir)) as url:
        page = camera_browser.new_page(viewport={"width": 1000, "height": 1000}, accept_downloads=True)
        page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(f"{url}/studio")
        expect(page.locator("#projects")).to_contain_text("No projects yet")

        # 1. A project; three classes (renamed from "Class 1", "Class 2", plus one added).
        page.fill("#new-project-name", PROJECT)
        page.click("#new-project")
        expect(page.locator(".class-card")).to_have_count(2)
        for old, new in (("Class 1", "circle"), ("Class 2", "square")):
            card(page, old).locator(".class-name").fill(new)
            card(page, old).locator(".class-name").press("Enter")
            expect(card(page, new)).to_have_count(1)
        page.click("#add-class")
        card(page, "Class 3").locator(".class-name").fill("camera")
        card(page, "Class 3").locator(".class-name").press("Enter")
        expect(card(page, "camera")).to_have_count(1)

        # 2. Examples: upload (circles), drag and drop and a paste (squares), a webcam burst (camera).
        card(page, "circle").locator(".file-input").set_input_files([str(p) for p in circles])
        expect(card(page, "circle").locator(".count")).to_have_text("30 images", timeout=60_000)
        card(page, "square").dispatch_event("drop", {"dataTransfer": data_transfer(page, squares[:29])})
        expect(card(page, "square").locator(".count")).to_have_text("29 images", timeout=60_000)
        card(page, "square").locator(".class-head").click()  # pastes go to the class clicked last
        page.evaluate("dt => window.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt }))",
                      data_transfer(page, squares[29:]))  # fmt: skip
        expect(card(page, "square").locator(".count")).to_have_text("30 images", timeout=60_000)
        card(page, "camera").locator(".webcam-toggle").click()
        hold = card(page, "camera").locator(".hold-record")
        expect(hold).to_be_visible()
        page.wait_for_timeout(1000)  # the fake camera's first frames
        for _ in range(3):  # three bursts: hold the button down, let go
            hold.hover()
            page.mouse.down()
            page.wait_for_timeout(1500)
            page.mouse.up()
            page.wait_for_timeout(300)
        expect(card(page, "camera").locator(".burst")).to_have_text("", timeout=60_000)  # all frames sent
        assert count(page, "camera") >= 12, count(page, "camera")
        assert card(page, "camera").locator(".thumb img").count() >= 12
        shot(page, "1-classes")
        # Remove one thumbnail: the class loses that image.
        before = count(page, "circle")
        card(page, "circle").locator(".thumb").first.hover()
        card(page, "circle").locator(".thumb .remove").first.click()
        expect(card(page, "circle").locator(".count")).to_have_text(f"{before - 1} images")
        card(page, "camera").locator(".webcam-toggle").click()  # close the camera

        # 3. Train: progress streams in (server-sent events), then the evaluation.
        page.click("#train")
        expect(page.locator("#status")).to_contain_text(re.compile(r"Epoch \d+ of \d+: loss"), timeout=300_000)
        assert int(page.locator("#progress").get_attribute("max")) > 1
        shot(page, "2-training")
        expect(page.locator("#status")).to_contain_text("Trained in", timeout=TRAINING_TIMEOUT_MS)
        expect(page.locator("#accuracy")).to_contain_text("Accuracy")
        accuracy = re.search(r"Accuracy ([\d.]+%)", page.locator("#accuracy").inner_text()).group(1)
        assert float(accuracy[:-1]) >= 80, accuracy  # chance is 33%
        assert page.locator("#per-class .bar").count() == 3
        diagonal = page.locator('#confusion td.cell[data-actual="circle"][data-predicted="circle"]')
        n = int(diagonal.inner_text())
        diagonal.click()
        expect(page.locator("#cell-images h4")).to_contain_text(f"Actual circle, the model said circle: {n} image")
        assert page.locator("#cell-images .thumb img").count() == n > 0
        shot(page, "3-trained")

        # 4. Try it: an upload the model never saw, and the live webcam.
        fresh = shape_files(images, "circle", 3, 99)
        page.set_input_files("#try-file", [str(p) for p in fresh])
        expect(page.locator("#try-results .card.done")).to_have_count(3, timeout=60_000)
        said = [t.split()[0] for t in page.locator("#try-results .card.done .top").all_inner_texts()]
        assert said.count("circle") >= 2, said
        page.click("#try-webcam")
        expect(page.locator("#live-result .top")).to_have_text(re.compile(r"^camera \d"), timeout=60_000)
        shot(page, "4-try")
        page.click("#try-webcam")

        # 5. Export: each a download; the ONNX file answers as the served model does.
        files = {}
        for fmt in ("safetensors", "onnx", "labels"):
            with page.expect_download(timeout=180_000) as download:
                page.click(f"#export-{fmt}")
            files[fmt] = tmp_path / download.value.suggested_filename
            download.value.save_as(files[fmt])
        assert sorted(p.name for p in files.values()) == sorted([f"{PROJECT}.safetensors", f"{PROJECT}.onnx",
                                                                 f"{PROJECT}-labels.txt"])  # fmt: skip
        assert files["labels"].read_text().splitlines() == ["camera", "circle", "square"]
        check_exports(files, fresh)
        expect(page.locator("#export-status")).to_contain_text("Downloaded")
    assert not refused, refused

    # 6. The project is plain folders: a restarted server finds it, model and evaluation included.
    project = workdir / PROJECT
    assert sorted(p.name for p in (project / "images").iterdir()) == ["camera", "circle", "square"]
    assert len(list((project / "images" / "square").glob("*.png"))) == 30
    with running_server(model_file, "--studio", "--workdir", str(workdir)) as url:
        page = camera_browser.new_page(viewport={"width": 1000, "height": 1000})
        page.goto(f"{url}/studio")
        link = page.locator("#projects a", has_text=PROJECT)
        expect(link).to_be_visible()
        expect(page.locator("#projects")).to_contain_text(
            re.compile(rf"3 classes, \d+ images, accuracy {re.escape(accuracy)}")
        )
        link.click()
        expect(card(page, "square").locator(".count")).to_have_text("30 images")
        expect(page.locator("#accuracy")).to_contain_text(f"Accuracy {accuracy}")
        expect(page.locator("#status")).to_contain_text("Trained in")
        shot(page, "5-reopened")


def check_exports(files: dict, images: list[Path]) -> None:
    """The downloaded model file loads, and the ONNX file gives its probabilities (without TTA)."""
    import onnx
    import onnxruntime as ort

    import cifar_cnn
    from cifar_cnn.images import load_image

    clf = cifar_cnn.load(files["safetensors"])
    assert clf.classes == ["camera", "circle", "square"]
    meta = {p.key: p.value for p in onnx.load(str(files["onnx"])).metadata_props}
    assert meta["classes"] == '["camera", "circle", "square"]' and meta["input_size"] == "32"
    x = np.stack([load_image(p, 32) for p in images])  # uint8 (N, 32, 32, 3), as the graph takes them
    session = ort.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    probs, _ = session.run(None, {"images": x})
    reference = clf.predict_proba(x, tta=0, bf16=False)
    assert probs.shape == (len(images), 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.abs(probs - reference).max() < 1e-3
