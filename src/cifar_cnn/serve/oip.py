"""The Open Inference Protocol (KServe v2, as spoken by Triton, KServe, Seldon and their clients)
over the app's `Classifier` and `MicroBatcher`, so /v1 and /v2 requests share forward passes.

GET  /v2                                         server metadata {name, version, extensions}
GET  /v2/health/live   /v2/health/ready          {"live": true} / {"ready": true}
GET  /v2/models/{model_name}[/versions/1]        model metadata: inputs, outputs, parameters.classes
GET  /v2/models/{model_name}[/versions/1]/ready  {"name", "ready": true}
POST /v2/models/{model_name}[/versions/1]/infer  one input, either
         images       UINT8 [N, S, S, 3]  RGB pixels already at the model's input size S, or
         image_files  BYTES [N]           encoded image files, decoded as `predict` decodes them
                                          (in JSON each element is a base64 string)
     -> probabilities FP32 [N, classes] (calibrated) and labels BYTES [N] (top-1)

`model_name` is the model's registry name (`clf.name`, as in /v1/models) or the alias "cifar-cnn".
Extensions: binary tensor data both ways (the `Inference-Header-Content-Length` header, what
tritonclient sends by default), classification (an output's `classification: k` parameter turns
`probabilities` into BYTES [N, k] "score:index:label"), and gzip/deflate request bodies.

Every error is {"error": message} with a 4xx status. The handlers take the raw `Request` and
validate it here (path parameters are declared to OpenAPI by hand), so FastAPI's own 422
validation response never answers a /v2 request; unknown /v2 paths answer 404 in the same shape.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import struct
import zlib
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from cifar_cnn import __version__
from cifar_cnn.errors import ImageError
from cifar_cnn.images import MAX_PIXELS
from cifar_cnn.predict import Classifier
from cifar_cnn.serve.batcher import MicroBatcher, stack_rows
from cifar_cnn.serve.schemas import ErrorBody

MAX_IMAGES = 64  # per request: one micro-batch
MAX_BODY_BYTES = 161 * 2**20  # as the app's BodyLimit; here it also bounds a gzip/deflate body once inflated
MAX_UPLOAD_BYTES = 10 * 2**20  # per encoded image file
ALIAS = "cifar-cnn"  # a model name that does not change when the architecture does
VERSION = "1"
PIXELS, FILES = "images", "image_files"  # the two input kinds
PROBS, LABELS = "probabilities", "labels"
HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data", "classification"]
IMAGE_STATUS = {"unsupported": 415, "too_large": 413}  # any other ImageError kind: 400 (the protocol's "bad input")
ERRORS = {
    400: "the request breaks the protocol, or a tensor's datatype, shape or data is not what the model takes",
    404: "no such model or version",
    413: "too many images, or a file, an image's pixels or the body too large",
    415: "a file is not an image the server reads, or the body's Content-Encoding is not supported",
}


class ProtocolError(Exception):
    """A request the protocol refuses: answered as {"error": message} with `status`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers


# ---- the protocol's JSON shapes ------------------------------------------------------------------


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]  # -1: any size (the batch dimension)


class ModelParameters(BaseModel):
    classes: list[str]  # index i of `probabilities` is classes[i]
    input_size: int
    max_images: int
    bytes_encoding: str = "base64"  # BYTES elements in JSON; binary tensor data is sent as is
    inputs: str = f"send exactly one input: {PIXELS!r} or {FILES!r}"


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: ModelParameters


_STRICT = ConfigDict(strict=True)  # a JSON 1.0 is not a shape, "true" is not a flag
_OPEN = ConfigDict(strict=True, extra="allow")  # other parameters are accepted and ignored


class RequestParameters(BaseModel):
    model_config = _OPEN
    binary_data_output: StrictBool = False  # every output as binary tensor data unless it says otherwise


class InputParameters(BaseModel):
    model_config = _OPEN
    binary_data_size: Annotated[int, Field(ge=0)] | None = None  # its data follows the JSON header


class RequestInput(BaseModel):
    model_config = _STRICT
    name: str
    shape: list[Annotated[int, Field(ge=0)]] = Field(max_length=8)
    datatype: str
    parameters: InputParameters | None = None
    data: list[Any] | None = None  # row-major, flat or nested


class OutputParameters(BaseModel):
    model_config = _OPEN
    binary_data: StrictBool | None = None
    classification: Annotated[int, Field(ge=0)] | None = None  # top-k as "score:index:label"; 0: off


