"""Offline "none of these" sets: images unrelated to what a model was trained on, to measure how
well a novelty score separates them from its test images (AUROC), and what it flags.

Three sets, kept apart because they fail differently:

* natural: photos, whole and as random crops at several scales (a sixth to three quarters of the
  shorter side, anywhere in the photo), from every source found on the machine:
  - matplotlib's sample data: Grace Hopper's portrait (always there: matplotlib is a dependency);
  - scikit-image's bundled `skimage.data` files (read from disk, nothing downloaded): astronaut,
    camera man, coffee, coins, rocket, motorcycle, moon, Hubble deep field, retina, tissue,
    cells, bricks, grass, gravel, a clock, handwriting, a page, microaneurysms; plus its
    `lfw_subset`: 200 photos of 25x25 pixels (100 faces, 100 other patches). `chelsea` (a cat) and
    `horse` are left out: they are CIFAR-10 classes;
  - scikit-learn's `load_sample_images` files (a temple, a flower);
  - Debian's `mate-backgrounds` nature photos (flowers, grass, dunes, a ladybird, rain drops...).
* graphics: drawn or rendered images: matplotlib's logo, gift-box render, terrain and MRI scans
  under colormaps; scikit-image's logo, colour wheel and phantom; Debian's `gnome-backgrounds`,
  `ukui-wallpapers` and `mate-backgrounds` abstract wallpapers; whole and cropped.
* synthetic: drawn at the input size: uniform noise, Gaussian noise, flat colours, gradients,
  stripes, checkerboards, blobs (one kind after the other).

None is a CIFAR-10 class; for a model trained on your own folder they are still "unrelated images"
(unless your classes are portraits or flowers). Optional sources are used where installed
(`pip install 'cifar-cnn[bench]'`; `apt-get install mate-backgrounds gnome-backgrounds
ukui-wallpapers`), so the sets' sizes depend on the machine: `composition()` says what was found.
With everything installed: about 700 natural, 240 graphics and 700 synthetic images (bench/ood.py
records the exact counts). Natural images are resized as predictions are (`images.load_image`:
shorter side to the model's input size S, center crop); synthetic ones are drawn at S x S.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from cifar_cnn.images import load_image

DEBIAN_BACKGROUNDS = Path("/usr/share/backgrounds")
_MAX_SIDE = 768  # full images are shrunk to this shorter side before cropping (crops stay >= 4x S)
CROP_SCALES = (1 / 6, 1 / 3, 1 / 2, 3 / 4)  # crop side as a fraction of the shorter side
SKIMAGE_PHOTOS = ("astronaut.png", "camera.png", "coffee.png", "coins.png", "rocket.jpg", "motorcycle_left.png",
                  "moon.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "cell.png", "brick.png",
                  "grass.png", "gravel.png", "clock_motion.png", "text.png", "page.png", "microaneurysms.png")  # fmt: skip
SKIMAGE_GRAPHICS = ("logo.png", "color.png", "phantom.png")
SYNTHETIC_KINDS = ("uniform noise", "gaussian noise", "flat colour", "gradient", "stripes", "checkerboard", "blob")


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (None if not installed)."""
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def _sample_data_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data"


def _colormapped(a: np.ndarray, cmap: str) -> np.ndarray:
    import matplotlib

    a = a.astype(np.float64)
    a = (a - np.nanmin(a)) / max(np.nanmax(a) - np.nanmin(a), 1e-9)
    return (matplotlib.colormaps[cmap](np.nan_to_num(a))[..., :3] * 255).astype(np.uint8)


def _read(path: Path) -> np.ndarray:
    """RGB uint8, transparent parts over white, shrunk to `_MAX_SIDE` on its shorter side."""
    with Image.open(path) as im:
        im.draft("RGB", (_MAX_SIDE, _MAX_SIDE))  # JPEG: decode at reduced size
        if im.mode in ("RGBA", "LA", "P", "PA"):
            im = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im)
        im = im.convert("RGB")
        scale = _MAX_SIDE / min(im.size)
        if scale < 1:
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
        return np.asarray(im).copy()


