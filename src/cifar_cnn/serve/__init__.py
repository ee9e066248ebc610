"""`cifar-cnn serve`: a FastAPI app with a web page and a JSON API over one `Classifier`.

Works for any model: CIFAR-10's or one trained on your own folder (its own class names, 32 or
64 px input...); everything shown comes from the model's card.

GET  /            the page: drop, pick or paste images, see top-k bars (the model's classes)
POST /v1/predict  multipart images -> [{"filename", "label", "score", "predictions": [{"label", "score"}],
                  "uncertain"}]: one `Prediction.to_dict()` per image
POST /v1/explain  one image (`file`, optional `?target=class`) -> the prediction plus "explanation": a PNG
                  data URL of the picture with a heatmap of where the model found its class (explain.py)
GET  /v1/models   name, classes, accuracy, input size
GET  /healthz     the process is up;  GET /readyz: the model is loaded
/v2/...           the Open Inference Protocol (KServe v2, Triton's HTTP API), in oip.py: GET /v2,
                  /v2/health/live, /v2/health/ready, /v2/models/{model_name}[/ready]; POST .../infer
GET  /docs        OpenAPI docs (Swagger UI served from this server: works offline)
/studio...        with `studio_dir` (`serve --studio`): make a classifier in the browser, in serve/studio.py

Safe to expose (guards.py, timeouts.py): bodies capped as they stream, read deadlines for slow clients,
security headers and a Content-Security-Policy, an API key required beyond loopback, a per-client rate
limit, CORS only for listed origins, and errors that never show a stack trace or a server path.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware

from cifar_cnn.errors import CifarCnnError, ImageError
from cifar_cnn.images import MAX_PIXELS
from cifar_cnn.predict import Classifier, load
from cifar_cnn.serve import schemas
from cifar_cnn.serve.batcher import MicroBatcher, scored_rows, stack_rows
from cifar_cnn.serve.guards import (
    ApiKey,
    BodyLimit,
    RateLimit,
    SecurityHeaders,
    cors_middleware_options,
    is_loopback,
    is_open,
)
from cifar_cnn.serve.oip import v2_router
from cifar_cnn.serve.timeouts import BODY_TIMEOUT, HEADER_TIMEOUT, deadline_protocol
from cifar_cnn.serve.uploads import IMAGE_STATUS, UploadRefused, decode_uploads, read_upload

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_FILES = 16
EXPOSED_RATE_LIMIT = 10.0  # requests/s per client when listening beyond loopback (bursts of twice that)
log = logging.getLogger("cifar_cnn.serve")


def create_app(
    model: Classifier | str | Path | None = None,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_batch: int = 64,
    max_wait_ms: float = 5,
    api_key: str | None = None,
    rate_limit: float = 0,
    cors_origins: tuple[str, ...] | list[str] = (),
    studio_dir: str | Path | None = None,
):
    """Build the app. `model`: a Classifier, a model path, or None for the bundled model.

    `api_key`: require `Authorization: Bearer KEY` on every route but health checks, the page and the docs.
    `rate_limit`: requests per second per client address (0: none). `cors_origins`: origins allowed by CORS.
    `studio_dir`: serve the studio (page /studio, API /studio/api) over the projects in this folder; None: off.
    """
    clf = model if isinstance(model, Classifier) else load(model)
    batcher = MicroBatcher(scored_rows(clf), max_batch=max_batch, max_wait_ms=max_wait_ms)
    static = Path(str(resources.files("cifar_cnn.serve") / "static"))

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPIOffline(title="cifar-cnn", version="1", lifespan=lifespan, description=_description(clf),
                         redoc_url=None)  # fmt: skip
    app.state.classifier = clf
    app.state.batcher = batcher
    _add_guards(app, max_request_bytes=max_upload_bytes * MAX_FILES + 2**20, api_key=api_key,
                rate_limit=rate_limit, cors_origins=cors_origins)  # fmt: skip

    def error(status: int, message: str, filename: str | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "filename": filename}, status_code=status)

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(static / "index.html", media_type="text/html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str):
        path = static / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return error(404, "not found")
        return FileResponse(path)

    @app.get("/healthz", response_model=schemas.Health)
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", response_model=schemas.Ready)
    async def readyz():
        return {"status": "ready", "model": clf.name}

    @app.get("/v1/models", response_model=list[schemas.ModelInfo])
    async def models():
        card = clf.card
        return [{"name": card.name, "architecture": card.model, "classes": card.classes, "num_classes": card.num_classes,
                 "accuracy": card.accuracy, "accuracy_label": card.accuracy_label,
                 "input_size": [3, card.input_size, card.input_size],
                 "resize": card.resize, "temperature": card.temperature,
                 "uncertain_threshold": card.uncertain_threshold}]  # fmt: skip

    @app.post("/v1/predict", response_model=list[schemas.PredictionBody],
              responses=schemas.error_responses(413, 415, 422))  # fmt: skip
    async def predict(files: list[UploadFile], top_k: int = Query(5, ge=1, le=1000)):
        if not files:
            return error(422, "send one or more images as multipart field 'files'")
        if len(files) > MAX_FILES:
            return error(413, f"at most {MAX_FILES} files per request")
        try:
            arrays = await decode_uploads(clf, files, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels)
        except UploadRefused as refused:
            return error(refused.status, refused.message, refused.filename)
        rows = await asyncio.gather(*(batcher.predict(a) for a in arrays))
        probs, novelty = stack_rows(rows)
        results = clf.to_predictions(probs, top_k, novelty)
        for f, r in zip(files, results, strict=True):
            r.filename = f.filename
        return [r.to_dict() for r in results]

    @app.post("/v1/explain", response_model=schemas.ExplanationBody,
              responses=schemas.error_responses(413, 415, 422))  # fmt: skip
    async def explain(file: UploadFile, target: str | None = Query(None, max_length=200)):
        try:
            data = await read_upload(file, max_upload_bytes)
        except UploadRefused as refused:
            return error(refused.status, refused.message, refused.filename)
        if target is not None and target not in clf.classes:
            return error(422, f"unknown class {target!r}; this model's classes: {', '.join(clf.classes)}")
        try:
            why = await run_in_threadpool(clf.explain, data, target, name=file.filename, max_pixels=max_pixels)
        except ImageError as exc:
            return error(IMAGE_STATUS.get(exc.kind, 422), str(exc), file.filename)
        except CifarCnnError as exc:  # a model explain cannot read (a torch.export program)
            return error(422, str(exc), file.filename)
        png = await run_in_threadpool(why.to_png)
        why.prediction.filename = file.filename
        return why.prediction.to_dict() | {
            "target": why.target,
            "explanation": "data:image/png;base64," + base64.b64encode(png).decode(),
        }

    app.include_router(v2_router(clf, batcher, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels))
    if studio_dir is not None:  # off unless asked for: it writes files (serve/studio.py)
        from cifar_cnn.serve.studio import studio_router

        router = studio_router(studio_dir, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels)
        app.include_router(router)
        app.state.studio = router.studio
    return app


def _add_guards(app, *, max_request_bytes: int, api_key: str | None, rate_limit: float,
                cors_origins) -> None:  # fmt: skip
    """Errors in one shape without internals; the guard middlewares; an OpenAPI document that lists them."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        return JSONResponse({"error": message.lower() if message == "Not Found" else message, "filename": None},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # The same error shape as every other error, with each problem named by where it is.
        problems = "; ".join(f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                             for e in exc.errors()[:5])  # fmt: skip
        return JSONResponse({"error": f"invalid request: {problems}", "filename": None}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        # The traceback goes to the server's log; the client learns nothing about the server's insides.
        log.error("error answering %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal server error", "filename": None}, status_code=500)

    # add_middleware puts each new one outside the previous: this order is innermost first.
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    if api_key:
        app.add_middleware(ApiKey, key=api_key)
    if rate_limit > 0:
        app.add_middleware(RateLimit, per_second=rate_limit)
    if cors_origins:
        app.add_middleware(CORSMiddleware, **cors_middleware_options(cors_origins))
    app.add_middleware(SecurityHeaders)

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _document_guards(doc, api_key=bool(api_key), rate_limited=rate_limit > 0)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi


