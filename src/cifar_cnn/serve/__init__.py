"""`cifar-cnn serve`: a FastAPI app with a web page and a JSON API over one `Classifier`.

Works for any model: CIFAR-10's or one trained on your own folder (its own class names, 32 or
64 px input...); everything shown comes from the model's card.

GET  /            the page: drop, pick or paste images, see top-k bars (the model's classes)
POST /v1/predict  multipart images -> [{"filename", "label", "score", "predictions": [{"label", "score"}],
                  "uncertain"}]: one `Prediction.to_dict()` per image
GET  /v1/models   name, classes, accuracy, input size
GET  /healthz     the process is up;  GET /readyz: the model is loaded
GET  /docs        OpenAPI docs
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from cifar_cnn.errors import ImageError
from cifar_cnn.images import MAX_PIXELS
from cifar_cnn.predict import Classifier, load
from cifar_cnn.serve.batcher import MicroBatcher

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_FILES = 16
STATUS_FOR = {"unsupported": 415, "too_large": 413, "empty": 422, "damaged": 422, "missing": 422}


def create_app(
    model: Classifier | str | Path | None = None,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_batch: int = 64,
    max_wait_ms: float = 5,
):
    """Build the app. `model`: a Classifier, a model path, or None for the bundled model."""
    clf = model if isinstance(model, Classifier) else load(model)
    batcher = MicroBatcher(clf.predict_proba, max_batch=max_batch, max_wait_ms=max_wait_ms)
    static = Path(str(resources.files("cifar_cnn.serve") / "static"))

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="cifar-cnn", version="1", lifespan=lifespan, description=_description(clf))
    app.state.classifier = clf
    app.state.batcher = batcher

    def error(status: int, message: str, filename: str | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "filename": filename}, status_code=status)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        # Refuse oversized uploads from the header, before reading the body.
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_upload_bytes * MAX_FILES:
            return error(413, f"request body over {max_upload_bytes * MAX_FILES // 2**20} MiB")
        return await call_next(request)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(static / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str):
        path = static / name
        if "/" in name or not path.is_file():
            return error(404, "not found")
        return FileResponse(path)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        return {"status": "ready", "model": clf.name}

    @app.get("/v1/models")
    async def models():
        card = clf.card
        return [{"name": card.model, "classes": card.classes, "num_classes": card.num_classes,
                 "accuracy": card.accuracy, "accuracy_label": card.accuracy_label,
                 "input_size": [3, card.input_size, card.input_size],
                 "resize": card.resize, "temperature": card.temperature,
                 "uncertain_threshold": card.uncertain_threshold}]  # fmt: skip

    @app.post("/v1/predict")
    async def predict(files: list[UploadFile], top_k: int = 5):
        if not files:
            return error(422, "send one or more images as multipart field 'files'")
        if len(files) > MAX_FILES:
            return error(413, f"at most {MAX_FILES} files per request")
        arrays = []
        for f in files:
            data = await f.read(max_upload_bytes + 1)
            if len(data) > max_upload_bytes:
                return error(413, f"{f.filename}: over the {max_upload_bytes // 2**20} MiB upload limit", f.filename)
            try:
                arrays.append(await run_in_threadpool(clf.load_image, data, name=f.filename, max_pixels=max_pixels))
            except ImageError as exc:
                return error(STATUS_FOR.get(exc.kind, 422), str(exc), f.filename)
        probs = await asyncio.gather(*(batcher.predict(a) for a in arrays))
        results = clf.to_predictions(np.stack(probs), top_k)
        for f, r in zip(files, results, strict=True):
            r.filename = f.filename
        return [r.to_dict() for r in results]

    return app


def _description(clf: Classifier) -> str:
    card, s = clf.card, clf.input_size
    shown = ", ".join(card.classes[:20]) + (f" and {card.num_classes - 20} more" if card.num_classes > 20 else "")
    return (f"Image classification with the model `{card.model}` ({card.num_classes} classes: {shown}). "
            f"Upload images of any size and format to `/v1/predict`; each is resized to the model's {s}x{s} "
            "input and answered with its top-k labels and calibrated probabilities. `/v1/models` describes "
            "the model.")  # fmt: skip


def serve(model: str | None = None, host: str = "127.0.0.1", port: int = 8000, **kwargs) -> None:
    import uvicorn

    app = create_app(model, **kwargs)
    clf = app.state.classifier
    print(f"Serving {clf.name} ({len(clf.classes)} classes, {clf.input_size}x{clf.input_size} input) "
          f"on http://{host}:{port}  (API docs: /docs)")  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level="info")
