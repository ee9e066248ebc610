"""Errors a user can fix. The CLI prints their message on one line and exits non-zero."""


class CifarCnnError(Exception):
    """Base class for errors caused by input the user can fix."""


class DataError(CifarCnnError):
    """CIFAR-10 or an image folder is missing, corrupt or malformed."""


class ImageError(CifarCnnError):
    """A user image cannot be read (not an image, truncated, too large...)."""


class CheckpointError(CifarCnnError):
    """A model file is missing, corrupt or incompatible."""