def _files(folder: Path | None, names) -> list[Path]:
    return [folder / n for n in names if folder is not None and (folder / n).is_file()]


@functools.lru_cache(maxsize=1)
def _natural_sources() -> tuple[tuple[str, tuple[np.ndarray, ...], bool], ...]:
    """(source, images, crop them?) for every natural-photo source found."""
    out = []
    mpl = _files(_sample_data_dir(), ["grace_hopper.jpg"])
    out.append(("matplotlib sample_data", tuple(_read(p) for p in mpl), True))
    skimage = _package_dir("skimage")
    sk = skimage / "data" if skimage else None
    if photos := _files(sk, SKIMAGE_PHOTOS):
        out.append(("scikit-image data", tuple(_read(p) for p in photos), True))
    if lfw := _files(sk, ["lfw_subset.npy"]):
        faces = (np.load(lfw[0]) * 255).round().astype(np.uint8)  # (200, 25, 25) grey in [0, 1]
        out.append(("scikit-image lfw_subset", tuple(np.repeat(f[..., None], 3, -1) for f in faces), False))
    sklearn = _package_dir("sklearn")
    if photos := _files(sklearn / "datasets" / "images" if sklearn else None, ["china.jpg", "flower.jpg"]):
        out.append(("scikit-learn sample images", tuple(_read(p) for p in photos), True))
    if photos := sorted((DEBIAN_BACKGROUNDS / "mate" / "nature").glob("*.jpg")):
        out.append(("Debian mate-backgrounds nature", tuple(_read(p) for p in photos), True))
    return tuple((name, images, crop) for name, images, crop in out if images)


@functools.lru_cache(maxsize=1)
def _graphics_sources() -> tuple[tuple[str, tuple[np.ndarray, ...], bool], ...]:
    d = _sample_data_dir()
    mpl = [_read(p) for p in _files(d, ["Minduka_Present_Blue_Pack.png", "logo2.png"])]
    for name, key, cmap in (
        ("jacksboro_fault_dem.npz", "elevation", "terrain"),
        ("topobathy.npz", "topo", "gist_earth"),
    ):
        if (d / name).is_file():
            with np.load(d / name) as z:
                mpl.append(_colormapped(z[key], cmap))
    if (d / "s1045.ima.gz").is_file():
        with gzip.open(d / "s1045.ima.gz") as f:
            mpl.append(_colormapped(np.frombuffer(f.read(), np.uint16).reshape(256, 256), "gray"))
    out = [("matplotlib sample_data", tuple(mpl))]
    skimage = _package_dir("skimage")
    out.append(("scikit-image data", tuple(_read(p) for p in _files(skimage / "data" if skimage else None,
                                                                       SKIMAGE_GRAPHICS))))  # fmt: skip
    walls = [
        p
        for p in sorted(DEBIAN_BACKGROUNDS.glob("**/*"))
        if p.suffix.lower() in (".jpg", ".png", ".webp")
        and "nature" not in p.parts
        and not p.stem.startswith("Elephants_")
    ]  # fmt: skip (one Elephants size)
    wallpapers = [a for a in (_read(p) for p in walls) if a.std() > 2]  # not the blank (fully transparent) ones
    out.append(("Debian wallpapers (gnome, mate, ukui)", tuple(wallpapers)))
    return tuple((name, images, True) for name, images in out if images)


def natural_images() -> list[np.ndarray]:
    """Full-size RGB uint8 photos from every source found (see the module docstring)."""
    return [a for _, images, _ in _natural_sources() for a in images]


