"""Named training recipes as plain values: everything a run needs to be repeated.

Every checkpoint and result file stores the recipe it came from (as nanoGPT stores its config).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class Recipe:
    name: str
    model: str
    epochs: float
    batch_size: int
    optimizer: str  # "muon": airbench's Muon + SGD split; "adam": Keras' default
    lr: float  # for "muon": Muon's lr on conv filters; for "adam": Adam's lr
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    flip: bool = True  # mirror augmentation; "derandomized": every image flips every other epoch
    translate: int = 0  # random translation by up to this many pixels (reflect padding)
    cutout: int = 0  # zero a random square of this side in each training image (0: off)
    color_jitter: float = 0.0  # per image: saturation, brightness, contrast x [1 - j, 1 + j] (0: off)
    noise: float = 0.0  # fraction of training images with Gaussian pixel noise (sigma up to 0.1)
    blur: float = 0.0  # fraction of training images blurred (Gaussian, sigma 0.5 to 1.5)
    # Outlier exposure: this many patch-shuffled mosaics per training image are added to each
    # batch, their loss pulling the output towards uniform (weight OUTLIER_WEIGHT in train.py).
    outlier_exposure: float = 0.0
    whiten_bias_epochs: float = 0.0  # airbench: train the whitening stem's bias only this long
    # Progressive resizing: the run split into len(...) equal parts by epoch, part i trained on
    # images downscaled to this fraction of their side (a 32 px epoch at 24 px costs 0.44x on a
    # CPU, bench/results/steps-*). Empty: full size throughout. The last part should be 1.0.
    progressive_resize: tuple[float, ...] = ()
    # Hard-example focus: from 0-based epoch `drop_easy_from` on, each epoch leaves out this share
    # of the training images, those with the lowest loss when last seen, except that the share
    # `drop_easy_random` of the data is drawn at random from them (so an image learnt early, and
    # not seen since, is measured again; at 1 - drop_easy or more the epoch is a random subset).
    # 0: every image, every epoch. The lr schedule runs over the steps actually taken.
    drop_easy: float = 0.0
    drop_easy_from: int = 2
    drop_easy_random: float = 0.1
    warmup: float = 0.0  # fraction of steps with linear lr warmup (adam)
    tta: int = 0  # test-time augmentation: 0 none, 1 mirror, 2 mirror + translate
    # Selective TTA for the timed test-set evaluation of speed runs: only images whose top
    # softmax probability on one plain view is below this get the other views (0: all do).
    tta_below: float = 0.0
    eval_every_epoch: bool = True  # test accuracy each epoch costs time on the speed recipes
    eval_batch_size: int = 1000
    holdout: int = 1000  # CIFAR-10: last N training images kept out of training to fit calibration on
    class_weights: bool = False  # weight the loss by inverse class frequency (for imbalanced folders)
    # Where `init="auto"` starts on the data the recipe was tuned for (CIFAR-10): "scratch", or
    # "pretrained" (fine-tune the bundled weights of its model, as the `robust` recipe does).
    init: str = "scratch"

    def __post_init__(self) -> None:
        if not self.epochs > 0 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"recipe {self.name!r}: epochs, batch size and lr must be positive")
        if self.tta not in (0, 1, 2) or min(self.translate, self.cutout, self.holdout) < 0:
            raise ValueError(f"recipe {self.name!r}: tta must be 0, 1 or 2; translate, cutout, holdout >= 0")
        if self.init not in ("scratch", "pretrained"):
            raise ValueError(f"recipe {self.name!r}: init must be 'scratch' or 'pretrained', not {self.init!r}")
        if not (
            0 <= self.color_jitter < 1
            and 0 <= self.tta_below < 1
            and 0 <= self.noise <= 1
            and 0 <= self.blur <= 1
            and 0 <= self.outlier_exposure <= 1
        ):
            raise ValueError(
                f"recipe {self.name!r}: color_jitter, tta_below in [0, 1); noise, blur, outlier_exposure in [0, 1]"
            )
        if not (0 <= self.drop_easy < 1 and self.drop_easy_from >= 0 and 0 <= self.drop_easy_random <= 1):
            raise ValueError(
                f"recipe {self.name!r}: drop_easy must be in [0, 1), drop_easy_from >= 0, drop_easy_random in [0, 1]"
            )
        if not all(0 < f <= 1 for f in self.progressive_resize):
            raise ValueError(f"recipe {self.name!r}: progressive_resize fractions must be in (0, 1]")

    def train_size(self, epoch: int, epochs: int, size: int) -> int:
        """The side training images have in `epoch` (0-based) of `epochs`, for images of `size`."""
        if not self.progressive_resize:
            return size
        part = min(len(self.progressive_resize) - 1, epoch * len(self.progressive_resize) // max(1, epochs))
        return max(8, round(size * self.progressive_resize[part]))

    def steps_in_epoch(self, epoch: int, n_train: int) -> int:
        """Whole batches in 0-based `epoch` on `n_train` images: fewer once the hard-example
        focus leaves images out."""
        batch = min(self.batch_size, max(1, n_train))
        if self.drop_easy and epoch >= self.drop_easy_from:
            return max(1, int((1 - self.drop_easy) * n_train) // batch)
        return max(1, n_train // batch)

    def epoch_steps(self, n_train: int) -> list[int]:
        """Training steps in each epoch of a run on `n_train` images, the last epoch cut short
        when `epochs` is fractional: the lr schedule spans their sum."""
        if not self.drop_easy:
            full = self.steps_in_epoch(0, n_train)
            total = math.ceil(self.epochs * full)
            n_epochs = math.ceil(total / full)
            return [full] * (n_epochs - 1) + [total - (n_epochs - 1) * full]
        steps = [self.steps_in_epoch(e, n_train) for e in range(math.ceil(self.epochs))]
        steps[-1] = math.ceil((self.epochs - (len(steps) - 1)) * steps[-1])
        return steps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Recipe:
        known = {f.name for f in fields(cls)}
        # JSON (model cards, checkpoints) stores tuples as lists; the recipe is frozen and hashable.
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})

    def override(self, **changes) -> Recipe:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


RECIPES: dict[str, Recipe] = {
    # airbench94 with Muon (Jordan 2024): 94.0% on the original CIFAR-10 in 8 epochs.
    # Label smoothing 0.2, flip + 2px translate, linear lr decay to 0, TTA mirror + translate.
    # Ours: the timed test-set evaluation gives the TTA views only to the images the plain view
    # is unsure of (top probability < 0.6, about a quarter): the same accuracy in 0.4x the time.
    "fast": Recipe(
        name="fast", model="fast", epochs=8, batch_size=2000, optimizer="muon", lr=0.24,
        label_smoothing=0.2, weight_decay=2e-6, flip=True, translate=2, whiten_bias_epochs=3,
        tta=2, tta_below=0.6, eval_every_epoch=False,
    ),
    # airbench96's net (residual groups of 3 convs, 128/384/512) and augmentation (translate 4,
    # cutout 12), trained with the fast recipe's Muon: for users who want accuracy over speed.
    "large": Recipe(
        name="large", model="large", epochs=30, batch_size=2000, optimizer="muon", lr=0.24,
        label_smoothing=0.2, weight_decay=2e-6, flip=True, translate=4, cutout=12, whiten_bias_epochs=3,
        tta=2, eval_every_epoch=False,
    ),
    # airbench95's widths (128/384/384) on the fast recipe, trained longer.
    "medium": Recipe(
        name="medium", model="medium", epochs=15, batch_size=2000, optimizer="muon", lr=0.24,
        label_smoothing=0.2, weight_decay=2e-6, flip=True, translate=2, whiten_bias_epochs=3,
        tta=2, eval_every_epoch=False,
    ),
    # For photos rather than seconds, the default model behind predict/serve/load (README "Photos
    # in the wild"): the bundled `fast` weights fine-tuned 4 epochs at half the lr with photometric
    # augmentation against what phones, JPEG and light do to pixels: colour jitter on every image,
    # Gaussian noise on a quarter of each batch, blur on another quarter. Measured: the same clean
    # accuracy as `fast`, +17.9 points of mean corruption accuracy (bench/results/candidates-*).
    "robust": Recipe(
        name="robust", model="fast", epochs=4, batch_size=2000, optimizer="muon", lr=0.12,
        label_smoothing=0.2, weight_decay=2e-6, flip=True, translate=2, color_jitter=0.3, noise=0.25, blur=0.25,
        whiten_bias_epochs=3, tta=2, eval_every_epoch=False, init="pretrained",
    ),
    # The Keras tutorial's CNN compiled the Keras way: Adam, categorical cross-entropy.
    # Flip + translate augmentation stands in for the tutorial's ImageDataGenerator.
    "keras_cnn": Recipe(
        name="keras_cnn", model="keras_cnn", epochs=20, batch_size=128, optimizer="adam", lr=2e-3,
        flip=True, translate=2, warmup=0.1, tta=0, eval_every_epoch=True,
    ),
}  # fmt: skip

# `fast` with progressive resizing and a hard-example focus: 10 epochs on a ramp of one size per
# epoch, 16, 16, 22, 24, 26, 28, 30, 32, 32, 32 px (the batch is downscaled on the tensor after
# augmentation; evaluation stays at 32), and from the third epoch on each epoch leaves out 30% of
# the images, those with the lowest loss when last seen (`drop_easy`, train.py). Even sizes only:
# a step's cost follows the feature maps after the stem and the poolings, so an odd size costs
# what the even size above it does. On an AMD Zen 4 (bf16), seeds 0 to 2 beside airbench94_muon:
# 90.40% in 468 s of training against 90.01% in 485 s for the 8-epoch ramp without the focus
# (20, 20, 22, 24, 26, 28, 32, 32): 0.62x of airbench's time, 0.41 points short of its 90.81%.
# Muon's lr 0.30 rather than `fast`'s 0.24, tuned for this run's 184 steps (`fast`: 192 at 32 px):
# +0.13 over the same three seeds at the same cost (90.56% against 90.43%, every view; lr 0.20 and
# 0.36 on seed 0: 90.17%, 90.30%). The first two epochs at 16 px rather than 20: a 15 px stem map
# (7/3/1 px after the poolings) makes a step 0.57x as long (0.84 s against 1.47 s), the run 0.94x
# the FLOPs (0.62x of `fast`'s); seed 0: 90.50% in 433 s against the 20 px start's 90.46% (its
# steps took 475 s in that session, the machine being slower than the night before).
# The full bench beside airbench94_muon (5 seeds, 3 of its runs, Zen 4): 90.49% in 0.60x of its
# time, 0.34 points short of its 90.83%; the 16 px start a wash there (seeds 0-2 0.08 lower, every view).
# README "Speed against airbench94_muon"; bench/results/fast_progressive-*, focus-variants-*, lr-*, variants-*.
# Derived from `fast`, so that everything but the image size, the images seen and the lr stays the same.
RECIPES["fast_progressive"] = replace(
    RECIPES["fast"],
    name="fast_progressive",
    epochs=10,
    lr=0.30,
    progressive_resize=(0.5, 0.5, 0.6875, 0.75, 0.8125, 0.875, 0.9375, 1.0, 1.0, 1.0),
    drop_easy=0.3,
    drop_easy_from=2,
)


CIFAR10_TRAIN_IMAGES = 49_000  # what the recipes' schedules were tuned on (50,000 less the holdout)
MAX_EPOCHS = 100


def fit_to_data(recipe: Recipe, n_train: int, tuned: bool, finetune: bool, fixed: set[str]) -> tuple[Recipe, list[str]]:
    """Scale a recipe's batch size and length to a data set of `n_train` images, unless the
    recipe was tuned on this very data (`tuned`: CIFAR-10) or the user set them (`fixed`).

    - batch: about a sixth of the data, rounded down to a power of two (16 at least, the
      recipe's at most), so every epoch takes several steps;
    - epochs: the recipe's count times (49,000 / n) ** 0.35, capped at 100: small sets get more
      passes but far fewer images seen, large ones fewer passes than CIFAR-10's schedule;
      fine-tuning pretrained weights a quarter of that (measured on Fashion-MNIST, 400 images:
      50 fine-tuning steps gave 82.9%, 240 steps 83.3%; README, "Your own images").
    Returns the recipe and one line per choice made, to print.
    """
    if tuned or n_train <= 0:
        return recipe, []
    changes: dict = {}
    notes = []
    if "batch_size" not in fixed:
        batch = max(16, 2 ** int(math.log2(max(n_train / 6, 1))))
        changes["batch_size"] = min(recipe.batch_size, batch)
    if "epochs" not in fixed:
        epochs = recipe.epochs * (CIFAR10_TRAIN_IMAGES / n_train) ** 0.35 * (0.25 if finetune else 1.0)
        changes["epochs"] = round(min(MAX_EPOCHS, max(1.0, epochs)), 1)
        changes["whiten_bias_epochs"] = round(recipe.whiten_bias_epochs * changes["epochs"] / recipe.epochs, 2)
    changes["eval_every_epoch"] = True  # per-epoch validation accuracy: cheap on folder-sized data
    fitted = replace(recipe, **changes)
    notes.append(f"Schedule for {n_train} training images: batch {fitted.batch_size}, {fitted.epochs:g} epochs "
                 f"({math.ceil(fitted.epochs * (n_train // fitted.batch_size))} steps)"
                 + ("" if "epochs" in fixed else f"; the recipe's {recipe.epochs:g} epochs are tuned for CIFAR-10's "
                    f"{CIFAR10_TRAIN_IMAGES:,} (set --epochs / --batch-size to choose)"))  # fmt: skip
    return fitted, notes


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]
