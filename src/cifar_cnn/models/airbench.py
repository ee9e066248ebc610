"""The CIFAR-10 speed-record network of airbench (Keller Jordan, 2024), made registry-friendly.

    whiten: 2x2 conv, fixed to the PCA whitening of image patches (+ its negation), learned bias
    GELU, then 3 groups of [conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU]
    max-pool over the final feature map -> linear head, logits scaled down by the width

The `large` net is airbench96's shape: wider groups (128/384/512), each with a third conv and
a residual connection around its last two convs.

BatchNorm has no learned scale (only a bias), and convs start as identity (dirac) on the
channels they share with their input: both help the very short schedules train stably.
BatchNorm's eps is airbench's 1e-12 on CIFAR-10; on other data `bn_eps=1e-5` (PyTorch's
default): images with degenerate colour (greyscale scans, for one) leave some whitened channels
constant, and a near-zero eps turns their float rounding into huge activations in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifar_cnn.models.registry import ModelConfig, register_model


class BatchNorm(nn.BatchNorm2d):
    def __init__(self, num_features: int, momentum: float = 0.6, eps: float = 1e-12):
        super().__init__(num_features, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad = False  # no learned scale: the next layer's weights can absorb it


class Conv(nn.Conv2d):
    def __init__(self, channels_in: int, channels_out: int):
        super().__init__(channels_in, channels_out, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        w = self.weight.data
        torch.nn.init.dirac_(w[: w.size(1)])  # start close to identity on shared channels


class ConvGroup(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, residual: bool = False, bn_eps: float = 1e-12):
        super().__init__()
        self.conv1 = Conv(channels_in, channels_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(channels_out, eps=bn_eps)
        self.conv2 = Conv(channels_out, channels_out)
        self.norm2 = BatchNorm(channels_out, eps=bn_eps)
        self.activ = nn.GELU()
        self.residual = residual
        if residual:  # airbench96: conv2 -> conv3 as a residual branch
            self.conv3 = Conv(channels_out, channels_out)
            self.norm3 = BatchNorm(channels_out, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activ(self.norm1(self.pool(self.conv1(x))))  # pool before BN: 4x cheaper BN
        y = self.activ(self.norm2(self.conv2(x)))
        return x + self.activ(self.norm3(self.conv3(y))) if self.residual else y


class HeadPool(nn.Module):
    """The pooling before the head. At 32 px input the last map is 4x4 and this is airbench's
    MaxPool2d(3) (which reads its top-left 3x3 window: kept, so CIFAR-10 weights behave exactly
    as trained); at any other input size a global max-pool, so one head fits every size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (4, 4):
            return F.max_pool2d(x, 3)
        return F.adaptive_max_pool2d(x, 1)


class AirbenchNet(nn.Module):
    def __init__(self, widths: tuple[int, int, int] = (64, 256, 256), num_classes: int = 10,
                 residual: bool = False, bn_eps: float = 1e-12):  # fmt: skip
        super().__init__()
        whiten_kernel = 2
        whiten_width = 2 * 3 * whiten_kernel**2
        self.whiten = nn.Conv2d(3, whiten_width, whiten_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad = False  # set from data by init_whiten, then frozen
        self.layers = nn.Sequential(
            nn.GELU(),
            ConvGroup(whiten_width, widths[0], residual, bn_eps),
            ConvGroup(widths[0], widths[1], residual, bn_eps),
            ConvGroup(widths[1], widths[2], residual, bn_eps),
            HeadPool(),
        )
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
                m.reset_parameters()
        self.head.weight.mul_(1 / self.head.weight.std())

    @torch.no_grad()
    def init_whiten(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the stem to the PCA whitening of 2x2 patches of `images` (N, 3, H, W), normalized."""
        c, (h, w) = images.shape[1], self.whiten.weight.shape[2:]
        patches = images.float().unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w)
        flat = patches.reshape(len(patches), -1)
        covariance = (flat.T @ flat) / len(flat)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance, UPLO="U")
        scaled = eigenvectors.T.reshape(-1, c, h, w) / torch.sqrt(eigenvalues.view(-1, 1, 1, 1) + eps)
        self.whiten.weight.copy_(torch.cat((scaled, -scaled)))

    def forward(self, x: torch.Tensor, whiten_bias_grad: bool = True) -> torch.Tensor:
        b = self.whiten.bias
        x = F.conv2d(x, self.whiten.weight, b if whiten_bias_grad else b.detach())
        x = self.layers(x)
        x = x.flatten(1)
        return self.head(x) / x.size(-1)  # (N, classes); scaled so initial logits are small


@register_model(
    ModelConfig(
        name="fast",
        description="airbench94 net: whitening stem, 3 conv groups 64/256/256, BN+GELU, 1.97M params",
        default_recipe="fast",
        cam_layer="layers.2",  # the second conv group: 7x7 maps at 32 px (the last is 3x3)
    )
)
def fast(num_classes: int = 10, input_size: int = 32, bn_eps: float = 1e-12) -> nn.Module:
    return AirbenchNet((64, 256, 256), num_classes, bn_eps=bn_eps)


@register_model(
    ModelConfig(
        name="large",
        description="airbench96 net: 3 residual groups of 3 convs, 128/384/512, for accuracy over speed",
        default_recipe="large",
        cam_layer="layers.2",  # the second conv group: 7x7 maps at 32 px (the last is 3x3)
    )
)
def large(num_classes: int = 10, input_size: int = 32, bn_eps: float = 1e-12) -> nn.Module:
    return AirbenchNet((128, 384, 512), num_classes, residual=True, bn_eps=bn_eps)


@register_model(
    ModelConfig(
        name="medium",
        description="airbench95 net: 3 conv groups 128/384/384, 2.6x the FLOPs of fast per image",
        default_recipe="medium",
        cam_layer="layers.2",  # the second conv group: 7x7 maps at 32 px (the last is 3x3)
    )
)
def medium(num_classes: int = 10, input_size: int = 32, bn_eps: float = 1e-12) -> nn.Module:
    return AirbenchNet((128, 384, 384), num_classes, bn_eps=bn_eps)
