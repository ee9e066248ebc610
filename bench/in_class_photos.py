"""Real photos of the ten CIFAR-10 classes, from ImageNet's one-photo-per-class sample set.

    .venv/bin/python bench/in_class_photos.py SAMPLES OUT

SAMPLES: a folder holding one ImageNet photo per class named `<wnid>_<name>.JPEG`, as in the
public repository EliSchwartz/imagenet-sample-images (1,000 photos; its files are not part of
this project and are never committed). OUT gets the labelled-folder layout every command reads,
`OUT/<cifar class>/<wnid>_<name>.JPEG`, for `cifar-cnn evaluate MODEL --images OUT` (how well the
model does on real photos of its own classes) and `bench/ood_stages.py MODEL --in-class OUT` (how
often the "none of these" flag wrongly fires on them).

Which ImageNet classes count as which CIFAR-10 class follows CIFAR-10's own definitions
("automobile" is sedans, SUVs and the like, "truck" only big trucks, pickups in neither) and
ImageNet's WordNet tree (every dog breed is a dog, every bird a bird). ImageNet-1k has no deer:
three antelopes (hartebeest, impala, gazelle) stand in, marked as such in the result. 216 photos,
118 of them dogs; results are given per class and class-balanced.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# ImageNet-1k class indices (the sorted wnid order of the sample set) for each CIFAR-10 class.
CLASSES: dict[str, list[int]] = {
    "airplane": [404, 895, 908],  # airliner, warplane, wing
    "automobile": [436, 468, 511, 609, 627, 656, 661, 751, 817],  # beach wagon, cab, convertible, jeep,
    # limousine, minivan, Model T, racer, sports car
    "bird": [*range(7, 25), *range(80, 101), *range(127, 147)],  # cock .. great grey owl, grouse ..
    # black swan, white stork .. albatross
    "cat": [*range(281, 286)],  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "deer": [351, 352, 353],  # stand-ins: hartebeest, impala, gazelle (no deer in ImageNet-1k)
    "dog": [*range(151, 269)],  # the 118 domestic breeds, Chihuahua .. Mexican hairless
    "frog": [30, 31, 32],  # bullfrog, tree frog, tailed frog
    "horse": [339],  # sorrel
    "ship": [403, 484, 510, 554, 625, 628, 724, 780, 871, 914],  # aircraft carrier, catamaran, container
    # ship, fireboat, lifeboat, liner, pirate, schooner, trimaran, yawl
    "truck": [555, 569, 675, 864, 867],  # fire engine, garbage truck, moving van, tow truck, trailer truck
}
STAND_INS = {"deer"}


def build(samples: Path, out: Path) -> dict[str, int]:
    files = sorted(p for p in samples.iterdir() if p.name.startswith("n") and p.suffix.upper() == ".JPEG")
    if len(files) != 1000:
        raise SystemExit(f"error: {samples} should hold the 1,000 ImageNet sample photos (n<wnid>_<name>.JPEG); "
                         f"found {len(files)}")  # fmt: skip
    counts = {}
    for name, indices in CLASSES.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in indices:
            shutil.copyfile(files[i], out / name / files[i].name)
        counts[name] = len(indices)
    return counts


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.split("\n\n")[1])
    counts = build(Path(sys.argv[1]), Path(sys.argv[2]))
    print(", ".join(f"{k} {v}" for k, v in counts.items()), f"= {sum(counts.values())} photos in {sys.argv[2]}")
