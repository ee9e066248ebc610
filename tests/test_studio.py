"""The studio: projects on disk, re-encoded uploads, limits, the training queue, its web API (TestClient)
and the notebook widget in a real kernel. The browser flow is in test_studio_browser.py."""

import importlib
import io
import json
import re
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cifar_cnn.errors import CifarCnnError, ImageError
from cifar_cnn.studio import (
    EVALUATION_FILE,
    MODEL_FILE,
    STORED_SIDE,
    Limits,
    Studio,
    StudioError,
    TrainingQueue,
    check_name,
    reencode,
)

SHAPES = ("circle", "square", "triangle")
TRAIN_MODULE = importlib.import_module("cifar_cnn.train")  # (the package's `train` attribute is the function)


def png_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **kw)
    return buf.getvalue()


def shape_pngs(kind: str, n: int, seed: int = 0) -> list[bytes]:
    from cifar_cnn.demo import shape_image

    rng = np.random.default_rng(seed + SHAPES.index(kind) if kind in SHAPES else seed)
    return [png_bytes(shape_image(kind, rng)) for _ in range(n)]


def chunks(png: bytes) -> list[bytes]:
    """The chunk types of a PNG file, in order."""
    out, i = [], 8
    while i < len(png):
        (length,) = struct.unpack(">I", png[i : i + 4])
        out.append(png[i + 4 : i + 8])
        i += 12 + length
    return out


