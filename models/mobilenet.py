"""MobileNetV2 (Sandler et al. 2018, "Inverted Residuals and Linear Bottlenecks"), one file.

    x (B, 3, R, R) -> stem conv3x3/2 -> 7 stages of inverted residual blocks
      -> conv1x1 to 1280 -> global average pool -> dropout -> linear -> logits (B, num_classes)

An inverted residual block turns the classic bottleneck inside out: a 1x1 conv *expands* the
thin input by ``t`` (6), a 3x3 *depthwise* conv (one filter per channel, ``groups = C``)
filters it spatially, and a 1x1 *pointwise* conv projects it back to a thin output with no
activation after it (the "linear bottleneck": ReLU on a low-dimensional manifold loses
information). The residual joins the thin ends when the shapes allow. A depthwise-separable
3x3 costs ``9C + C*C'`` multiply-adds per pixel instead of ``9*C*C'``: the whole net is
~300M MACs at 224 px against ~4G for a ResNet-50.

The width multiplier ``alpha`` scales every layer's channels (rounded to multiples of 8,
:func:`~models.mobilenet_config.make_divisible`), except the last 1x1 conv, which only grows.
As a backbone (:class:`MobileNetV2Features`) it returns the features at strides 2, 4, 8, 16
and 32; with ``output_stride`` 16 or 8 the last stages dilate their depthwise convs instead
of striding (atrous convolution), so the deep features keep a finer grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.mobilenet_config import (
    INVERTED_RESIDUALS,
    MOBILENET_PRESETS,
    MobileNetV2Config,
    MobileStage,
    make_divisible,
)

__all__ = ["INVERTED_RESIDUALS", "MOBILENET_PRESETS", "InvertedResidual", "MobileNetV2",
           "MobileNetV2Config", "MobileNetV2Features", "MobileStage", "conv_bn",
           "init_convnet", "make_divisible"]

TAPS = (0, 1, 2, 4, 6)  # stages whose outputs are the features at strides 2, 4, 8, 16, 32


def conv_bn(c_in: int, c_out: int, kernel: int, *, stride: int = 1, dilation: int = 1,
            groups: int = 1, act: bool = True, momentum: float = 0.1, eps: float = 1e-5
            ) -> nn.Sequential:
    """conv (no bias, "same" padding for any dilation) -> BatchNorm -> ReLU6 (optional)."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=dilation * (kernel - 1) // 2,
                  dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=eps, momentum=momentum),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """(B, c_in, H, W) -> (B, c_out, H/stride, W/stride): expand, depthwise, linear project."""

    def __init__(self, c_in: int, c_out: int, *, expand: int, stride: int, dilation: int,
                 cfg: MobileNetV2Config) -> None:
        super().__init__()
        mid = c_in * expand
        bn = dict(momentum=cfg.bn_momentum, eps=cfg.bn_eps)
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(c_in, mid, 1, **bn))  # pointwise expansion, ReLU6
        layers.append(conv_bn(mid, mid, 3, stride=stride, dilation=dilation, groups=mid,
                              **bn))  # depthwise 3x3, ReLU6
        layers.append(conv_bn(mid, c_out, 1, act=False, **bn))  # linear bottleneck
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV2Features(nn.Module):
    """The backbone: stem and the seven stages; returns the features of :data:`TAPS`.

    Attributes:
        channels: channels of each returned feature (16, 24, 32, 96, 320 times alpha).
        strides: input side / feature side of each (2, 4, 8, 16, 32 at output stride 32;
            capped at ``output_stride``).
    """

    def __init__(self, cfg: MobileNetV2Config) -> None:
        super().__init__()
        bn = dict(momentum=cfg.bn_momentum, eps=cfg.bn_eps)
        self.stem = conv_bn(cfg.in_channels, cfg.stem_width, 3, stride=2, **bn)
        stages = cfg.stages()
        self.stages = nn.ModuleList(
            nn.Sequential(*(InvertedResidual(
                s.in_channels if r == 0 else s.out_channels, s.out_channels, expand=s.expand,
                stride=s.stride if r == 0 else 1,
                dilation=s.first_dilation if r == 0 else s.dilation, cfg=cfg)
                for r in range(s.repeats)))
            for s in stages)
        self.channels = [stages[i].out_channels for i in TAPS]
        self.strides = [stages[i].feature_stride for i in TAPS]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, C, H, W) -> the 5 tapped features, finest first."""
        x = self.stem(x)  # (B, 32a, H/2, W/2)
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in TAPS:
                out.append(x)  # (B, channels[k], H/strides[k], W/strides[k])
        return out


def init_convnet(module: nn.Module) -> None:
    """The reference init: conv ~ kaiming normal (fan_out), BN = identity, linear ~ N(0, 0.01)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class MobileNetV2(nn.Module):
    """An image classifier built from a :class:`MobileNetV2Config`."""

    def __init__(self, config: MobileNetV2Config) -> None:
        super().__init__()
        self.config = cfg = config
        self.features = MobileNetV2Features(cfg)
        self.head = conv_bn(self.features.channels[-1], cfg.last_width, 1,
                            momentum=cfg.bn_momentum, eps=cfg.bn_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.last_width, cfg.num_classes)
        init_convnet(self)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Classifies images ``x`` (B, C, H, W), normalized; any H, W (global pooling).

        Returns:
            ``(logits (B, num_classes), loss)``: ``loss`` is the (label-smoothed) cross
            entropy with ``targets`` (B,) in fp32, or None without targets.

        Raises:
            ValueError: ``x`` does not have ``in_channels`` channels.
        """
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected images (B, {self.config.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        x = self.features(x)[-1]  # (B, 320a, H/32, W/32)
        x = self.head(x)  # (B, 1280, H/32, W/32)
        x = self.dropout(x.mean((2, 3)))  # (B, 1280)
        logits = self.classifier(x)  # (B, num_classes)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float(), targets,
                                   label_smoothing=self.config.label_smoothing)
        return logits, loss