class RequestOutput(BaseModel):
    model_config = _STRICT
    name: str
    parameters: OutputParameters | None = None


class InferenceRequest(BaseModel):
    model_config = _STRICT
    id: str | None = None
    parameters: RequestParameters | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None  # None: all outputs


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None  # {"binary_data_size": n} when the data follows the JSON
    data: list[float] | list[str] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


# ---- routes -------------------------------------------------------------------------------------


class _ProtocolRoute(APIRoute):
    """Answers a ProtocolError raised anywhere in a handler in the protocol's error shape."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request):
            try:
                return await handler(request)
            except ProtocolError as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)

        return route


def _errors(*statuses: int) -> dict:
    return {status: {"model": ErrorBody, "description": ERRORS[status]} for status in statuses}


def _path(**examples: str) -> dict:
    """OpenAPI for path parameters the handler reads from the request itself: name=example."""
    return {"parameters": [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}, "example": e}
                           for n, e in examples.items()]}  # fmt: skip


def _inline(schema: dict) -> dict:
    """A Pydantic JSON schema with its $defs substituted in place, to embed in an OpenAPI operation."""
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        return [resolve(v) for v in node] if isinstance(node, list) else node

    return resolve(schema)


def _infer_openapi(**path_examples: str) -> dict:
    binary = {"type": "string", "format": "binary",
              "description": f"binary tensor data: the JSON request of `{HEADER_LENGTH}` bytes, then each input's data"}  # fmt: skip
    return {
        **_path(**path_examples),
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _inline(InferenceRequest.model_json_schema()), "example": _EXAMPLE},
            "application/octet-stream": {"schema": binary},
        }},
    }  # fmt: skip


# A request that works as is from /docs: one 2x2 PNG, base64-encoded as BYTES are in JSON.
_EXAMPLE = {"inputs": [{"name": FILES, "shape": [1], "datatype": "BYTES", "data": [
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP4z8DA8J+BkYHh////DAAe9gT9Ce00PgAAAABJRU5ErkJggg=="]}]}  # fmt: skip


INFER_200 = {
    "model": InferenceResponse,
    "description": f"The outputs; with binary tensor data, the JSON response of `{HEADER_LENGTH}` bytes, then the data",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


def v2_router(
    clf: Classifier,
    batcher: MicroBatcher,
    *,
    max_images: int = MAX_IMAGES,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> APIRouter:
    """The /v2 routes for `clf`, with forward passes through `batcher`. Limits: images per request,
    bytes per encoded file, pixels per decoded file, bytes per request body (after decompression)."""
    router = APIRouter(route_class=_ProtocolRoute, tags=["Open Inference Protocol (v2)"])
    metadata = model_metadata(clf, max_images)
    names = list(dict.fromkeys([clf.name, ALIAS]))

    def check_model(request: Request) -> None:
        name, version = request.path_params["model_name"], request.path_params.get("model_version", VERSION)
        if name not in names:
            raise ProtocolError(404, f"unknown model {name!r}: this server serves {' or '.join(map(repr, names))}")
        if version != VERSION:
            raise ProtocolError(404, f"model {name!r} has no version {version!r}; its only version is {VERSION!r}")

    @router.get("/v2", response_model=ServerMetadata)
    async def server_metadata():
        return ServerMetadata(name="cifar-cnn", version=__version__, extensions=EXTENSIONS)

    @router.get("/v2/health/live", response_model=ServerLive)
    async def server_live():
        return ServerLive(live=True)

    @router.get("/v2/health/ready", response_model=ServerReady)
    async def server_ready():  # the model is loaded before the app exists
        return ServerReady(ready=True)

    async def get_model_metadata(request: Request):
        check_model(request)
        return metadata

    async def model_ready(request: Request):
        check_model(request)
        return ModelReady(name=clf.name, ready=True)

    async def infer(request: Request):
        check_model(request)
        body = await read_body(request, max_body_bytes)
        req, inp, raw = parse_request(body, request.headers.get(HEADER_LENGTH))
        if inp.name == PIXELS:
            images = pixels(inp, raw, clf.input_size, max_images)
        else:
            files = encoded_files(inp, raw, max_images, max_upload_bytes)
            images = await run_in_threadpool(decode, clf, files, max_upload_bytes, max_pixels)
        probs, _ = stack_rows(await asyncio.gather(*(batcher.predict(image) for image in images)))
        return respond(req, probs, clf)

    for base, params in (("/v2/models/{model_name}", {"model_name": clf.name}),
                         ("/v2/models/{model_name}/versions/{model_version}",
                          {"model_name": clf.name, "model_version": VERSION})):  # fmt: skip
        router.add_api_route(base, get_model_metadata, methods=["GET"], response_model=ModelMetadata,
                             responses=_errors(404), openapi_extra=_path(**params))  # fmt: skip
        router.add_api_route(f"{base}/ready", model_ready, methods=["GET"], response_model=ModelReady,
                             responses=_errors(404), openapi_extra=_path(**params))  # fmt: skip
        router.add_api_route(f"{base}/infer", infer, methods=["POST"], response_model=None,
                             responses={200: INFER_200, **_errors(400, 404, 413, 415)},
                             openapi_extra=_infer_openapi(**params))  # fmt: skip

    # Any other /v2 path or method: 404, or 405 with Allow, in the protocol's error shape. Added last,
    # so it only sees what no route above matched.
    known = [r for r in router.routes if isinstance(r, APIRoute)]
    every = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    @router.api_route("/v2/{rest:path}", methods=every, include_in_schema=False)
    async def not_found(request: Request):
        path = request.url.path
        allowed = sorted({m for r in known if r.path_regex.match(path) for m in r.methods})
        if allowed:
            raise ProtocolError(405, f"{request.method} is not allowed on {path}; use {', '.join(allowed)}",
                                headers={"Allow": ", ".join(allowed)})  # fmt: skip
        raise ProtocolError(404, f"no such route: {path}")

    return router


def model_metadata(clf: Classifier, max_images: int = MAX_IMAGES) -> ModelMetadata:
    s, n = clf.input_size, len(clf.classes)
    return ModelMetadata(
        name=clf.name, versions=[VERSION], platform="pytorch",
        inputs=[TensorMetadata(name=PIXELS, datatype="UINT8", shape=[-1, s, s, 3]),
                TensorMetadata(name=FILES, datatype="BYTES", shape=[-1])],
        outputs=[TensorMetadata(name=PROBS, datatype="FP32", shape=[-1, n]),
                 TensorMetadata(name=LABELS, datatype="BYTES", shape=[-1])],
        parameters=ModelParameters(classes=clf.classes, input_size=s, max_images=max_images),
    )  # fmt: skip


# ---- request -> uint8 images --------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused past `limit` bytes while it streams in; gzip/deflate bodies inflated."""
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > limit:
        raise ProtocolError(413, f"request body over the {limit // 2**20} MiB limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(413, f"request body over the {limit // 2**20} MiB limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise ProtocolError(415, f"Content-Encoding {encoding!r} is not supported: send gzip, deflate or identity")
    inflate = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        body = inflate.decompress(body, limit + 1)  # bounded: a small bomb cannot fill memory
    except zlib.error as exc:
        raise ProtocolError(400, f"the {encoding} request body is damaged: {exc}") from exc
    if len(body) > limit:
        raise ProtocolError(413, f"request body over the {limit // 2**20} MiB limit once inflated")
    if not inflate.eof:
        raise ProtocolError(400, f"the {encoding} request body is truncated")
    return body


def _describe(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3])


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, RequestInput, bytes | None]:
    """(request, its one input, that input's binary data or None). With binary tensor data the body
    is the JSON request (`header_length` bytes) followed by each binary input's bytes in order."""
    binary = b""
    if header_length is not None:
        n = header_length.strip()
        if not (n.isascii() and n.isdigit()) or int(n) > len(body):
            raise ProtocolError(400, f"{HEADER_LENGTH} must be the JSON header's size in bytes, at most the body's "
                                     f"{len(body)}; got {header_length!r}")  # fmt: skip
        body, binary = body[: int(n)], body[int(n) :]
    try:
        req = InferenceRequest.model_validate_json(body)
    except ValidationError as exc:
        raise ProtocolError(400, f"invalid inference request: {_describe(exc)}") from exc
    if len(req.inputs) != 1 or req.inputs[0].name not in (PIXELS, FILES):
        got = [i.name for i in req.inputs]
        raise ProtocolError(400, f"send exactly one input: {PIXELS!r} (UINT8 [N, H, W, 3] at the model's input "
                                 f"size) or {FILES!r} (BYTES [N], encoded image files); got {got}")  # fmt: skip
    inp = req.inputs[0]
    params = inp.parameters.model_extra if inp.parameters else {}
    if any(k.startswith("shared_memory") for k in params):
        raise ProtocolError(400, "shared memory is not supported: send the data in the request")
    size = inp.parameters.binary_data_size if inp.parameters else None
    if size is None:
        if binary:
            raise ProtocolError(400, f"{len(binary)} bytes follow the JSON header but no input has binary_data_size")
        if inp.data is None:
            raise ProtocolError(400, f"input {inp.name!r} has no data (nor parameters.binary_data_size)")
        return req, inp, None
    if inp.data is not None:
        raise ProtocolError(400, f"input {inp.name!r} has both data and parameters.binary_data_size")
    if size != len(binary):
        raise ProtocolError(400, f"input {inp.name!r} declares binary_data_size {size} but {len(binary)} bytes "
                                 f"follow the JSON header")  # fmt: skip
    return req, inp, binary