def _with_crops(sources, crops_per_image: int, rng: np.random.Generator, size: int) -> np.ndarray:
    out = []
    for _, images, crop in sources:
        for full in images:
            out.append(load_image(full, size))
            h, w = full.shape[:2]
            for i in range(crops_per_image if crop else 0):
                side = max(int(CROP_SCALES[i % len(CROP_SCALES)] * min(h, w)), 8)
                y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
                out.append(load_image(np.ascontiguousarray(full[y : y + side, x : x + side]), size))
    return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def synthetic_images(n: int, rng: np.random.Generator, size: int = 32) -> list[np.ndarray]:
    """n uint8 (size, size, 3) images, `SYNTHETIC_KINDS[i % 7]` for image i: uniform and Gaussian
    noise, flat colours, gradients, stripes, checkerboards, blobs."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
    shape = (size, size, 3)
    makers = [
        lambda: rng.integers(0, 256, shape, dtype=np.uint8),  # uniform noise
        lambda: np.clip(rng.normal(128, 40, shape), 0, 255).astype(np.uint8),  # gaussian noise
        lambda: np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), shape).copy(),  # flat color
        lambda: (np.stack([xx, yy, 1 - xx], -1) * rng.uniform(0.3, 1, 3) * 255).astype(np.uint8),  # gradient
        lambda: ((np.sin(xx * rng.uniform(5, 40) + yy * rng.uniform(0, 20))[..., None] > 0)
                 * rng.integers(0, 256, 3)).astype(np.uint8),  # stripes
        lambda: ((((xx * rng.integers(2, 8)).astype(int) + (yy * rng.integers(2, 8)).astype(int)) % 2)[..., None]
                 * rng.integers(0, 256, 3)).astype(np.uint8),  # checkerboard
        lambda: (np.exp(-((xx - rng.uniform()) ** 2 + (yy - rng.uniform()) ** 2) * rng.uniform(5, 30))[..., None]
                 * rng.integers(0, 256, 3)).astype(np.uint8),  # blob
    ]  # fmt: skip
    return [makers[i % len(makers)]() for i in range(n)]


def out_of_distribution_sets(size: int = 32, crops_per_image: int = 12, n_synthetic: int = 700,
                             seed: int = 0) -> dict[str, np.ndarray]:  # fmt: skip
    """{"natural", "graphics", "synthetic"} -> uint8 (N, size, size, 3). `size`: the model's
    input size (`clf.input_size`). The same seed gives the same images."""
    rng = np.random.default_rng(seed)
    synthetic = synthetic_images(n_synthetic, rng, size)
    return {
        "natural": _with_crops(_natural_sources(), crops_per_image, rng, size),
        "graphics": _with_crops(_graphics_sources(), max(crops_per_image // 2, 1), rng, size),
        "synthetic": np.stack(synthetic) if synthetic else np.zeros((0, size, size, 3), np.uint8),
    }


def composition(crops_per_image: int = 12, n_synthetic: int = 700) -> dict[str, dict[str, int]]:
    """Set -> source -> number of images (crops included), as `out_of_distribution_sets` makes them."""

    def count(sources, crops):
        return {name: len(images) * (1 + (crops if crop else 0)) for name, images, crop in sources}

    per_kind = {k: len(range(i, n_synthetic, len(SYNTHETIC_KINDS))) for i, k in enumerate(SYNTHETIC_KINDS)}
    return {"natural": count(_natural_sources(), crops_per_image),
            "graphics": count(_graphics_sources(), max(crops_per_image // 2, 1)), "synthetic": per_kind}  # fmt: skip


def out_of_distribution_set(n_synthetic: int = 700, crops_per_image: int = 12, seed: int = 0,
                            size: int = 32) -> np.ndarray:  # fmt: skip
    """uint8 (N, size, size, 3): the three sets of `out_of_distribution_sets` in one array."""
    sets = out_of_distribution_sets(size, crops_per_image, n_synthetic, seed)
    return np.concatenate(list(sets.values()))


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Probability that an in-distribution image scores higher than an outlier (ties count half)."""
    scores = np.concatenate([in_scores, out_scores])
    _, index, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[index]  # 1-based ranks, ties share their mean
    n_in, n_out = len(in_scores), len(out_scores)
    return float((ranks[:n_in].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))