def with_chunks(png: bytes, *extra: tuple[bytes, bytes]) -> bytes:
    """`png` with extra chunks inserted after IHDR, and bytes appended after IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr_end = 8 + 12 + 13
    return png[:ihdr_end] + b"".join(chunk(k, d) for k, d in extra) + png[ihdr_end:] + b"TRAILING <script>"


@pytest.fixture
def studio(tmp_path):
    return Studio(tmp_path / "studio")


def make_project(studio: Studio, name: str = "shapes", per_class: int = 4, classes=SHAPES):
    project = studio.create(name)
    for c in classes:
        project.add_class(c)
        for data in shape_pngs(c, per_class):
            project.add_image(c, data, f"{c}.png")
    return project


# ---- names, projects, images --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cat", "Grüne Äpfel", "猫", "blue sky", "a.b", "x" * 64, "  padded  "])
def test_names_accept_unicode(name):
    assert check_name(name) == name.strip()


@pytest.mark.parametrize(("name", "why"), [
    ("", "empty"), ("   ", "empty"), ("a/b", "cannot hold /"), ("..", "dot"), (".hidden", "dot"), ("a\\b", "cannot hold"),
    ("x" * 65, "too long"), ("tab\there", "U+0009"), ("CON", "reserved"), ("train", "reserved"), ("val", "reserved"),
    ("end.", "end with a dot"), ("~$lock", "~$"), ("a:b", "cannot hold"), ("zero\u200bwidth", "U+200B"), (3, "text"),
])  # fmt: skip
def test_names_refused_with_a_reason(name, why):
    with pytest.raises(StudioError, match=re.escape(why)) as info:
        check_name(name)
    assert info.value.kind == "invalid"


def test_projects_and_classes_on_disk_survive_a_restart(studio):
    project = make_project(studio, "Tiere & Formen", per_class=2)
    assert studio.projects() == ["Tiere & Formen"]
    with pytest.raises(StudioError, match="exists already") as info:
        studio.create("tiere & formen")  # case-insensitively the same folder on macOS and Windows
    assert info.value.kind == "conflict"
    with pytest.raises(StudioError, match="exists already"):
        project.add_class("Circle")
    project.rename_class("square", "Quadrat")
    project.rename_class("circle", "Circle")  # a case-only rename
    project.delete_class("triangle")
    assert project.classes() == ["Circle", "Quadrat"]
    first = project.images("Circle")
    project.remove_image("Circle", first[0])
    # The folder is what the library reads: images/<class>/*.png, the project's metadata beside it.
    root = studio.workdir / "Tiere & Formen"
    assert sorted(p.name for p in root.iterdir()) == ["images", "project.json"]
    assert sorted(p.name for p in (root / "images").iterdir()) == ["Circle", "Quadrat"]
    assert all(p.suffix == ".png" for p in (root / "images" / "Quadrat").iterdir())

    again = Studio(studio.workdir)  # a server restart: a new Studio finds it all
    reopened = again.open("Tiere & Formen")
    assert reopened.count() == {"Circle": 1, "Quadrat": 2}
    assert reopened.images("Circle") == first[1:]
    assert json.loads((root / "project.json").read_text())["name"] == "Tiere & Formen"
    again.delete("Tiere & Formen")
    assert again.projects() == [] and not root.exists()
    with pytest.raises(StudioError, match="no project") as info:
        again.open("Tiere & Formen")
    assert info.value.kind == "not_found"


def test_nothing_leaves_the_workdir(studio, tmp_path):
    project = make_project(studio, per_class=2)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes(Image.new("RGB", (8, 8))))
    (project.images_dir / "linked").symlink_to(outside)  # a link planted in the folder is not followed
    for bad in ("../outside", "..", "/etc", "a/../../b"):
        with pytest.raises(StudioError):
            studio.open(bad)
    with pytest.raises(StudioError, match="no class"):
        project.images("linked")
    for image_id in ("../../outside/secret.png", "..", ".hidden", "/etc/passwd", "a\\b"):
        with pytest.raises(StudioError) as info:
            project.image_path("circle", image_id)
        assert info.value.kind == "not_found"
    assert "linked" not in project.classes()


def test_uploads_are_decoded_and_reencoded_never_stored_as_given(studio):
    project = studio.create("p")
    project.add_class("x")
    pixels = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "SpyCam Inc."  # camera maker: metadata that must not survive
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show
    dirty = with_chunks(png_bytes(Image.fromarray(pixels)), (b"tEXt", b"Comment\0<script>alert(1)</script>"),
                        (b"eXIf", exif.tobytes()), (b"iCCP", b"profile\0\0" + zlib.compress(b"x" * 100)))  # fmt: skip
    image_id = project.add_image("x", dirty, "dirty.png")
    stored = project.image_path("x", image_id).read_bytes()
    assert chunks(stored) == [b"IHDR", b"IDAT", b"IEND"] and stored != dirty
    assert b"SpyCam" not in stored and b"script" not in stored and stored.endswith(b"IEND\xaeB`\x82")
    with Image.open(io.BytesIO(stored)) as im:
        assert im.mode == "RGB" and im.size == (40, 50)  # EXIF orientation applied, then dropped
        assert np.array_equal(np.asarray(im), np.rot90(pixels, -1))  # lossless: the same pixels
    big = png_bytes(Image.fromarray(np.zeros((1200, 3000, 3), np.uint8)))
    with Image.open(io.BytesIO(reencode(big, max_bytes=2**24))) as im:
        assert min(im.size) == STORED_SIDE and max(im.size) <= 4 * STORED_SIDE
    for data, kind in ((b"%PDF-1.4 not an image", "unsupported"), (b"", "empty"), (dirty[:60], "damaged")):
        with pytest.raises(ImageError) as info:
            project.add_image("x", data, "bad")
        assert info.value.kind == kind, info.value
    assert len(project.images("x")) == 1


def test_limits_each_with_a_clear_message(tmp_path):
    studio = Studio(tmp_path / "s", Limits(images_per_project=3, bytes_per_image=5000, total_bytes=9000,
                                           classes_per_project=2, projects=1))  # fmt: skip
    project = studio.create("p")
    project.add_class("a")
    project.add_class("b")
    with pytest.raises(StudioError, match="at most 2 classes"):
        project.add_class("c")
    with pytest.raises(StudioError, match="its limit: delete one first"):
        studio.create("q")
    small = png_bytes(Image.new("RGB", (16, 16), (200, 30, 30)))
    with pytest.raises(StudioError, match=r"5\.9 KiB is over the 4\.9 KiB limit per image") as info:
        project.add_image("a", b"\x89PNG" + b"\0" * 6000, "big.png")
    assert info.value.kind == "too_large"
    for _ in range(3):
        project.add_image("a", small)
    with pytest.raises(StudioError, match="holds 3 images, the limit per project") as info:
        project.add_image("b", small)
    assert info.value.kind == "project_full"
    project.remove_image("a", project.images("a")[0])
    project.add_image("b", small)  # room again
    noisy = png_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)))
    tight = Studio(tmp_path / "t", Limits(total_bytes=len(noisy) + 2000)).create("p")
    tight.add_class("a")
    tight.add_image("a", noisy)
    with pytest.raises(StudioError, match=r"folder is full: .* used of its .* limit; delete images") as info:
        tight.add_image("a", noisy)
    assert info.value.kind == "full" and len(tight.images("a")) == 1


# ---- the training queue -------------------------------------------------------------------------


def test_queue_runs_one_job_at_a_time_in_order():
    running, ran, lock = [], [], threading.Lock()
    peak = [0]

    def runner(job):
        with lock:
            running.append(job.project)
            peak[0] = max(peak[0], len(running))
        time.sleep(0.05)
        with lock:
            running.remove(job.project)
            ran.append(job.project)
        if job.project == "bad":
            raise CifarCnnError("this project cannot be trained")
        return {"accuracy": 1.0}

    queue = TrainingQueue(runner)
    events = []
    queue.listen(events.append)
    jobs = [queue.submit(p) for p in ("a", "bad", "c", "d")]
    with pytest.raises(StudioError, match="already training"):
        queue.submit("c")
    assert queue.cancel("d").status == "cancelled"
    for job in jobs:
        assert job.wait(10).done_event.is_set()
    assert peak[0] == 1 and ran == ["a", "bad", "c"]
    assert [j.status for j in jobs] == ["done", "failed", "done", "cancelled"]
    assert jobs[1].error == "this project cannot be trained" and jobs[0].result == {"accuracy": 1.0}
    queued = [e for e in events if e["type"] == "queued" and e["project"] == "c"]
    assert queued[0]["position"] == 2 and queued[-1]["position"] == 0  # moved up as the others ended
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)  # listeners get them in order
    # "a" may hear "queued" more than once: positions are re-sent when "d" is cancelled before "a" starts
    kinds = [e["type"] for e in queue.events("a")]
    assert [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]] == ["queued", "started", "done"]
    started = next(e for e in queue.events("a") if e["type"] == "started")
    assert queue.events("a", after=started["id"])[0]["type"] == "done"
    assert queue.submit("a").wait(10).status == "done"  # a project trains again once its job has ended


def fake_train(epochs: int = 3, delay: float = 0.0, fail: Exception | None = None):
    """Stands in for cifar_cnn.train.train: writes into out_dir, reports epochs, then fails or not."""

    def train(recipe, *, data, out_dir, on_epoch, **kwargs):
        assert recipe == "fast" and kwargs["init"] == "auto" and len(data.train_x)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "checkpoint.safetensors").write_bytes(b"half a run")
        for epoch in range(1, epochs + 1):
            time.sleep(delay)
            on_epoch({"epoch": epoch, "epochs": epochs, "train_loss": 1.0 / epoch, "train_accuracy": 0.5})
        raise fail or CifarCnnError("no real training in this test")

    return train


def test_a_failed_job_shows_its_error_and_leaves_the_project_intact(studio, monkeypatch):
    project = make_project(studio, per_class=3)
    project.model_dir.mkdir()
    (project.model_dir / MODEL_FILE).write_bytes(b"the previous model")
    before = {c: project.images(c) for c in project.classes()}
    where = f"{project.images_dir}/circle/x.png"
    monkeypatch.setattr(TRAIN_MODULE, "train", fake_train(fail=CifarCnnError(f"{where}: cannot read the disk")))
    job = studio.train(project.name).wait(60)
    assert job.status == "failed" and job.error == "shapes/images/circle/x.png: cannot read the disk"  # no server path
    assert [h["epoch"] for h in job.history] == [1, 2, 3]
    assert (project.model_dir / MODEL_FILE).read_bytes() == b"the previous model"
    assert not (project.path / ".training").exists()
    assert {c: project.images(c) for c in project.classes()} == before
    last = Studio(studio.workdir).open("shapes").meta()["last_job"]
    assert last["status"] == "failed" and "cannot read the disk" in last["error"]

    monkeypatch.setattr(TRAIN_MODULE, "train", fake_train(fail=MemoryError("out of memory")))
    job = studio.train(project.name).wait(60)
    assert job.status == "failed" and job.error == "training failed: MemoryError: out of memory"


def test_cancel_stops_after_the_epoch_and_keeps_the_project(studio, monkeypatch):
    project = make_project(studio, per_class=3)
    monkeypatch.setattr(TRAIN_MODULE, "train", fake_train(epochs=200, delay=0.02))
    events = []
    studio.queue.listen(events.append)
    job = studio.train(project.name)
    while not job.history:
        time.sleep(0.01)
    with pytest.raises(StudioError, match="is training") as info:
        project.add_image("circle", shape_pngs("circle", 1)[0])  # the images stay put while they train
    assert info.value.kind == "conflict"
    studio.cancel(project.name)
    assert job.wait(30).status == "cancelled" and len(job.history) < 200
    assert "cancelling" in [e["type"] for e in events]
    assert not (project.path / ".training").exists() and not project.has_model()
    project.add_image("circle", shape_pngs("circle", 1)[0])  # editable again


def test_a_project_must_be_trainable_before_it_is_queued(studio):
    project = studio.create("p")
    project.add_class("only")
    with pytest.raises(StudioError, match="at least 2 classes"):
        studio.train("p")
    project.add_class("other")
    project.add_image("only", shape_pngs("circle", 1)[0])
    with pytest.raises(StudioError, match=r"at least 2 images.*'only' \(1\), 'other' \(0\)"):
        studio.train("p")


def test_restart_marks_an_interrupted_job(studio):
    project = make_project(studio, per_class=2)
    project.update_meta(last_job={"id": "x", "status": "running", "error": None})
    (project.path / ".training").mkdir()
    (project.path / ".training" / "checkpoint.safetensors").write_bytes(b"half")
    again = Studio(studio.workdir)
    last = again.open("shapes").meta()["last_job"]
    assert last["status"] == "failed" and "server stopped" in last["error"]
    assert not (project.path / ".training").exists()


# ---- real training (one small project, shared by the tests below) ------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A studio with project "shapes": 3 classes of 12 coloured shapes, trained for real."""
    studio = Studio(tmp_path_factory.mktemp("trained") / "studio")
    project = make_project(studio, per_class=12)
    events = []
    studio.queue.listen(events.append)
    job = studio.train(project.name).wait(900)
    assert job.status == "done", job.error
    return studio, project, job, events


