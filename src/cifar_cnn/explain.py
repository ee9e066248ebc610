"""Why the model said what it said: a class-activation heatmap over the picture.

    why = cifar_cnn.load().explain("cat.jpg")   # Explanation: the prediction, a heatmap, an overlay
    why.save("cat.why.png")                     # the photo with the heatmap over it (cli: predict --explain)

LayerCAM (Jiang et al., 2021), a close variant of Grad-CAM, from `torchcam`: the feature maps of
one convolutional layer, each position weighted by the positive gradient of the class's score
there, summed over channels, ReLU'd and scaled to [0, 1]. The layer is the model's `cam_layer` in
the registry (for the airbench nets the second conv group, 7x7 at 32 px); for a model outside the
registry, the last layer with a 4-D output, as torchcam finds it.

Chosen by where the heatmap's peak falls on CIFAR-10 test pictures (32 px, right and >90% sure)
pasted at a random place into a 64 px flat or noisy background, with the bundled `fast` (60 each):

    method     layer     peak on the object (flat / noise)   mean inside / outside (median)
    Grad-CAM   layers.3  32 / 24                             1.7 / 1.7   (the 3x3 map: too coarse)
    Grad-CAM   layers.2  35 / 44                             2.2 / 4.4
    Grad-CAM++ layers.2  52 / 53                             2.7 / 3.1
    LayerCAM   layers.1  51 / 59                             3.1 / 3.3
    LayerCAM   layers.2  59 / 57                             4.1 / 3.8   <- used
(bench/explain_layers.py; README "Why: where the model looked" has the whole table).

The heatmap is averaged over the picture and its mirror image (the view every recipe's
test-time augmentation includes), so it does not depend on which way the object faces.
It is returned at the size of the picture shown: the model sees the central square of the
picture (`images.to_model_size`), so outside that square the heatmap is 0 and the overlay
greys the picture out.
"""

from __future__ import annotations

import copy
import io
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from cifar_cnn.errors import CifarCnnError
from cifar_cnn.images import ImageInput, open_image

if TYPE_CHECKING:
    from cifar_cnn.predict import Classifier, Prediction

DISPLAY_SIDE = 512  # the explanation's picture is the original shrunk to at most this (longer side)
OVERLAY_ALPHA = 0.5  # how much of the photo shows through the colour map
_LOCK = threading.Lock()  # guards each Classifier's private copy of its model (see `_model_copy`)


class ExplainError(CifarCnnError):
    """The model cannot be explained (no convolutional layer to read), or a bad target class."""


@dataclass
class Explanation:
    """A prediction and where in the picture the model found its class."""

    prediction: Prediction  # what `Classifier.predict` says of the picture
    target: str  # the class explained (the predicted one unless asked for another)
    heatmap: np.ndarray  # float32 (H, W) in [0, 1] at `image`'s size; 0 outside what the model saw
    image: Image.Image  # the picture (RGB), shrunk to at most DISPLAY_SIDE on its longer side
    box: tuple[int, int, int, int]  # (left, top, right, bottom) of the square the model saw, in `image`
    layer: str  # the layer whose maps were weighted

    def overlay(self, alpha: float = OVERLAY_ALPHA, colormap: str = "jet") -> Image.Image:
        """The picture with the heatmap in colour over it; outside the model's square, greyed."""
        return overlay(self.image, self.heatmap, self.box, alpha, colormap)

    def save(self, path: str | os.PathLike) -> None:
        """Write the overlay as a PNG."""
        self.overlay().save(path, format="PNG")

    def to_png(self) -> bytes:
        buf = io.BytesIO()
        self.overlay().save(buf, format="PNG")
        return buf.getvalue()


def overlay(picture: Image.Image, heatmap: np.ndarray, box: tuple[int, int, int, int],
            alpha: float = OVERLAY_ALPHA, colormap: str = "jet") -> Image.Image:  # fmt: skip
    """`picture` with `heatmap` (its size, in [0, 1]) in colour over it; outside `box`, greyed."""
    from matplotlib import colormaps

    colours = colormaps[colormap](heatmap, bytes=True)[..., :3].astype(np.float32)
    photo = np.asarray(picture.convert("RGB"), dtype=np.float32)
    out = alpha * photo + (1 - alpha) * colours
    left, top, right, bottom = box
    outside = np.ones(heatmap.shape, bool)
    outside[top:bottom, left:right] = False
    grey = photo.mean(axis=2, keepdims=True) * 0.5 + 64
    out = np.where(outside[..., None], grey, out)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def cam_layer_name(clf: Classifier) -> str:
    """The layer LayerCAM reads for this model: the registry's `cam_layer`, else the last layer
    with a 4-D (N, C, H, W) output. Raises ExplainError when there is none."""
    from cifar_cnn.models.registry import get_model_config, list_models
    from cifar_cnn.predict import _ExportedModule

    model = clf.model
    if isinstance(model, _ExportedModule):
        raise ExplainError("cannot explain this model: it is stored as a torch.export program, whose layers cannot "
                           "be hooked; explain your module itself: Classifier(your_trained_module, card).explain(...)")  # fmt: skip
    if clf.name in list_models() and get_model_config(clf.name).cam_layer:
        name = get_model_config(clf.name).cam_layer
        if name in dict(model.named_modules()):
            return name
    from torchcam.methods._utils import locate_candidate_layer

    name = locate_candidate_layer(model, (3, clf.input_size, clf.input_size))
    if not name:
        raise ExplainError(f"cannot explain model {clf.name!r}: it has no layer with (N, C, H, W) feature maps to read")
    return name


