"""Check `cifar_cnn.corruptions` against Hendrycks' own `make_cifar_c.py`, feeding both the same
random draws: the reference's global `np.random` calls are recorded, and replayed to ours.

Needs what the reference imports, in a separate environment (not the project's dependencies):

    python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install numpy scipy scikit-image \\
        opencv-python-headless pillow Wand              # and ImageMagick: apt-get install libmagickwand-dev
    git show HEAD:ImageNet-C/create_c/make_cifar_c.py > /tmp/make_cifar_c.py   # in hendrycks/robustness
    /tmp/refvenv/bin/python bench/corruptions_reference.py /tmp/make_cifar_c.py IMAGES.npy

IMAGES.npy: uint8 (N, 32, 32, 3), e.g. the first 40 CIFAR-10 test images. Prints, per corruption,
the largest difference (in 0-255 levels) and the share of values that differ. Frost is not
compared (ours is synthesized); impulse noise is compared through scikit-image's `random_noise`
with the same generator.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def load_reference(path: str) -> types.ModuleType:
    """The reference's corruption functions, adapted to today's libraries (skimage's multichannel
    became channel_axis, np.float_ and np.fromstring are gone); its dataset loop is dropped."""
    text = Path(path).read_text().split("# /////////////// End Distortions")[0]
    for old, new in (("multichannel=True", "channel_axis=-1"), ("np.float_", "np.float64"),
                     ("np.fromstring", "np.frombuffer"), ("scipy.ndimage.interpolation", "scipy.ndimage"),
                     ("import torch", "# import torch")):  # fmt: skip
        text = text.replace(old, new)
    module = types.ModuleType("make_cifar_c")
    exec(compile(text, path, "exec"), module.__dict__)
    return module


def load_ours() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("corruptions", ROOT / "src" / "cifar_cnn" / "corruptions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Replay:
    """A stand-in Generator that hands out the recorded draws, in order, in the shape asked for."""

    def __init__(self, draws: list[float]):
        self.draws = draws

    def _take(self, size) -> np.ndarray:
        shape = () if size is None else tuple(np.atleast_1d(size))
        k = int(np.prod(shape))
        values = np.array(self.draws[:k])
        del self.draws[:k]
        return values.reshape(shape)

    def normal(self, loc=0.0, scale=1.0, size=None):
        return self._take(size)

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._take(size)

    def integers(self, low, high=None, size=None):
        return self._take(size).astype(int)

    def poisson(self, lam):
        return self._take(np.shape(lam))


def main() -> None:
    reference, ours = load_reference(sys.argv[1]), load_ours()
    images = np.load(sys.argv[2])
    draws: list[float] = []
    rng = np.random.default_rng(0)

    def recorded(fn):
        def draw(*args, **kwargs):
            value = fn(*args, **kwargs)
            draws.extend(np.ravel(value).tolist())
            return value

        return draw

    np.random.normal, np.random.uniform = recorded(rng.normal), recorded(rng.uniform)
    np.random.poisson = recorded(rng.poisson)
    np.random.randint = recorded(lambda low, high=None, size=None: rng.integers(low, high, size=size))
    for name in ours.CORRUPTIONS:
        if name in ("frost", "impulse_noise"):
            continue
        worst, differ = 0, 0.0
        for severity in range(1, 6):
            for image in images:
                draws.clear()
                expected = np.uint8(getattr(reference, name)(Image.fromarray(image), severity))
                got = ours.CORRUPTIONS[name](image[None], severity, Replay(draws))[0]
                assert not draws, f"{name}: {len(draws)} draws left over"
                diff = np.abs(expected.astype(int) - got)
                worst, differ = max(worst, int(diff.max())), differ + (diff > 0).mean() / (5 * len(images))
        print(f"{name:18s} largest difference {worst}, values differing {differ:.2%}")
    import skimage

    worst = 0
    for severity in range(1, 6):
        amount = (0.01, 0.02, 0.03, 0.05, 0.07)[severity - 1]
        for i, image in enumerate(images):
            noisy = skimage.util.random_noise(image / 255, mode="s&p", amount=amount, rng=np.random.default_rng(i))
            expected = np.uint8(np.clip(noisy, 0, 1) * 255)
            got = ours.impulse_noise(image[None], severity, np.random.default_rng(i))[0]
            worst = max(worst, int(np.abs(expected.astype(int) - got).max()))
    print(f"{'impulse_noise':18s} largest difference {worst} (scikit-image's random_noise, same generator)")


if __name__ == "__main__":
    main()