def test_training_fine_tunes_reports_progress_and_evaluates(trained):
    studio, project, job, events = trained
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["queued", "started"] and kinds[-1] == "done"
    epochs = [e for e in events if e["type"] == "epoch"]
    assert len(epochs) == job.epochs > 1 and epochs[-1]["epoch"] == job.epochs
    assert all(np.isfinite(e["loss"]) and 0 <= e["accuracy"] <= 1 for e in epochs)
    assert [e["phase"] for e in events if e["type"] == "phase"] == ["reading images", "training", "evaluating"]
    model = project.model_dir
    assert sorted(p.name for p in model.iterdir()) == [EVALUATION_FILE, "labels.txt", MODEL_FILE]  # no checkpoint
    assert (model / "labels.txt").read_text().splitlines() == list(SHAPES)
    clf = studio.classifier("shapes")
    assert clf.classes == list(SHAPES) and clf.card.init == "pretrained:fast"  # fine-tuned, as `train --data` does
    ev = project.evaluation()
    assert ev["classes"] == list(SHAPES) and ev["split"] == "validation" and ev["images_evaluated"] == 6
    assert np.array(ev["confusion"]).sum() == 6 and abs(np.trace(ev["confusion"]) / 6 - ev["accuracy"]) < 1e-6
    assert ev["accuracy"] == pytest.approx(clf.card.metrics["test_accuracy"])  # the card's own figure
    assert [c["class"] for c in ev["per_class"]] == list(SHAPES) and all(c["images"] == 2 for c in ev["per_class"])
    shown = [im for a in SHAPES for p in SHAPES for im in project.cell(a, p)]
    assert len(shown) == 6 and all(im["thumbnail"].startswith("data:image/jpeg;base64,") for im in shown)
    assert studio.info("shapes")["model"]["stale"] is False
    # The same folder trains from the command line: it is an ordinary labelled folder.
    from cifar_cnn.datasets import check_folder

    assert check_folder(project.images_dir, progress=False).classes == list(SHAPES)


