"""Errors a user can fix. The CLI prints their message on one line and exits non-zero."""


class CifarCnnError(Exception):
    """Base class for errors caused by input the user can fix."""


class DataError(CifarCnnError):
    """CIFAR-10 or an image folder is missing, corrupt or malformed."""


class ImageError(CifarCnnError):
    """A user image cannot be read. `kind` says why, for HTTP status codes:
    "unsupported" (not an image), "too_large" (bytes or pixels), "damaged", "empty", "missing"."""

    def __init__(self, message: str, kind: str = "damaged"):
        super().__init__(message)
        self.kind = kind


class CheckpointError(CifarCnnError):
    """A model file is missing, corrupt or incompatible."""
