"""Novelty detection for the `uncertain` flag: does an image look like the training images at all?

The calibrated top probability alone says how sure the model is *among its classes*; a picture of
something else can still get 99% (uniform noise was "cat" at 99%). The features inside the
network say more: an image unlike every training image lands away from where theirs do.

Features, from one forward pass (forward hooks, averaged over the recipe's test-time views like
the logits): `penultimate`, the input of the last linear layer (N, D); and `stage`, the channel
means (N, K) of one intermediate feature map (`STAGE_LAYERS`: the middle stage of each registry
architecture, whose colours and textures the last layer has already pooled away).

Scores, higher = more novel (`bench/ood.py` compares them; README "none of these" has the numbers):

    msp                   1 - max calibrated probability (the flag's only score before)
    energy                -T logsumexp(logits / T) (Liu et al. 2020), T the calibrated temperature
    mahalanobis           min over classes of the squared Mahalanobis distance of the penultimate
                          features to the class mean, one covariance shared by all classes (Lee et
                          al. 2018)
    relative_mahalanobis  the same minus the distance to one Gaussian of all features (Ren et al. 2021)
    knn                   1 - cosine similarity to the k-th nearest of a subsample of L2-normalized
                          training features (Sun et al. 2022)
    mahalanobis_l2        `mahalanobis` on L2-normalized penultimate features (their direction)
    feature_norm          -log of the penultimate features' length (unfamiliar images excite
                          the last layer less)
    stage                 squared Mahalanobis distance of the stage's channel means to their mean
    combined              mahalanobis_l2 + feature_norm + stage, each standardized by its mean and
                          standard deviation on the training images (no weights tuned on outliers)
    combined_knn          knn + feature_norm + stage, standardized alike (on training images outside
                          the kNN bank): the default since real photos of the ten classes could be
                          measured (README "none of these"); natural-photo AUROC 0.954 against
                          combined's 0.943 on the bundled `robust`

Statistics are fitted on training images, the threshold on the validation split (never the test
set: the 95th percentile there, so about 5% of in-distribution images are flagged), and both go
into the model file: tensors named `ood.*` in the safetensors file, the score's name, threshold
and fitted numbers in the `ModelCard` (`novelty`). A model stored as a torch.export program (a
user's own module) has no layers to hook: it keeps the probability-only flag, and its card says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cifar_cnn.evaluate import predict_logits

SCORES = ("msp", "energy", "mahalanobis", "relative_mahalanobis", "knn", "mahalanobis_l2", "feature_norm", "stage",
          "combined", "combined_knn")  # fmt: skip
STATISTICS = {  # score -> the tensors it needs, stored as ood.<name>
    "mahalanobis": ("class_means", "precision"),  # (C, D), (D, D) float32
    "relative_mahalanobis": ("class_means", "precision", "mean", "background_precision"),  # + (D,), (D, D)
    "knn": ("bank",),  # (KNN_BANK, D) float16, rows of unit length
    "mahalanobis_l2": ("class_means", "precision"),  # of L2-normalized features
    "feature_norm": (),
    "stage": ("stage_mean", "stage_precision"),  # (K,), (K, K)
    "combined": ("class_means", "precision", "stage_mean", "stage_precision"),
    "combined_knn": ("bank", "stage_mean", "stage_precision"),
}
FEATURE_SCORES = tuple(STATISTICS)
COMBINED = {
    "combined": ("mahalanobis_l2", "feature_norm", "stage"),  # summed, each standardized
    "combined_knn": ("knn", "feature_norm", "stage"),
}
DEFAULT_SCORE = "combined_knn"
# The intermediate feature map of each registry architecture (module names): the middle stage.
STAGE_LAYERS = {"fast": "layers.2", "medium": "layers.2", "large": "layers.2", "keras_cnn": "5"}
FALSE_ALARM_QUANTILE = 0.95  # threshold: flag the most novel 5% of validation images, no more
FIT_IMAGES = 10_000  # training images fitted (a random subset: enough for Gaussians in a few hundred
# dimensions, and finalize stays fast on a CPU)
KNN_BANK = 5_000  # training features kept for knn (fp16: 2.5 MB at 256 features)
KNN_K = 5  # the k-th neighbour among KNN_BANK (Sun et al.'s k=50 of 50k, scaled to the bank)
SHRINKAGE = 1e-3  # covariance + SHRINKAGE * mean variance * I: invertible with few images
PREFIX = "ood."  # tensor names in the model file

Features = dict[str, torch.Tensor]  # "penultimate" (N, D) and, where the model has one, "stage" (N, K)


def head_layer(model: nn.Module) -> nn.Linear | None:
    """The last `nn.Linear` (the classifier head) of a registry model; None for a torch.export
    program or a model without one."""
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return heads[-1] if heads else None


def stage_layer(model: nn.Module, name: str | None) -> nn.Module | None:
    if not name:
        return None
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


class _NoFeatures(Exception):
    pass


class _LogitsAndFeatures(nn.Module):
    """`model` returning (N, C + D [+ K]): its logits, the head's input and the stage's channel
    means. One module, so `predict_logits`' test-time augmentation averages all of them over the
    same views; the logits are bit-identical to `model`'s own (same dtype, same arithmetic)."""

    def __init__(self, model: nn.Module, head: nn.Linear, stage: nn.Module | None):
        super().__init__()
        self.model, self.head, self.stage = model, head, stage
        self.training = model.training  # predict_logits restores this mode: the model's own, not a new module's

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: dict[str, torch.Tensor] = {}
        hooks = [self.head.register_forward_hook(lambda _m, i, _o: captured.__setitem__("head", i[0]))]
        if self.stage is not None:
            hooks.append(self.stage.register_forward_hook(lambda _m, _i, o: captured.__setitem__("stage", o)))
        try:
            logits = self.model(x)
        finally:
            for h in hooks:
                h.remove()
        features = captured["head"].flatten(1) if "head" in captured else None
        if features is None or features.shape != (len(logits), self.head.in_features) or \
                logits.shape[1:] != (self.head.out_features,):  # fmt: skip
            raise _NoFeatures  # the last Linear registered is not what produced the logits
        parts = [logits, features.to(logits.dtype)]
        if self.stage is not None:
            stage = captured.get("stage")
            if stage is None or stage.ndim != 4:
                raise _NoFeatures
            parts.append(stage.float().mean((2, 3)).to(logits.dtype))  # (N, K) channel means
        return torch.cat(parts, 1)