# ---- the web API --------------------------------------------------------------------------------


def api(model_file, studio_dir, **kw):
    from cifar_cnn.serve import create_app

    return TestClient(create_app(model_file, studio_dir=studio_dir, **kw))


def test_studio_is_off_unless_asked_for(model_file, tmp_path):
    from cifar_cnn.cli import main
    from cifar_cnn.serve import create_app

    client = TestClient(create_app(model_file))
    assert client.get("/studio").status_code == 404
    assert client.get("/studio/api/projects").status_code == 404
    assert client.post("/studio/api/projects", json={"name": "x"}).status_code == 404
    assert not [p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/studio")]
    assert main(["serve", "--workdir", str(tmp_path / "w")]) == 2  # --workdir alone is a mistake, said so
    assert not (tmp_path / "w").exists()


def test_studio_api_needs_the_key_when_one_is_set(model_file, tmp_path, monkeypatch):
    client = api(model_file, tmp_path / "s", api_key="k3y")
    page = client.get("/studio")
    assert page.status_code == 200 and "studio.js" in page.text  # the page is public, like /
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for method, path in (("GET", "/studio/api"), ("GET", "/studio/api/projects"), ("POST", "/studio/api/projects"),
                         ("DELETE", "/studio/api/projects/x"), ("GET", "/studio/api/projects/x/events")):  # fmt: skip
        assert client.request(method, path).status_code == 401, path
    ok = client.post("/studio/api/projects", json={"name": "x"}, headers={"Authorization": "Bearer k3y"})
    assert ok.status_code == 201
    doc = client.get("/openapi.json").json()
    assert doc["paths"]["/studio/api/projects"]["post"]["security"] == [{"bearer": []}]
    # Beyond loopback the server will not start without a key, studio or not.
    from cifar_cnn.serve import ServeError, serve

    monkeypatch.delenv("CIFAR_CNN_API_KEY", raising=False)
    with pytest.raises(ServeError, match="needs a key"):
        serve(str(model_file), host="0.0.0.0", studio_dir=tmp_path / "s")


def test_every_studio_route_documents_its_errors(model_file, tmp_path):
    doc = api(model_file, tmp_path / "s").get("/openapi.json").json()
    studio_ops = [(p, m, op) for p, ops in doc["paths"].items() if p.startswith("/studio") for m, op in ops.items()]
    assert len(studio_ops) == 20
    for path, method, op in studio_ops:
        errors = {s: r for s, r in op["responses"].items() if s[0] in "45"}
        assert errors or (path in ("/studio/api", "/studio/api/projects") and method == "get"), (path, method)
        for status, response in errors.items():
            assert "ErrorBody" in json.dumps(response), (path, method, status)


def test_projects_classes_and_images_over_http(model_file, tmp_path):
    client = api(model_file, tmp_path / "s")
    assert client.post("/studio/api/projects", json={"name": "Grüne Äpfel"}).status_code == 201
    base = "/studio/api/projects/Grüne Äpfel"
    for name in ("circle", "square"):
        assert client.post(f"{base}/classes", json={"name": name}).status_code == 201
    assert client.post(f"{base}/classes", json={"name": "../up"}).status_code == 422
    assert client.post(f"{base}/classes", json={"name": "CIRCLE"}).status_code == 409
    assert client.post("/studio/api/projects", json={"name": "grüne äpfel"}).status_code == 409
    assert client.get("/studio/api/projects/nope").status_code == 404
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(shape_pngs("circle", 3))]
    files.append(("files", ("notes.txt", b"not an image", "text/plain")))
    r = client.post(f"{base}/classes/circle/images", files=files)
    assert r.status_code == 201 and len(r.json()["added"]) == 3
    assert r.json()["refused"] == [{"filename": "notes.txt", "error": "notes.txt: not an image file Pillow can read "
                                    "(JPEG, PNG, WebP, GIF, BMP, TIFF...)"}]  # fmt: skip
    only_bad = client.post(
        f"{base}/classes/circle/images", files=[("files", ("x.pdf", b"%PDF-1.7", "application/pdf"))]
    )
    assert only_bad.status_code == 415 and only_bad.json()["filename"] == "x.pdf"
    many = [("files", (f"{i}.png", b"x", "image/png")) for i in range(17)]
    assert client.post(f"{base}/classes/circle/images", files=many).status_code == 413
    assert client.post(f"{base}/classes/nope/images", files=files[:1]).status_code == 404
    thumbs = client.get(f"{base}/classes/circle/images").json()
    assert len(thumbs) == 3 and thumbs[0]["thumbnail"].startswith("data:image/jpeg;base64,")
    image = client.get(f"{base}/classes/circle/images/{thumbs[0]['id']}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert client.get(f"{base}/classes/circle/images/..%2F..%2Fproject.json").status_code == 404
    assert client.delete(f"{base}/classes/circle/images/{thumbs[0]['id']}").status_code == 204
    assert client.patch(f"{base}/classes/square", json={"name": "Quadrat"}).status_code == 200
    info = client.get(base).json()
    assert [(c["name"], c["images"]) for c in info["classes"]] == [("Quadrat", 0), ("circle", 2)]
    assert info["model"] is None and info["folder"] == "Grüne Äpfel/images"
    train = client.post(f"{base}/train")
    assert train.status_code == 422 and "at least 2 images" in train.json()["error"]
    assert client.get(f"{base}/evaluation").status_code == 409
    assert client.get(f"{base}/export/onnx").status_code == 409
    assert client.post(f"{base}/predict", files=files[:1]).status_code == 409
    assert client.delete(f"{base}/classes/Quadrat").status_code == 204
    assert client.get("/studio/api/projects").json()[0]["classes"] == 1
    assert client.delete(base).status_code == 204 and client.get("/studio/api/projects").json() == []


def test_progress_streams_as_server_sent_events(model_file, tmp_path, monkeypatch):
    client = api(model_file, tmp_path / "s")
    make_project(client.app.state.studio, per_class=3)
    monkeypatch.setattr(TRAIN_MODULE, "train", fake_train(epochs=4, delay=0.05))
    r = client.post("/studio/api/projects/shapes/train")
    assert r.status_code == 202 and r.json()["status"] in ("queued", "running")
    assert client.post("/studio/api/projects/shapes/train").status_code == 409  # one job per project at a time
    assert client.post("/studio/api/projects/shapes/classes/circle/images", files=[
        ("files", ("c.png", shape_pngs("circle", 1)[0], "image/png"))]).status_code == 409  # fmt: skip
    with client.stream("GET", "/studio/api/projects/shapes/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.iter_text())  # the stream ends with the job
    events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
    assert [e["type"] for e in events][-1] == "failed" and events[-1]["error"] == "no real training in this test"
    assert [(e["epoch"], e["epochs"]) for e in events if e["type"] == "epoch"] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert "id: " in text and "event: epoch" in text
    last = events[-2]["id"]
    tail = client.get("/studio/api/projects/shapes/events", headers={"Last-Event-ID": str(last)}).text
    assert [json.loads(x[5:])["type"] for x in tail.splitlines() if x.startswith("data:")] == ["failed"]
    job = client.get("/studio/api/projects/shapes/job").json()
    assert job["status"] == "failed" and len(job["history"]) == 4
    assert client.get("/studio/api/projects/shapes").json()["last_job"]["status"] == "failed"


def test_the_trained_model_over_http(model_file, trained):
    studio, project, _, _ = trained
    client = api(model_file, studio.workdir)
    info = client.get("/studio/api/projects/shapes").json()
    assert info["model"]["classes"] == list(SHAPES) and info["model"]["stale"] is False
    ev = client.get("/studio/api/projects/shapes/evaluation").json()
    assert ev["confusion"] == project.evaluation()["confusion"] and "images" not in ev
    cell = client.get("/studio/api/projects/shapes/evaluation/cell", params={"actual": "circle", "predicted": "circle"})
    assert cell.status_code == 200 and len(cell.json()) == ev["confusion"][0][0]
    assert client.get("/studio/api/projects/shapes/evaluation/cell", params={"actual": "x", "predicted": "circle"}
                      ).status_code == 404  # fmt: skip
    upload = [("files", ("new.png", shape_pngs("circle", 1, seed=99)[0], "image/png"))]
    r = client.post("/studio/api/projects/shapes/predict", files=upload)
    assert r.status_code == 200 and {p["label"] for p in r.json()[0]["predictions"]} == set(SHAPES)
    assert r.json()[0]["filename"] == "new.png" and isinstance(r.json()[0]["uncertain"], bool)
    labels = client.get("/studio/api/projects/shapes/export/labels")
    assert labels.text.splitlines() == list(SHAPES) and "attachment" in labels.headers["content-disposition"]
    weights = client.get("/studio/api/projects/shapes/export/safetensors")
    assert weights.content == (project.model_dir / MODEL_FILE).read_bytes()
    assert 'filename="shapes.safetensors"' in weights.headers["content-disposition"]
    assert client.get("/studio/api/projects/shapes/export/pickle").status_code == 404
    # /v1 keeps the model the server was started with; the studio's own predict uses the project's.
    assert client.get("/v1/models").json()[0]["classes"] != list(SHAPES)


# ---- the widget, in a real kernel ---------------------------------------------------------------

WIDGET_CODE = r"""
import datetime, io, json
import numpy as np
from PIL import Image
from cifar_cnn.demo import shape_image
from cifar_cnn.widgets import studio_widget

def item(name, data):
    return {{"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
            "last_modified": datetime.datetime.now(datetime.timezone.utc)}}
def png(kind, rng):
    buf = io.BytesIO(); shape_image(kind, rng).save(buf, "PNG"); return buf.getvalue()

widget = studio_widget("notebook shapes", workdir={workdir!r})
rng = np.random.default_rng(0)
widget.rows["Class 1"].name.value = "circle"       # rename, as typing a name and pressing Enter does
widget.rows["Class 2"].name.value = "square"
widget.children[2].click()                        # "Add a class": Class 3
widget.rows["Class 3"].name.value = "triangle"
for kind in ("circle", "square", "triangle"):      # what the browser sends for FileUpload (ipywidgets 8)
    widget.rows[kind].upload.value = tuple(item(f"{{kind}}{{i}}.png", png(kind, rng)) for i in range(12))
widget.rows["circle"].upload.value = (item("notes.txt", b"not an image"),)
message = widget.children[5].value
counts = {{k: r.count.value for k, r in widget.rows.items()}}
before = widget.model
widget.train_button.click()
job = widget.wait(900)
widget.confusion_buttons[("circle", "circle")].click()
widget.test_upload.value = (item("test circle.png", png("circle", np.random.default_rng(7))),)
print(json.dumps({{"counts": counts, "before": before, "status": job.status, "error": job.error,
                  "progress": [widget.progress.value, widget.progress.max], "status_text": widget.status.value,
                  "classes": widget.model.classes, "accuracy": widget.project.evaluation()["accuracy"],
                  "grid": len(widget.confusion_buttons), "cell": len(widget.children[9].children[1].children),
                  "cell_count": widget.confusion_buttons[("circle", "circle")].description,
                  "message": message, "results": widget.results,
                  "test_outputs": [sorted(o.get("data", {{}})) for o in widget.test_output.outputs]}}))
"""


def test_studio_widget_in_a_real_kernel(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    code = WIDGET_CODE.format(workdir=str(tmp_path / "studio"))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    out = json.loads(nb.cells[0].outputs[-1]["text"].strip().splitlines()[-1])
    assert out["counts"] == {"circle": "12 images", "square": "12 images", "triangle": "12 images"}, out
    assert out["before"] is None and out["status"] == "done", out
    assert out["progress"][0] == out["progress"][1] > 1 and out["status_text"].startswith("Trained in")
    assert out["classes"] == list(SHAPES) and out["grid"] == 9
    assert int(out["cell_count"]) == out["cell"]  # the images behind the clicked cell are shown
    assert "notes.txt" in out["message"]  # a bad file is named; the others were added
    [prediction] = out["results"]
    assert prediction["filename"] == "test circle.png" and prediction["label"] in SHAPES
    assert out["test_outputs"] == [["image/png", "text/plain"]]
    project = tmp_path / "studio" / "notebook shapes"  # the same folders as the web studio's
    assert (project / "model" / MODEL_FILE).is_file() and len(list((project / "images" / "circle").iterdir())) == 12
