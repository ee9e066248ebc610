"""Uploaded image files -> model-size arrays: the one boundary every multipart route reads through.

Each file is read up to its byte limit, then decoded and resized off the event loop by the
model's own `load_image` (the path `predict` takes). A refusal names the file and carries the
status to answer with: 413 over the byte or pixel limit, 415 not an image, 422 empty or damaged.
"""

from __future__ import annotations

import numpy as np
from fastapi import UploadFile
from fastapi.concurrency import run_in_threadpool

from cifar_cnn.errors import ImageError

IMAGE_STATUS = {"unsupported": 415, "too_large": 413}  # any other ImageError kind (empty, damaged...): 422


class UploadRefused(Exception):
    def __init__(self, status: int, message: str, filename: str | None = None):
        super().__init__(message)
        self.status, self.message, self.filename = status, message, filename


async def read_upload(f: UploadFile, max_upload_bytes: int) -> bytes:
    data = await f.read(max_upload_bytes + 1)
    if len(data) > max_upload_bytes:
        raise UploadRefused(413, f"{f.filename}: over the {max_upload_bytes // 2**20} MiB upload limit", f.filename)
    return data


async def decode_uploads(clf, files: list[UploadFile], *, max_upload_bytes: int, max_pixels: int) -> list[np.ndarray]:
    """uint8 (S, S, 3) arrays at `clf`'s input size, one per file, in order. Raises UploadRefused."""
    arrays = []
    for f in files:
        data = await read_upload(f, max_upload_bytes)
        try:
            arrays.append(await run_in_threadpool(clf.load_image, data, name=f.filename, max_pixels=max_pixels))
        except ImageError as exc:
            raise UploadRefused(IMAGE_STATUS.get(exc.kind, 422), str(exc), f.filename) from exc
    return arrays