def _check_batch(n: int, max_images: int, name: str) -> None:
    if n < 1:
        raise ProtocolError(400, f"input {name!r} holds no images: its first dimension must be 1 or more")
    if n > max_images:
        raise ProtocolError(413, f"input {name!r} holds {n} images; at most {max_images} per request")


def pixels(inp: RequestInput, raw: bytes | None, size: int, max_images: int) -> np.ndarray:
    """uint8 (N, S, S, 3) from a UINT8 [N, S, S, 3] tensor, as JSON numbers or binary data."""
    want = [size, size, 3]
    if inp.datatype != "UINT8" or len(inp.shape) != 4 or inp.shape[1:] != want:
        raise ProtocolError(400, f"input {PIXELS!r} must be UINT8 [N, {size}, {size}, 3]; got {inp.datatype} "
                                 f"{inp.shape} (RGB at the model's input size: send images of other sizes as "
                                 f"encoded files in {FILES!r})")  # fmt: skip
    _check_batch(inp.shape[0], max_images, PIXELS)
    count = int(np.prod(inp.shape))
    if raw is not None:
        if len(raw) != count:
            raise ProtocolError(400, f"input {PIXELS!r} of shape {inp.shape} needs {count} bytes; got {len(raw)}")
        return np.frombuffer(raw, np.uint8).reshape(inp.shape)
    try:
        values = np.asarray(inp.data)
    except (ValueError, TypeError, OverflowError):  # ragged nesting
        values = np.asarray([], dtype=object)
    if values.dtype.kind not in "iu" or values.size != count or values.min() < 0 or values.max() > 255:
        raise ProtocolError(400, f"input {PIXELS!r} of shape {inp.shape} needs data of {count} integers 0..255, "
                                 f"flat or nested row-major; got {_summary(inp.data)}")  # fmt: skip
    return values.astype(np.uint8).reshape(inp.shape)