def _model_copy(clf: Classifier) -> torch.nn.Module:
    """A float32 copy of the classifier's model, made once: LayerCAM hooks its layers and runs it
    with gradients, which must not touch the model that predictions (perhaps in other threads) use."""
    cached = clf._explain_model
    if cached is None:
        cached = copy.deepcopy(clf.model).float().eval()
        for p in cached.parameters():
            p.requires_grad_(True)  # frozen stems too: the graph must reach the hooked layer
        clf._explain_model = cached
    return cached


def class_heatmap(clf: Classifier, image: np.ndarray, class_index: int, layer: str) -> np.ndarray:
    """LayerCAM of class `class_index` for one uint8 (S, S, 3) image at the model's size, averaged
    with that of its mirror image: float32 (S, S) in [0, 1]."""
    from torchcam.methods import LayerCAM

    x = clf.preprocess(image[None]).to(clf.device)
    views = torch.cat([x, x.flip(-1)])  # (2, 3, S, S): the picture and its mirror
    with _LOCK:
        model = _model_copy(clf)
        with torch.enable_grad(), LayerCAM(model, target_layer=layer, input_shape=tuple(x.shape[1:])) as cam:
            scores = model(views.float())
            maps = cam([class_index] * len(views), scores, normalized=False)[0].detach()  # (2, h, w)
    maps = torch.stack([maps[0], maps[1].flip(-1)]).mean(0, keepdim=True)[None]  # (1, 1, h, w)
    side = clf.input_size
    heat = torch.nn.functional.interpolate(maps.float(), size=(side, side), mode="bilinear", align_corners=False)
    heat = heat[0, 0].clamp_min(0)
    top = float(heat.max())
    return (heat / top if top > 0 else heat).cpu().numpy().astype(np.float32)


def explain(clf: Classifier, source: ImageInput, target: str | None = None, **limits) -> Explanation:
    """Predict one picture and say where the model found `target` (default: the predicted class).

    Raises ImageError for an unreadable picture, ExplainError for an unknown class or a model
    without a convolutional layer."""
    image = clf.load_image(source, **limits)  # exactly what `predict` feeds the model
    prediction = clf.predict_arrays(image[None], top_k=5)[0]
    if isinstance(source, (str, os.PathLike)):
        prediction.filename = str(source)
    target = prediction.label if target is None else target
    if target not in clf.classes:
        raise ExplainError(f"unknown class {target!r}; this model's classes: {', '.join(clf.classes)}")
    layer = cam_layer_name(clf)
    heat = class_heatmap(clf, image, clf.classes.index(target), layer)
    picture = open_image(source, target_size=DISPLAY_SIDE, **limits)
    picture.thumbnail((DISPLAY_SIDE, DISPLAY_SIDE), Image.Resampling.LANCZOS)
    heatmap, box = _onto_picture(heat, picture.size)
    return Explanation(prediction, target, heatmap, picture, box, layer)


def overlay_small(clf: Classifier, image: np.ndarray, class_index: int, layer: str, side: int = 128) -> Image.Image:
    """The overlay for a uint8 (S, S, 3) image already at the model's size (the report's grids),
    enlarged to `side` px so the colours can be seen."""
    heat = class_heatmap(clf, image, class_index, layer)
    picture = Image.fromarray(image).resize((side, side), Image.Resampling.NEAREST)
    return overlay(picture, *_onto_picture(heat, picture.size))


def _onto_picture(heat: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The (S, S) heatmap of the central square, resized into a (H, W) picture of `size` (W, H),
    0 elsewhere; with the square's box."""
    w, h = size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = Image.fromarray(heat).resize((side, side), Image.Resampling.BICUBIC)
    out = np.zeros((h, w), np.float32)
    out[top : top + side, left : left + side] = np.clip(np.asarray(square, np.float32), 0, 1)
    return out, (left, top, left + side, top + side)
