"""The studio's web API (`cifar-cnn serve --studio`): a thin HTTP layer over `cifar_cnn.studio`.

GET    /studio                                        the page (studio.html; public like /)
GET    /studio/api                                    the studio folder, its limits, usage and queue
GET    /studio/api/projects                           projects, with class and image counts
POST   /studio/api/projects                           {"name"}: create a project
GET    /studio/api/projects/{project}                 classes, counts, the model, the job, limits
DELETE /studio/api/projects/{project}
POST   /studio/api/projects/{project}/classes         {"name"}: add a class
PATCH  /studio/api/projects/{project}/classes/{cls}   {"name"}: rename it
DELETE /studio/api/projects/{project}/classes/{cls}
GET    /studio/api/projects/{project}/classes/{cls}/images            thumbnails (data: URLs), newest first
POST   /studio/api/projects/{project}/classes/{cls}/images            multipart `files`: add images
GET    /studio/api/projects/{project}/classes/{cls}/images/{image}    the stored PNG
DELETE /studio/api/projects/{project}/classes/{cls}/images/{image}
POST   /studio/api/projects/{project}/train           queue a training job (202)
POST   /studio/api/projects/{project}/cancel          cancel it
GET    /studio/api/projects/{project}/job             the job: status, epoch, history, error
GET    /studio/api/projects/{project}/events          server-sent events of the job (text/event-stream)
GET    /studio/api/projects/{project}/evaluation      per-class accuracy, confusion matrix, uncertain counts
GET    /studio/api/projects/{project}/evaluation/cell?actual=A&predicted=P   the images behind a cell
POST   /studio/api/projects/{project}/predict         multipart `files`: predictions of the project's model
GET    /studio/api/projects/{project}/export/{fmt}    safetensors | onnx | labels, as a download

Every route but the page changes or reads files on disk, so with an API key (always, beyond
loopback) each needs `Authorization: Bearer KEY`: the ApiKey guard protects every path that is
not public. Uploads are decoded and re-encoded (`studio.reencode`), never stored as sent.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import time
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from cifar_cnn.errors import ImageError
from cifar_cnn.serve.schemas import ErrorBody, PredictionBody
from cifar_cnn.serve.uploads import IMAGE_STATUS, UploadRefused, decode_uploads
from cifar_cnn.studio import Limits, Studio, StudioError

MAX_FILES = 16  # per upload request (the page sends bigger sets and webcam bursts in batches)
HEARTBEAT_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream
POLL_S = 0.25
STATUS = {"invalid": 422, "not_found": 404, "conflict": 409, "too_large": 413, "project_full": 413, "full": 507,
          "unavailable": 501}  # fmt: skip
DESCRIPTIONS = {
    404: "no such project, class, image or export",
    409: "exists already, the project is training, or it has no trained model yet",
    413: "too large: the request, an image, or a project over its image limit",
    415: "a file is not an image in a format the server reads",
    422: "a name or parameter is not valid, a file is empty or damaged, or the project cannot be trained as it is",
    501: "the server lacks an optional package for this (ONNX export)",
    507: "the studio's folder is at its disk limit",
}


class NameBody(BaseModel):
    name: str = Field(max_length=256, description='a project or class name: any Unicode, no / \\ : * ? " < > |')


class ClassInfo(BaseModel):
    name: str
    images: int


class ProjectSummary(BaseModel):
    name: str
    classes: int
    images: int
    trained: bool
    accuracy: float | None
    status: str | None = Field(None, description="the last training job's status")


class ModelSummary(BaseModel):
    classes: list[str]
    accuracy: float
    trained_at: float | None
    train_seconds: float | None
    total_seconds: float | None
    stale: bool = Field(description="images were added, removed or renamed since this model was trained")


class JobInfo(BaseModel):
    id: str
    project: str
    status: str = Field(description="queued, running, done, failed or cancelled")
    phase: str
    error: str | None
    epoch: int
    epochs: int
    history: list[dict]
    result: dict
    submitted: float
    started: float | None
    finished: float | None
    seconds: float


class ProjectInfo(BaseModel):
    name: str
    created: float | None
    classes: list[ClassInfo]
    images: int
    model: ModelSummary | None
    job: JobInfo | None
    last_job: dict | None
    folder: str = Field(description="the labelled folder, relative to the studio folder")
    limits: dict


class StudioInfo(BaseModel):
    workdir: str
    limits: dict
    used_bytes: int
    projects: int


class Thumbnail(BaseModel):
    id: str
    thumbnail: str | None = Field(description="a data: URL of a small JPEG, null if unreadable")


class Refused(BaseModel):
    filename: str | None
    error: str


class Added(BaseModel):
    added: list[str] = Field(description="ids of the images stored")
    refused: list[Refused]


class CellImage(BaseModel):
    class_: str = Field(alias="class")
    id: str
    label: str
    score: float
    uncertain: bool
    reason: str | None
    thumbnail: str | None


class Evaluation(BaseModel):
    classes: list[str]
    split: str
    accuracy: float
    images_evaluated: int
    per_class: list[dict]
    confusion: list[list[int]] = Field(description="rows: actual class, columns: predicted class")
    uncertain: int


def errors(*statuses: int) -> dict:
    return {s: {"model": ErrorBody, "description": DESCRIPTIONS[s]} for s in statuses}


def error(status: int, message: str, filename: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "filename": filename}, status_code=status)


def answer_errors(fn):
    """Turn StudioError and ImageError into the API's error shape, with their status codes."""

    def handle(exc: Exception) -> JSONResponse:
        if isinstance(exc, StudioError):
            return error(STATUS.get(exc.kind, 422), str(exc))
        return error(IMAGE_STATUS.get(exc.kind, 422), str(exc))

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def wrapper_async(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except (StudioError, ImageError) as exc:
                return handle(exc)

        return wrapper_async

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (StudioError, ImageError) as exc:
            return handle(exc)

    return wrapper


def studio_router(workdir: str | Path | None, *, max_upload_bytes: int = 10 * 2**20, max_pixels: int | None = None,
                  limits: Limits | None = None) -> APIRouter:  # fmt: skip
    """The page and API over a `Studio` in `workdir` (None: `studio.default_workdir()`). The router's
    `studio` attribute is that Studio. Images over `max_upload_bytes` are refused (413)."""
    if limits is None:
        limits = Limits(bytes_per_image=max_upload_bytes, **({"max_pixels": max_pixels} if max_pixels else {}))
    studio = Studio(workdir, limits)
    static = Path(str(resources.files("cifar_cnn.serve") / "static"))
    router = APIRouter(tags=["studio"])
    router.studio = studio  # type: ignore[attr-defined]
    api = "/studio/api/projects/{project}"

    @router.get("/studio", include_in_schema=False)
    async def page():
        return FileResponse(static / "studio.html", media_type="text/html")

    @router.get("/studio/api", response_model=StudioInfo)
    def studio_info():
        return {"workdir": str(studio.workdir), "limits": studio.limits.to_dict(), "used_bytes": studio.usage(),
                "projects": len(studio.projects())}  # fmt: skip

    @router.get("/studio/api/projects", response_model=list[ProjectSummary])
    def list_projects():
        out = []
        for name in studio.projects():
            try:
                info = studio.info(name)
            except StudioError:
                continue
            job = info["job"] or info["last_job"] or {}
            out.append({"name": name, "classes": len(info["classes"]), "images": info["images"],
                        "trained": info["model"] is not None,
                        "accuracy": info["model"]["accuracy"] if info["model"] else None,
                        "status": job.get("status")})  # fmt: skip
        return out

    @router.post("/studio/api/projects", status_code=201, response_model=ProjectInfo,
                 responses=errors(409, 413, 422, 507))  # fmt: skip
    @answer_errors
    def create_project(body: NameBody):
        return studio.create(body.name).info()

    @router.get(api, response_model=ProjectInfo, responses=errors(404, 422))
    @answer_errors
    def project_info(project: str):
        return studio.info(project)

    @router.delete(api, status_code=204, responses=errors(404, 409, 422))
    @answer_errors
    def delete_project(project: str):
        studio.delete(project)

    @router.post(api + "/classes", status_code=201, response_model=ProjectInfo,
                 responses=errors(404, 409, 413, 422))  # fmt: skip
    @answer_errors
    def add_class(project: str, body: NameBody):
        p = studio.open(project)
        p.add_class(body.name)
        return p.info()

    @router.patch(api + "/classes/{cls}", response_model=ProjectInfo, responses=errors(404, 409, 413, 422))
    @answer_errors
    def rename_class(project: str, cls: str, body: NameBody):
        p = studio.open(project)
        p.rename_class(cls, body.name)
        return p.info()

    @router.delete(api + "/classes/{cls}", status_code=204, responses=errors(404, 409, 422))
    @answer_errors
    def delete_class(project: str, cls: str):
        studio.open(project).delete_class(cls)

    @router.get(api + "/classes/{cls}/images", response_model=list[Thumbnail], responses=errors(404, 422))
    @answer_errors
    def thumbnails(project: str, cls: str, limit: int = Query(10000, ge=1, le=100000)):
        return studio.open(project).thumbnails(cls, limit)

    @router.post(api + "/classes/{cls}/images", status_code=201, response_model=Added,
                 responses=errors(404, 409, 413, 415, 422, 507))  # fmt: skip
    @answer_errors
    async def add_images(project: str, cls: str, files: list[UploadFile]):
        if len(files) > MAX_FILES:
            return error(413, f"at most {MAX_FILES} files per request")
        p = await run_in_threadpool(studio.open, project)
        await run_in_threadpool(p.class_dir, cls)
        added, refused, first = [], [], None
        for f in files:
            data = await f.read(studio.limits.bytes_per_image + 1)
            try:
                added.append(await run_in_threadpool(p.add_image, cls, data, f.filename or "image"))
            except (StudioError, ImageError) as exc:
                status = STATUS.get(exc.kind, 422) if isinstance(exc, StudioError) else IMAGE_STATUS.get(exc.kind, 422)
                first = first or (status, str(exc), f.filename)
                refused.append({"filename": f.filename, "error": str(exc)})
                if isinstance(exc, StudioError) and exc.kind in ("full", "project_full", "conflict"):
                    break  # the studio or the project is full (or training): the rest would be refused too
        if not added and first:
            return error(*first)
        return JSONResponse({"added": added, "refused": refused}, status_code=201)

    @router.get(api + "/classes/{cls}/images/{image_id}", response_class=FileResponse,
                responses={200: {"content": {"image/png": {}}}, **errors(404, 422)})  # fmt: skip
    @answer_errors
    def image(project: str, cls: str, image_id: str):
        path = studio.open(project).image_path(cls, image_id)
        if path.suffix.lower() == ".png":
            return FileResponse(path, media_type="image/png")
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)

    @router.delete(api + "/classes/{cls}/images/{image_id}", status_code=204, responses=errors(404, 409, 422))
    @answer_errors
    def remove_image(project: str, cls: str, image_id: str):
        studio.open(project).remove_image(cls, image_id)

    @router.post(api + "/train", status_code=202, response_model=JobInfo, responses=errors(404, 409, 422, 507))
    @answer_errors
    def train(project: str):
        return studio.train(project).to_dict()

    @router.post(api + "/cancel", response_model=JobInfo | None, responses=errors(404, 422))
    @answer_errors
    def cancel(project: str):
        job = studio.cancel(project)
        return job.to_dict() if job else None

    @router.get(api + "/job", response_model=JobInfo | None, responses=errors(404, 422))
    @answer_errors
    def job(project: str):
        found = studio.queue.job(studio.open(project).name)
        return found.to_dict() if found else None

    @router.get(api + "/events", response_class=StreamingResponse,
                responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events: queued, "
                           "started, phase, epoch (epoch, epochs, loss, accuracy, val_accuracy), cancelling, done, "
                           "failed, cancelled; the stream ends when the job has"}, **errors(404, 422)})  # fmt: skip
    @answer_errors
    async def events(project: str, request: Request, after: int = Query(0, ge=0)):
        name = (await run_in_threadpool(studio.open, project)).name
        last = request.headers.get("last-event-id", "")
        after = max(after, int(last) if last.isdigit() else 0)
        return StreamingResponse(_event_stream(studio, name, after), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip

    @router.get(api + "/evaluation", response_model=Evaluation, responses=errors(404, 409, 422))
    @answer_errors
    def evaluation(project: str):
        found = studio.open(project).evaluation()
        if found is None:
            raise StudioError(f"project {project!r} has no trained model yet", "conflict")
        return found

    @router.get(api + "/evaluation/cell", response_model=list[CellImage], responses=errors(404, 409, 422))
    @answer_errors
    def evaluation_cell(project: str, actual: str = Query(max_length=256), predicted: str = Query(max_length=256)):
        return studio.open(project).cell(actual, predicted)

    @router.post(api + "/predict", response_model=list[PredictionBody], responses=errors(404, 409, 413, 415, 422))
    @answer_errors
    async def predict(project: str, files: list[UploadFile], top_k: int = Query(5, ge=1, le=1000)):
        if len(files) > MAX_FILES:
            return error(413, f"at most {MAX_FILES} files per request")
        clf = await run_in_threadpool(studio.classifier, project)
        try:
            arrays = await decode_uploads(clf, files, max_upload_bytes=max_upload_bytes,
                                          max_pixels=studio.limits.max_pixels)  # fmt: skip
        except UploadRefused as refused:
            return error(refused.status, refused.message, refused.filename)
        results = await run_in_threadpool(clf.predict_arrays, np.stack(arrays), top_k)
        for f, r in zip(files, results, strict=True):
            r.filename = f.filename
        return [r.to_dict() for r in results]

    @router.get(api + "/export/{fmt}", response_class=FileResponse,
                responses={200: {"content": {"application/octet-stream": {}, "text/plain": {}}},
                           **errors(404, 409, 422, 501, 507)})  # fmt: skip
    @answer_errors
    def export(project: str, fmt: str):
        p = studio.open(project)
        path = p.export(fmt)
        names = {"safetensors": f"{p.name}.safetensors", "onnx": f"{p.name}.onnx", "labels": f"{p.name}-labels.txt"}
        media = "text/plain; charset=utf-8" if fmt == "labels" else "application/octet-stream"
        return FileResponse(path, media_type=media, filename=names[fmt])

    return router


async def _event_stream(studio: Studio, project: str, after: int):
    """The project's job events after `after`, as server-sent events, until the job has ended. A client
    that goes away ends it too: Starlette cancels a streaming response on disconnect (and a send to a
    closed connection fails; the heartbeat makes sure one comes)."""
    yield "retry: 2000\n\n"
    last_sent = time.monotonic()
    while True:
        for event in studio.queue.events(project, after):
            after = event["id"]
            yield f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n"
            last_sent = time.monotonic()
        job = studio.queue.job(project)
        if job is None or not job.active:
            if not studio.queue.events(project, after):
                return
            continue
        if time.monotonic() - last_sent > HEARTBEAT_S:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_S)