def _summary(data: list) -> str:
    flat = _flatten(data)
    kinds = sorted({type(x).__name__ for x in flat})
    return f"{len(flat)} values of type {'/'.join(kinds) or 'none'}"


def _flatten(data: list) -> list:
    out = []
    for x in data:
        if isinstance(x, list):
            out.extend(_flatten(x))
        else:
            out.append(x)
    return out


def encoded_files(inp: RequestInput, raw: bytes | None, max_images: int, max_bytes: int) -> list[bytes]:
    """The encoded files of a BYTES [N] tensor: base64 strings in JSON, or binary tensor data
    (each element a 4-byte little-endian length, then its bytes)."""
    if inp.datatype != "BYTES" or len(inp.shape) != 1:
        raise ProtocolError(400, f"input {FILES!r} must be BYTES [N], one encoded image file per element; "
                                 f"got {inp.datatype} {inp.shape}")  # fmt: skip
    n = inp.shape[0]
    _check_batch(n, max_images, FILES)
    files = _unpack_bytes(raw) if raw is not None else _unbase64(_flatten(inp.data), max_bytes)
    if len(files) != n:
        raise ProtocolError(400, f"input {FILES!r} has shape [{n}] but its data holds {len(files)} elements")
    return files


def _unpack_bytes(raw: bytes) -> list[bytes]:
    files, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ProtocolError(400, f"input {FILES!r}: binary BYTES data ends inside an element's 4-byte length")
        (n,) = struct.unpack_from("<I", raw, offset)
        if offset + 4 + n > len(raw):
            raise ProtocolError(400, f"input {FILES!r}: element {len(files)} claims {n} bytes; only "
                                     f"{len(raw) - offset - 4} follow")  # fmt: skip
        files.append(raw[offset + 4 : offset + 4 + n])
        offset += 4 + n
    return files


