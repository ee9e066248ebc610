"""Which feature map should the `combined` novelty score read besides the penultimate features?

    .venv/bin/python bench/ood_stages.py robust        # or fast, or a model file

`novelty.py`'s `combined` sums three standardized parts: the L2-normalized penultimate features'
Mahalanobis distance (ml2), minus their log length (fn), and the Mahalanobis distance of one
stage's channel means (`STAGE_LAYERS`: the middle stage). This tries every stage of the airbench
networks (`layers.0`: the whitening conv's activation; `layers.1-3`: the conv groups), with
channel means (m), means and standard deviations (ms), or means and log standard deviations
(mlogs, style statistics), alone and in sums, fitted as `novelty.fit_detector` fits (10,000
training images, threshold at the 95th percentile of the validation split).

Besides the AUROC of CIFAR-10 test images against the out-of-distribution sets of `ood.py`, it
measures what the benchmark cannot see: how often the flag fires on photos *of the ten classes*
that went through predict's resize path. A score that reads how a picture was made (CIFAR-10's
32-pixel JPEG blur against a sharp downscaled photo) rather than what it shows separates the
sets just as well and flags every user's cat. Offline, the only such photo is scikit-image's
`chelsea` (a cat, left out of the natural set): 60 random crops (55-100% of the shorter side,
re-encoded as JPEG 90), plus the first 2,000 test images through the photo pipeline.

Writes bench/results/ood-stages-<model>-<cpu>-<timestamp>.md.
"""

from __future__ import annotations

import io
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

LAYERS = ("layers.0", "layers.1", "layers.2", "layers.3")
PHOTO = Path(__file__).resolve().parents[1] / "tests" / "data" / "chelsea.jpg"