def _document_guards(doc: dict, *, api_key: bool, rate_limited: bool) -> None:
    """Add the guards' answers (401, 408, 413, 429) to every operation they apply to, in the error shape."""
    doc.setdefault("components", {}).setdefault("schemas", {}).setdefault(
        "ErrorBody", schemas.ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    if api_key:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            if "422" in operation.get("responses", {}) and "HTTPValidationError" in str(operation["responses"]["422"]):
                operation["responses"]["422"] = {"description": schemas.ERROR_DESCRIPTIONS[422], **ref}
            protected = not is_open(path)
            extra = schemas.guard_responses(api_key and protected, rate_limited and protected, method == "post")
            for status, spec in extra.items():
                entry = {"description": spec["description"], **ref}
                if "headers" in spec:
                    entry["headers"] = spec["headers"]
                operation.setdefault("responses", {}).setdefault(str(status), entry)
            if api_key and protected:
                operation["security"] = [{"bearer": []}]


def _description(clf: Classifier) -> str:
    card, s = clf.card, clf.input_size
    shown = ", ".join(card.classes[:20]) + (f" and {card.num_classes - 20} more" if card.num_classes > 20 else "")
    return (f"Image classification with the model `{card.name}` ({card.num_classes} classes: {shown}). "
            f"Upload images of any size and format to `/v1/predict`; each is resized to the model's {s}x{s} "
            "input and answered with its top-k labels and calibrated probabilities. `/v1/models` describes "
            "the model. Errors are JSON objects with an `error` message.")  # fmt: skip


class ServeError(CifarCnnError):
    """The server cannot start as asked (an exposed address without an API key...)."""


def serve(model: str | None = None, host: str = "127.0.0.1", port: int = 8000, *, api_key: str | None = None,
          insecure: bool = False, rate_limit: float | None = None, cors_origins: tuple[str, ...] = (),
          header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT,
          max_connections: int = 1000, **kwargs) -> None:  # fmt: skip
    """Run the app under uvicorn. Beyond loopback an API key is required (or `insecure=True`, said loudly)."""
    import uvicorn

    api_key = api_key or os.environ.get("CIFAR_CNN_API_KEY") or None
    exposed = not is_loopback(host)
    if exposed and not api_key and not insecure:
        raise ServeError(
            f"--host {host} accepts connections from other machines, so the API needs a key: pass "
            f"--api-key KEY or set CIFAR_CNN_API_KEY (for example {secrets.token_urlsafe(24)}), "
            "or --insecure to serve without one")  # fmt: skip
    if rate_limit is None:
        rate_limit = EXPOSED_RATE_LIMIT if exposed else 0
    app = create_app(model, api_key=api_key, rate_limit=rate_limit, cors_origins=cors_origins, **kwargs)
    clf = app.state.classifier
    print(f"Serving {clf.name} ({len(clf.classes)} classes, {clf.input_size}x{clf.input_size} input) "
          f"on http://{host}:{port}  (API docs: /docs)")  # fmt: skip
    if exposed and not api_key:
        print(f"WARNING: --insecure: anyone who can reach {host}:{port} can use this API without a key")
    elif api_key:
        print("API key required: send 'Authorization: Bearer <key>' (health checks /healthz /readyz stay open)")
    if rate_limit:
        print(f"Rate limit: {rate_limit:g} requests/s per client (bursts of {max(1, round(2 * rate_limit))})")
    config = uvicorn.Config(app, host=host, port=port, log_level="info", server_header=False,
                            http=deadline_protocol(header_timeout, body_timeout), timeout_keep_alive=5,
                            limit_concurrency=max_connections)  # fmt: skip
    uvicorn.Server(config).run()
