"""Which feature map should the `combined` novelty score read besides the penultimate features?

    .venv/bin/python bench/ood_stages.py robust        # or fast, or a model file
    .venv/bin/python bench/ood_stages.py robust --in-class DIR   # + real photos of the ten classes

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
re-encoded as JPEG 90), plus the first 2,000 test images through the photo pipeline. With
`--in-class DIR`, a labelled folder of real photos of the ten classes (`bench/in_class_photos.py`
makes one of 216 from ImageNet's sample photos), it also gives the flag rate on them (overall and
averaged over classes) and the AUROC of those photos against the natural out-of-distribution
photos: the question a user's picture actually poses.

Writes bench/results/ood-stages-<model>-<cpu>-<timestamp>.md.
"""

from __future__ import annotations

import io
import os
import re
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

    args = sys.argv[1:]
    in_class = None
    if "--in-class" in args:
        i = args.index("--in-class")
        in_class = args[i + 1]
        del args[i : i + 2]
    model = args[0] if args else "robust"
    clf = load(model)
    ds = cifar10(holdout=int(clf.card.recipe.get("holdout", 1000)), verbose=False)
    pick = np.sort(np.random.default_rng(0).permutation(len(ds.train_x))[:10_000])
    images = {"train": ds.train_x[pick], "val": ds.val_x, "test": ds.test_x,
              **out_of_distribution_sets(size=clf.input_size),
              "photo pipeline": photo_pipeline(ds.test_x[:2000], load=clf.load_image), "chelsea": chelsea_crops(clf)}  # fmt: skip
    if in_class:
        from cifar_cnn.datasets import labelled_images

        images["in-class"], in_class_y, _ = labelled_images(in_class, clf.classes, clf.input_size, progress=False)
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
    t = clf.temperature
    parts["energy"] = {k: (-t * torch.logsumexp(a[:, :c] / t, 1)).numpy() for k, a in raw.items()}
    bank = _normalized(feature("pen")(raw["train"][:5000])).float()  # kNN (k=5), as novelty.py's `knn`

    def knn(key: str, a: torch.Tensor) -> np.ndarray:
        top = (_normalized(feature("pen")(a)).float() @ bank.T).topk(6, dim=1).values
        # a training image in the bank finds itself first: skip that neighbour
        own = torch.arange(len(a)) < (len(bank) if key == "train" else 0)
        return (1 - torch.where(own, top[:, 5], top[:, 4])).double().numpy()

    parts["knn"] = {k: knn(k, a) for k, a in raw.items()}
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
        ["ml2", "fn", "layers.0 mlogs", "layers.1 mlogs", "layers.2 mlogs", "layers.3 mlogs"],
        ["ml2", "fn", "layers.2 m", "energy"], ["ml2", "fn", "layers.2 m", "knn"], ["knn", "fn", "layers.2 m"],
        ["ml2", "fn", "layers.1 m", "layers.2 m"], ["ml2", "fn", "layers.1 ms", "layers.2 ms"]]  # fmt: skip
    head = ["| score | false alarms (test) | AUROC natural | graphics | synthetic | " + " | ".join(sources)
            + " | flagged: natural | photo pipeline (in-class) | chelsea crops (in-class) |"
            + (" real in-class photos: flagged / class-balanced / when right / when wrong | AUROC real in-class vs natural |" if in_class else ""),
            "|---|" + "---|" * (7 + len(sources) + 2 * bool(in_class))]  # fmt: skip
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
        if in_class:
            flagged = s["in-class"] > thr
            balanced = np.mean([flagged[in_class_y == k].mean() for k in np.unique(in_class_y)])
            right = raw["in-class"][:, :c].argmax(1).numpy() == in_class_y
            rows[-1] += (f" {flagged.mean():.0%} / {balanced:.0%} / {flagged[right].mean():.0%} / "
                         f"{flagged[~right].mean():.0%} | {auroc(-s['in-class'], -s['natural']):.3f} |")
    from ood import cpu_name  # bench/ood.py

    cpu = cpu_name()
    text = "\n".join([
        f"# Feature maps for the novelty score: {model} ({cpu}, {os.cpu_count()} cores)", "",
        f"TTA {clf.tta}; features of {sum(len(v) for v in images.values()):,} images in {seconds:.0f} s. "
        "ml2: Mahalanobis of L2-normalized penultimate features; fn: minus their log length; "
        "`layers.i` m / ms / mlogs: Mahalanobis of that stage's channel means / means and stds / means "
        "and log stds; energy: -T logsumexp(logits / T); knn: 1 - cosine similarity to the 5th nearest of "
        "5,000 training features; sums of standardized parts. Flagged: share above the threshold (95th percentile "
        "of the validation split); in-class photos should be flagged about as often as test images.", "",
        *([f"Real in-class photos: {len(in_class_y)} from {in_class}; top-1 accuracy "
           f"{(raw['in-class'][:, :c].argmax(1).numpy() == in_class_y).mean():.1%} (TTA {clf.tta})", ""]
          if in_class else []),
        *head, *rows]) + "\n"  # fmt: skip
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out = (
        Path(__file__).parent
        / "results"
        / f"ood-stages-{Path(model).stem}-{re.sub(r'[^a-z0-9]+', '-', cpu.lower()).strip('-')[:24]}-{stamp}.md"
    )
    out.write_text(text)
    print(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