class _Taps(nn.Module):
    """The model returning logits, penultimate features and each layer's channel means and stds."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.training = model, model.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cap: dict[str, torch.Tensor] = {}
        hooks = [self.model.get_submodule(n).register_forward_hook(lambda _m, _i, o, n=n: cap.__setitem__(n, o))
                 for n in LAYERS]  # fmt: skip
        hooks.append(self.model.head.register_forward_hook(lambda _m, i, _o: cap.__setitem__("pen", i[0])))
        try:
            logits = self.model(x)
        finally:
            for h in hooks:
                h.remove()
        parts = [logits, cap["pen"].flatten(1)]
        for n in LAYERS:
            parts += [cap[n].float().mean((2, 3)), cap[n].float().std((2, 3))]
        return torch.cat(parts, 1)


def chelsea_crops(clf, n: int = 60) -> np.ndarray:
    im = Image.open(PHOTO).convert("RGB")
    rng, (w, h), out = np.random.default_rng(0), im.size, []
    for _ in range(n):
        s = int(min(w, h) * rng.uniform(0.55, 1.0))
        x, y = rng.integers(0, w - s + 1), rng.integers(0, h - s + 1)
        buf = io.BytesIO()
        im.crop((x, y, x + s, y + s)).save(buf, "JPEG", quality=90)
        out.append(clf.load_image(buf.getvalue()))
    return np.stack(out)


def main() -> None:
    from cifar_cnn import load
    from cifar_cnn.corruptions import photo_pipeline
    from cifar_cnn.datasets import cifar10
    from cifar_cnn.evaluate import predict_logits
    from cifar_cnn.novelty import _normalized, _precision, _squared_distances
    from cifar_cnn.ood import auroc, composition, out_of_distribution_sets

    model = sys.argv[1] if len(sys.argv) > 1 else "robust"
    clf = load(model)
    ds = cifar10(holdout=int(clf.card.recipe.get("holdout", 1000)), verbose=False)
    pick = np.sort(np.random.default_rng(0).permutation(len(ds.train_x))[:10_000])
    images = {"train": ds.train_x[pick], "val": ds.val_x, "test": ds.test_x,
              **out_of_distribution_sets(size=clf.input_size),
              "photo pipeline": photo_pipeline(ds.test_x[:2000], load=clf.load_image), "chelsea": chelsea_crops(clf)}  # fmt: skip
    t0 = time.perf_counter()
    raw = {k: predict_logits(_Taps(clf.model), clf.preprocess(v), tta=clf.tta).double() for k, v in images.items()}
    seconds = time.perf_counter() - t0
    c, d = clf.card.num_classes, clf.model.head.in_features
    widths = [clf.model.get_submodule(n + ".conv2").out_channels if n != "layers.0" else clf.model.whiten.out_channels
              for n in LAYERS]  # fmt: skip

    def feature(kind: str, layer: int = 0):
        def get(a: torch.Tensor) -> torch.Tensor:
            if kind == "pen":
                return a[:, c : c + d]
            o = c + d + 2 * sum(widths[:layer])
            mean, std = a[:, o : o + widths[layer]], a[:, o + widths[layer] : o + 2 * widths[layer]]
            return {"m": mean, "ms": torch.cat([mean, std], 1), "mlogs": torch.cat([mean, torch.log(std + 1e-6)], 1)}[
                kind
            ]

        return get

    y = torch.as_tensor(ds.train_y[pick]).long()
    parts: dict[str, dict[str, np.ndarray]] = {}
    f = _normalized(feature("pen")(raw["train"]))
    means = torch.stack([f[y == k].mean(0) for k in range(c)])
    p = _precision(f - means[y])
    parts["ml2"] = {k: _squared_distances(_normalized(feature("pen")(a)), means, p).min(1).values.numpy()
                    for k, a in raw.items()}  # fmt: skip
    parts["fn"] = {k: -torch.log(feature("pen")(a).norm(dim=1)).numpy() for k, a in raw.items()}
    for i, layer in enumerate(LAYERS):
        for kind in ("m", "ms", "mlogs"):
            get = feature(kind, i)
            tr = get(raw["train"])
            mu, prec = tr.mean(0), _precision(tr - tr.mean(0))
            parts[f"{layer} {kind}"] = {k: _squared_distances(get(a), mu[None], prec)[:, 0].numpy()
                                        for k, a in raw.items()}  # fmt: skip
    z = {n: {k: (v - s["train"].mean()) / s["train"].std() for k, v in s.items()} for n, s in parts.items()}
    sources = composition()["natural"]
    candidates = [[n] for n in parts] + [["ml2", "fn", n] for n in parts if n.startswith("layers")] + [
        ["ml2", "fn", "layers.0 mlogs", "layers.1 mlogs", "layers.2 mlogs", "layers.3 mlogs"]]  # fmt: skip
    head = ["| score | false alarms (test) | AUROC natural | graphics | synthetic | " + " | ".join(sources)
            + " | flagged: natural | photo pipeline (in-class) | chelsea crops (in-class) |",
            "|---|" + "---|" * (7 + len(sources))]  # fmt: skip
    rows = []
    for combo in candidates:
        s = {k: sum(z[n][k] for n in combo) for k in raw}
        thr = np.quantile(s["val"], 0.95)
        per, start = [], 0
        for n in sources.values():
            per.append(auroc(-s["test"], -s["natural"][start : start + n]))
            start += n
        name = " + ".join(combo) + (" (today's `combined`)" if combo == ["ml2", "fn", "layers.2 m"] else "")
        rows.append(f"| {name} | {(s['test'] > thr).mean():.1%} | " + " | ".join(
            f"{auroc(-s['test'], -s[k]):.3f}" for k in ("natural", "graphics", "synthetic")) + " | "
            + " | ".join(f"{a:.3f}" for a in per) + " | " + " | ".join(
            f"{(s[k] > thr).mean():.0%}" for k in ("natural", "photo pipeline", "chelsea")) + " |")  # fmt: skip
    from ood import cpu_name  # bench/ood.py

    cpu = cpu_name()
    text = "\n".join([
        f"# Feature maps for the novelty score: {model} ({cpu}, {os.cpu_count()} cores)", "",
        f"TTA {clf.tta}; features of {sum(len(v) for v in images.values()):,} images in {seconds:.0f} s. "
        "ml2: Mahalanobis of L2-normalized penultimate features; fn: minus their log length; "
        "`layers.i` m / ms / mlogs: Mahalanobis of that stage's channel means / means and stds / means "
        "and log stds; sums of standardized parts. Flagged: share above the threshold (95th percentile "
        "of the validation split); in-class photos should be flagged about as often as test images.", "",
        *head, *rows]) + "\n"  # fmt: skip
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out = (
        Path(__file__).parent
        / "results"
        / f"ood-stages-{Path(model).stem}-{cpu.lower().replace(' ', '-')[:24]}-{stamp}.md"
    )
    out.write_text(text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