def logits_and_features(model: nn.Module, inputs: torch.Tensor, *, tta: int = 0, batch_size: int = 500,
                        autocast: bool = False, stage: str | None = None) -> tuple[torch.Tensor, Features | None]:  # fmt: skip
    """(logits (N, C), features or None when the model has no head to hook), in one pass,
    averaged over the same test-time augmentation views. `stage`: the intermediate module's name
    (`STAGE_LAYERS`), or None for the penultimate features alone."""
    head, mid = head_layer(model), stage_layer(model, stage)
    try:
        if head is None:
            raise _NoFeatures
        both = predict_logits(_LogitsAndFeatures(model, head, mid), inputs, tta=tta, batch_size=batch_size,
                              autocast=autocast)  # fmt: skip
    except _NoFeatures:
        return predict_logits(model, inputs, tta=tta, batch_size=batch_size, autocast=autocast), None
    c, d = head.out_features, head.in_features
    if len(inputs) == 0:  # predict_logits' empty answer is (0, 10) whatever the model
        return torch.empty(0, c), {"penultimate": torch.empty(0, d)} | ({"stage": torch.empty(0, 0)} if mid else {})
    features = {"penultimate": both[:, c : c + d]}
    if mid is not None:
        features["stage"] = both[:, c + d :]
    return both[:, :c], features


def _precision(centered: torch.Tensor) -> torch.Tensor:
    """Inverse of the shrunk covariance of centered features (N, D), in float64."""
    cov = centered.T @ centered / max(len(centered), 1)
    cov += SHRINKAGE * max(float(cov.diagonal().mean()), 1e-12) * torch.eye(len(cov), dtype=cov.dtype)
    return torch.linalg.inv(cov)


