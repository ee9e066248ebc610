"""Which CAM method and layer point at the object: the measurement behind explain.py's choice.

    .venv/bin/python bench/explain_layers.py --model fast --images 60

CIFAR-10 test pictures the model gets right with more than 90% are pasted (32 px) at a random
place into a 64 px flat or noisy background; for each method and layer, the heatmap of the true
class is scored by whether its peak falls on the pasted picture and by the ratio of its mean heat
inside to outside (median over the pictures). Prints a markdown table.
"""

from __future__ import annotations

import argparse
from unittest import mock

import numpy as np

CANDIDATES = [("GradCAM", "layers.3"), ("GradCAM", "layers.2"), ("GradCAMpp", "layers.2"), ("XGradCAM", "layers.2"),
              ("LayerCAM", "layers.1"), ("LayerCAM", "layers.2"), ("LayerCAM", "layers.3")]  # fmt: skip


def planted(picture: np.ndarray, rng: np.random.Generator, background: str) -> tuple[np.ndarray, int, int]:
    if background == "flat":
        canvas = np.full((64, 64, 3), rng.integers(0, 256, 3), np.uint8)
    else:
        canvas = (rng.integers(0, 256, (64, 64, 3)) // 4 + 96).astype(np.uint8)
    y, x = (int(v) for v in rng.integers(0, 33, 2))
    canvas[y : y + 32, x : x + 32] = picture
    return canvas, y, x


def main() -> None:
    import torchcam.methods

    import cifar_cnn
    from cifar_cnn import explain
    from cifar_cnn.data import load_cifar10

    p = argparse.ArgumentParser()
    p.add_argument("--model", default="fast")
    p.add_argument("--images", type=int, default=60)
    args = p.parse_args()
    clf = cifar_cnn.load(args.model)
    _, (x_test, y_test) = load_cifar10(verbose=False)
    y_test = y_test.ravel()
    probs = clf.predict_proba(x_test[:1000])
    sure = [i for i in range(1000) if probs[i].argmax() == y_test[i] and probs[i].max() > 0.9][: args.images]
    print(f"| method | layer | peak on the picture: flat / noise (of {len(sure)}) | inside / outside (median) |")
    print("|---|---|---|---|")
    for method, layer in CANDIDATES:
        cells = []
        for background in ("flat", "noise"):
            rng = np.random.default_rng(0)
            ratios, peaks = [], 0
            for i in sure:
                image, y, x = planted(x_test[i], rng, background)
                with mock.patch.object(torchcam.methods, "LayerCAM", getattr(torchcam.methods, method)):
                    heat = explain.class_heatmap(clf, clf.load_image(image), int(y_test[i]), layer)
                inside = np.zeros(heat.shape, bool)
                inside[y // 2 : y // 2 + 16, x // 2 : x // 2 + 16] = True  # the model sees the 64 px canvas at 32
                ratios.append(heat[inside].mean() / max(heat[~inside].mean(), 1e-6))
                peaks += bool(inside.flat[heat.argmax()])
            cells.append((peaks, float(np.median(ratios))))
        (pf, rf), (pn, rn) = cells
        print(f"| {method} | {layer} | {pf} / {pn} | {rf:.1f} / {rn:.1f} |", flush=True)


if __name__ == "__main__":
    main()
