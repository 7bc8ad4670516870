"""EfficientNet (Tan & Le 2019, "Rethinking Model Scaling for CNNs"), one file.

    x (B, 3, R, R) -> stem conv3x3/2 -> 7 stages of MBConv blocks -> conv1x1 head
      -> global average pool -> dropout -> linear -> logits (B, num_classes)

An MBConv block (the inverted bottleneck of MobileNetV2): 1x1 expansion by ``e``,
kxk depthwise conv (stride s), squeeze-and-excitation (global pool -> reduce to
``se_ratio`` x the block's input channels -> SiLU -> expand -> sigmoid gate), 1x1
projection without activation, and a residual connection when shape allows, whose
branch is dropped per sample with probability growing linearly over the blocks
(stochastic depth, "drop connect" in the TF reference).

Compound scaling: B0 is the searched base network; Bφ multiplies every stage's
width by ``w``, its number of blocks by ``d`` and the input side to ``r``. The paper
derives w = β^φ, d = α^φ, r = γ^φ from α=1.2, β=1.1, γ=1.15; the released models
(tensorflow/tpu ``efficientnet_builder.py``) use the rounded table :data:`COMPOUND`,
which is what "B1..B7" mean everywhere, so presets take it from there. Channel counts
are rounded to multiples of 8 (:func:`round_filters`) and block counts up
(:func:`round_repeats`), exactly as the reference does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.efficientnet_config import (
    BASE_STAGES,
    COMPOUND,
    EFFICIENTNET_PRESETS,
    EfficientNetConfig,
    StageSpec,
    round_filters,
    round_repeats,
)

__all__ = [
    "BASE_STAGES",
    "COMPOUND",
    "EFFICIENTNET_PRESETS",
    "EfficientNet",
    "EfficientNetConfig",
    "MBConv",
    "SqueezeExcite",
    "StageSpec",
    "StochasticDepth",
    "round_filters",
    "round_repeats",
]


def conv_bn(c_in: int, c_out: int, kernel: int, cfg: EfficientNetConfig, *, stride: int = 1,
            groups: int = 1, act: bool = True) -> nn.Sequential:
    """conv (no bias, "same" padding) -> BatchNorm -> SiLU (optional)."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(c_out, eps=cfg.bn_eps, momentum=cfg.bn_momentum),
    ]
    if act:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Channel gate: x * sigmoid(expand(silu(reduce(mean_hw(x))))); (B, C, H, W) -> same."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        s = self.expand(F.silu(self.reduce(s)))  # (B, C, 1, 1)
        return x * torch.sigmoid(s)


class StochasticDepth(nn.Module):
    """Drops the whole residual branch of a sample with probability ``p`` (training only).

    Survivors are scaled by 1/(1-p), so the expectation is unchanged and eval is the
    identity (Huang et al. 2016; "drop connect" in the TF EfficientNet code).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop probability must lie in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        return x * mask.bernoulli_(keep).div_(keep)  # (B, 1, 1, 1) broadcast

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MBConv(nn.Module):
    """Mobile inverted bottleneck with SE; (B, c_in, H, W) -> (B, c_out, H/stride, W/stride)."""

    def __init__(self, c_in: int, c_out: int, *, expand: int, kernel: int, stride: int,
                 drop: float, cfg: EfficientNetConfig) -> None:
        super().__init__()
        mid = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(c_in, mid, 1, cfg))  # expansion
        layers.append(conv_bn(mid, mid, kernel, cfg, stride=stride, groups=mid))  # depthwise
        layers.append(SqueezeExcite(mid, max(1, int(c_in * cfg.se_ratio))))
        layers.append(conv_bn(mid, c_out, 1, cfg, act=False))  # linear projection
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out
        self.drop = StochasticDepth(drop if self.residual else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + self.drop(out) if self.residual else out


class EfficientNet(nn.Module):
    """An image classifier built from an :class:`EfficientNetConfig`."""

    def __init__(self, config: EfficientNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.stem = conv_bn(cfg.in_channels, cfg.stem_width, 3, cfg, stride=2)
        stages = cfg.stages()
        total = sum(s.repeats for s in stages)
        blocks, i = [], 0
        for s in stages:
            for r in range(s.repeats):
                blocks.append(MBConv(s.in_channels if r == 0 else s.out_channels, s.out_channels,
                                     expand=s.expand, kernel=s.kernel,
                                     stride=s.stride if r == 0 else 1,
                                     drop=cfg.drop_connect * i / total, cfg=cfg))
                i += 1
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn(stages[-1].out_channels, cfg.head_width, 1, cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.head_width, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # As the TF reference: conv ~ N(0, 2 / fan_out), dense ~ U(+-1/sqrt(out)).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Classifies images ``x`` (B, C, H, W), normalized; any H, W (global pooling).

        Returns:
            ``(logits (B, num_classes), loss)``: ``loss`` is the label-smoothed cross
            entropy with ``targets`` (B,) (fp32), or None without targets.

        Raises:
            ValueError: ``x`` does not have ``in_channels`` channels.
        """
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected images (B, {self.config.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        x = self.stem(x)  # (B, stem, H/2, W/2)
        x = self.blocks(x)  # (B, 320*w, H/32, W/32)
        x = self.head(x)  # (B, 1280*w, H/32, W/32)
        x = self.dropout(x.mean((2, 3)))  # (B, 1280*w)
        logits = self.classifier(x)  # (B, num_classes)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float(), targets,
                                   label_smoothing=self.config.label_smoothing)
        return logits, loss