def _unbase64(values: list, max_bytes: int) -> list[bytes]:
    files = []
    for i, value in enumerate(values):
        where = f"{FILES}[{i}]"
        if not isinstance(value, str):
            raise ProtocolError(400, f"{where}: in JSON each element is a base64 string; got {type(value).__name__}")
        if value.startswith("data:") and "," in value:  # a data: URL, as browsers make them
            value = value.split(",", 1)[1]
        if len(value) // 4 * 3 > max_bytes:
            raise ProtocolError(413, f"{where}: over the {max_bytes // 2**20} MiB limit per file")
        try:
            files.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(400, f"{where} is not base64 ({exc}): in JSON, send each file base64-encoded, "
                                     "or send raw bytes as binary tensor data") from exc  # fmt: skip
    return files


def decode(clf: Classifier, files: list[bytes], max_bytes: int, max_pixels: int) -> list[np.ndarray]:
    """Each file -> uint8 (S, S, 3) through the classifier's own decoding (as `predict`)."""
    images = []
    for i, data in enumerate(files):
        name = f"{FILES}[{i}]"
        if len(data) > max_bytes:
            raise ProtocolError(413, f"{name}: over the {max_bytes // 2**20} MiB limit per file")
        try:
            images.append(clf.load_image(data, name=name, max_bytes=max_bytes, max_pixels=max_pixels))
        except ImageError as exc:
            raise ProtocolError(IMAGE_STATUS.get(exc.kind, 400), str(exc)) from exc
    return images


# ---- probabilities -> response ------------------------------------------------------------------


def _tensor(name: str, values: np.ndarray, binary: bool) -> tuple[dict, bytes]:
    """(the output's JSON, its binary data or b"") for FP32 or BYTES (an array of str) values."""
    out = {"name": name, "shape": list(values.shape), "datatype": "FP32" if values.dtype != object else "BYTES"}
    if not binary:
        out["data"] = values.ravel().tolist()
        return out, b""
    if values.dtype == object:
        blob = b"".join(struct.pack("<I", len(b)) + b for b in (s.encode() for s in values.ravel()))
    else:
        blob = values.astype("<f4").tobytes()
    out["parameters"] = {"binary_data_size": len(blob)}
    return out, blob


def _output_values(out: RequestOutput, probs: np.ndarray, classes: list[str]) -> np.ndarray:
    k = out.parameters.classification if out.parameters else None
    if out.name == LABELS:
        if k:
            raise ProtocolError(400, f"classification applies to output {PROBS!r}, not {LABELS!r}")
        return np.array([classes[i] for i in probs.argmax(axis=1)], dtype=object)
    if not k:
        return probs.astype(np.float32)
    top = np.argsort(-probs, axis=1)[:, :k]  # Triton's classification extension: "score:index:label"
    return np.array([[f"{row[i]:f}:{i}:{classes[i]}" for i in order] for row, order in zip(probs, top)], dtype=object)


def respond(req: InferenceRequest, probs: np.ndarray, clf: Classifier) -> Response:
    """The requested outputs (all by default) as JSON, or as JSON plus binary tensor data."""
    requested = req.outputs or [RequestOutput(name=PROBS), RequestOutput(name=LABELS)]
    names = [o.name for o in requested]
    unknown = [n for n in names if n not in (PROBS, LABELS)]
    if unknown or len(set(names)) != len(names):
        raise ProtocolError(400, f"outputs must be distinct names among {PROBS!r} (FP32 [N, classes]) and {LABELS!r} "
                                 f"(BYTES [N]); got {names}")  # fmt: skip
    binary_default = req.parameters.binary_data_output if req.parameters else False
    outputs, blobs, any_binary = [], [], False
    for out in requested:
        params = out.parameters
        if params and any(k.startswith("shared_memory") for k in params.model_extra or {}):
            raise ProtocolError(400, "shared memory is not supported: outputs come back in the response")
        binary = params.binary_data if params and params.binary_data is not None else binary_default
        any_binary |= binary
        tensor, blob = _tensor(out.name, _output_values(out, probs, clf.classes), binary)
        outputs.append(tensor)
        blobs.append(blob)
    body = {"model_name": clf.name, "model_version": VERSION, "outputs": outputs}
    if req.id is not None:
        body["id"] = req.id
    if not any_binary:
        return JSONResponse(body)
    header = json.dumps(body, separators=(",", ":")).encode()
    return Response(header + b"".join(blobs), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(header))})  # fmt: skip