def _squared_distances(features: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """(N, K): (f - m)^T P (f - m) for every feature row f and mean row m, in float64."""
    f, m, p = features.double(), means.double(), precision.double()
    fp = f @ p
    return ((fp * f).sum(1, keepdim=True) - 2 * fp @ m.T + ((m @ p) * m).sum(1)).clamp_min(0)


def _normalized(features: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(features.double(), dim=1)


def _class_gaussian(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    overall = features.mean(0)
    means = torch.stack([features[labels == c].mean(0) if (labels == c).any() else overall
                         for c in range(num_classes)])  # fmt: skip
    return {"class_means": means.float(), "precision": _precision(features - means[labels]).float()}


def _bank_rows(score: str, n: int, seed: int) -> torch.Tensor:
    """Which of n training rows the kNN bank keeps: KNN_BANK at random; for `combined_knn` at most
    half, so the other half can standardize the kNN part (a bank image is its own nearest
    neighbour, and would make training images look more familiar than any new one)."""
    keep = max(1, min(KNN_BANK, n // 2)) if score == "combined_knn" else KNN_BANK
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:keep]


def fit_statistics(score: str, features: Features, labels: torch.Tensor, num_classes: int,
                   seed: int = 0) -> dict[str, torch.Tensor]:  # fmt: skip
    """The tensors (names without the `ood.` prefix) that `score` needs, from training features
    and labels (N,). Empty for the logit-only scores."""
    if score not in STATISTICS:
        return {}
    pen, labels = features["penultimate"].double(), torch.as_tensor(labels).long()
    stats: dict[str, torch.Tensor] = {}
    if score in ("knn", "combined_knn"):
        stats["bank"] = _normalized(pen[_bank_rows(score, len(pen), seed)]).half()
    if score in ("mahalanobis", "relative_mahalanobis"):
        stats |= _class_gaussian(pen, labels, num_classes)
    if score == "relative_mahalanobis":
        stats |= {"mean": pen.mean(0).float(), "background_precision": _precision(pen - pen.mean(0)).float()}
    if score in ("mahalanobis_l2", "combined"):
        stats |= _class_gaussian(_normalized(pen), labels, num_classes)
    if score in ("stage", "combined", "combined_knn"):
        if "stage" not in features:
            raise ValueError(f"score {score!r} needs an intermediate layer (STAGE_LAYERS) that this model lacks")
        stage = features["stage"].double()
        stats |= {"stage_mean": stage.mean(0).float(), "stage_precision": _precision(stage - stage.mean(0)).float()}
    # Row-major, as they are stored (linalg.inv answers column-major): the same layout gives the
    # same rounding, so a reloaded detector scores exactly as the one just fitted.
    return {k: v.contiguous() for k, v in stats.items()}


def novelty_scores(score: str, logits: torch.Tensor, features: Features | None, temperature: float,
                   stats: dict[str, torch.Tensor], params: dict | None = None) -> np.ndarray:  # fmt: skip
    """Novelty (N,) by `score` (see the module docstring): higher = less like the training
    images. `params`: "k" for knn, "standardize" {component: [mean, std]} for combined."""
    params = params or {}
    if score == "msp":
        return (1 - torch.softmax(logits / temperature, 1).max(1).values).double().numpy()
    if score == "energy":
        return (-temperature * torch.logsumexp(logits.double() / temperature, 1)).numpy()
    if score not in SCORES:
        raise ValueError(f"unknown novelty score {score!r}; choose one of {', '.join(SCORES)}")
    if features is None:
        raise ValueError(f"score {score!r} needs the model's penultimate features")
    pen = features["penultimate"]
    if score in COMBINED:
        standardize = params["standardize"]
        return sum((novelty_scores(part, logits, features, temperature, stats, params) - standardize[part][0])
                   / standardize[part][1] for part in COMBINED[score])  # fmt: skip
    if score == "knn":
        similarity = _normalized(pen).float() @ stats["bank"].float().T  # (N, bank)
        out = 1 - similarity.topk(min(params.get("k", KNN_K), similarity.shape[1]), dim=1).values[:, -1]
    elif score == "feature_norm":
        out = -torch.log(pen.double().norm(dim=1).clamp_min(1e-12))
    elif score == "stage":
        out = _squared_distances(features["stage"], stats["stage_mean"][None], stats["stage_precision"])[:, 0]
    else:
        f = _normalized(pen) if score == "mahalanobis_l2" else pen
        out = _squared_distances(f, stats["class_means"], stats["precision"])
        if score == "relative_mahalanobis":
            out = out - _squared_distances(f, stats["mean"][None], stats["background_precision"])
        out = out.min(1).values
    return out.double().numpy()


@dataclass
class NoveltyDetector:
    """A fitted score and its threshold: novelty above `threshold` means "looks like none of the
    classes". `stats` are the `ood.*` tensors of the model file (prefix stripped); `info` what the
    card keeps besides: the stage layer, standardization, how it was fitted."""

    score: str
    threshold: float
    stats: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    info: dict = field(default_factory=dict)

    @property
    def needs_features(self) -> bool:
        return self.score in FEATURE_SCORES

    @property
    def stage(self) -> str | None:
        return self.info.get("stage")

    def scores(self, logits: torch.Tensor, features: Features | None, temperature: float) -> np.ndarray:
        return novelty_scores(self.score, logits, features, temperature, self.stats, self.info)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The `ood.*` tensors to store in the model file."""
        return {PREFIX + k: v for k, v in self.stats.items()}

    def card(self) -> dict:
        """What the ModelCard keeps (JSON): score, threshold and how they were fitted."""
        return {"score": self.score, "threshold": self.threshold, **self.info}

    @classmethod
    def from_file(cls, card: dict, tensors: dict[str, torch.Tensor]) -> NoveltyDetector | None:
        """The detector stored in a model file, or None when the file has none (older files, a
        user's exported module) or lacks its tensors: the flag is then the probability threshold."""
        if not card or card.get("score") not in SCORES:
            return None
        stats = {k[len(PREFIX) :]: v for k, v in tensors.items() if k.startswith(PREFIX)}
        if not set(STATISTICS.get(card["score"], ())) <= set(stats):
            return None
        info = {k: v for k, v in card.items() if k not in ("score", "threshold")}
        return cls(card["score"], float(card["threshold"]), stats, info)


def fit_detector(score: str, train: tuple[Features, torch.Tensor], val: tuple[torch.Tensor, Features | None],
                 num_classes: int, temperature: float, *, stage: str | None = None,
                 quantile: float = FALSE_ALARM_QUANTILE, seed: int = 0, k: int = KNN_K) -> NoveltyDetector:  # fmt: skip
    """Fit `score` on training (features, labels) and set its threshold at `quantile` of the
    validation images' (logits, features) scores: about 1 - quantile of in-distribution images
    are flagged."""
    train_features, train_labels = train
    stats = fit_statistics(score, train_features, train_labels, num_classes, seed)
    info: dict = {"stage": stage} if stage and "stage" in train_features else {}
    if score in ("knn", "combined_knn"):
        info["k"] = k
    if score in COMBINED:  # each part's mean and spread on the training images (outside the kNN bank)
        rows = torch.ones(len(train_labels), dtype=torch.bool)
        if score == "combined_knn" and len(train_labels) > 1:
            rows[_bank_rows(score, len(train_labels), seed)] = False
        held = {name: f[rows] for name, f in train_features.items()}
        parts = {p: novelty_scores(p, torch.empty(0), held, temperature, stats, info) for p in COMBINED[score]}
        info["standardize"] = {p: [float(s.mean()), max(float(s.std()), 1e-12)] for p, s in parts.items()}
    detector = NoveltyDetector(score, 0.0, stats, info)
    val_scores = detector.scores(*val, temperature)
    detector.threshold = float(np.quantile(val_scores, quantile)) if len(val_scores) else float("inf")
    detector.info |= {"fit_images": len(train_labels), "threshold_images": len(val_scores), "quantile": quantile}
    return detector


def fit_on_training_images(model: nn.Module, train_x: np.ndarray, train_y: np.ndarray,
                           val: tuple[torch.Tensor, Features], *, mean, std, temperature: float, num_classes: int,
                           stage: str | None = None, tta: int = 0, autocast: bool = False, score: str = DEFAULT_SCORE,
                           seed: int = 0, batch_size: int = 500) -> NoveltyDetector | None:  # fmt: skip
    """`fit_detector` on the features of up to FIT_IMAGES random training images (uint8
    (N, S, S, 3), no augmentation but the recipe's test-time views), thresholded on the
    validation split's (logits, features) taken with the same `stage`. None when the model has no
    layer to hook. Without stage features, `combined` falls back to `mahalanobis_l2`, `combined_knn`
    to `knn`."""
    from cifar_cnn.preprocess import to_tensor

    pick = np.sort(np.random.default_rng(seed).permutation(len(train_x))[:FIT_IMAGES])
    x = to_tensor(train_x[pick], mean, std)
    _, features = logits_and_features(model, x, tta=tta, batch_size=batch_size, autocast=autocast, stage=stage)
    if features is None or val[1] is None:
        return None
    if "stage" not in features and score in ("stage", "combined", "combined_knn"):
        score = "knn" if score == "combined_knn" else "mahalanobis_l2"
    labels = torch.as_tensor(np.asarray(train_y)[pick]).long()
    return fit_detector(score, (features, labels), val, num_classes, temperature, stage=stage, seed=seed)
