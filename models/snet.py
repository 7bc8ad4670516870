"""SNet, ThunderNet's backbone: ShuffleNetV2 with 5x5 depthwise convolutions (Qin et al. 2019).

    x (B, 3, S, S) -> conv1 3x3/2 -> maxpool 3x3/2 -> stage 2 (/8) -> stage 3 (/16) = C4
      -> stage 4 (/32) [-> conv5 1x1] = C5

A stage opens with a down-sampling unit (both branches see the input: left dw 5x5/2 ->
1x1; right 1x1 -> dw 5x5/2 -> 1x1; concatenated) and continues with basic units (half the
channels pass through, the other half goes 1x1 -> dw 5x5 -> 1x1; concatenated); every unit
ends with a channel shuffle of two groups (Ma et al. 2018, ShuffleNet V2). ThunderNet
replaces ShuffleNetV2's 3x3 depthwise convolutions by 5x5 ones for a larger receptive
field at about the same cost (section 3.1). Widths: :data:`models.thundernet_config.SNET`.
"""

from __future__ import annotations

import torch
from torch import nn

from models.thundernet_config import SNET, SNetSpec

__all__ = ["SNET", "SNet", "SNetSpec", "ShuffleUnit", "channel_shuffle"]


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """(B, C, H, W): channel g*k + i -> i*groups + g, mixing the groups' channels."""
    B, C, H, W = x.shape
    return x.view(B, groups, C // groups, H, W).transpose(1, 2).reshape(B, C, H, W)


def conv_bn(c_in: int, c_out: int, kernel: int, *, stride: int = 1, groups: int = 1,
            relu: bool = True) -> nn.Sequential:
    """conv (no bias, "same" padding) -> BatchNorm -> ReLU (optional)."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, groups=groups,
                  bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit with 5x5 depthwise convs; (B, c_in, H, W) -> (B, c_out, H/s, W/s)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        if c_out % 2 or (stride == 1 and c_in != c_out):
            raise ValueError(f"a unit needs an even c_out (and c_in == c_out at stride 1), got "
                             f"{c_in} -> {c_out} at stride {stride}")
        half = c_out // 2
        self.stride = stride
        branch_in = c_in if stride == 2 else half
        self.left = nn.Sequential(  # only the down-sampling unit transforms the left half
            conv_bn(c_in, c_in, 5, stride=2, groups=c_in, relu=False),
            conv_bn(c_in, half, 1),
        ) if stride == 2 else nn.Identity()
        self.right = nn.Sequential(
            conv_bn(branch_in, half, 1),
            conv_bn(half, half, 5, stride=stride, groups=half, relu=False),
            conv_bn(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            left, right = x.chunk(2, dim=1)  # (B, c/2, H, W) each
            out = torch.cat([left, self.right(right)], dim=1)
        else:
            out = torch.cat([self.left(x), self.right(x)], dim=1)  # (B, c_out, H/2, W/2)
        return channel_shuffle(out)


class SNet(nn.Module):
    """The backbone; ``forward`` returns C4 (stride 16) and C5 (stride 32, or None when
    built with ``c5=False``: the detector without CEM reads C4 alone)."""

    def __init__(self, spec: SNetSpec, in_channels: int = 3, *, c5: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.stem = nn.Sequential(conv_bn(in_channels, spec.conv1, 3, stride=2),
                                  nn.MaxPool2d(3, stride=2, padding=1))
        stages, c_in = [], spec.conv1
        for width, repeats in zip(spec.stages[: 3 if c5 else 2], spec.repeats, strict=False):
            units = [ShuffleUnit(c_in, width, 2)] + [ShuffleUnit(width, width, 1)
                                                    for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*units))
            c_in = width
        self.stage2, self.stage3 = stages[0], stages[1]
        self.stage4 = stages[2] if c5 else None
        self.conv5 = conv_bn(c_in, spec.conv5, 1) if c5 and spec.conv5 else None
        self.c4_channels = spec.stages[1]
        self.c5_channels = (spec.conv5 or spec.stages[2]) if c5 else 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.stem(x)  # (B, conv1, S/4, S/4)
        c4 = self.stage3(self.stage2(x))  # (B, stages[1], S/16, S/16)
        if self.stage4 is None:
            return c4, None
        c5 = self.stage4(c4)  # (B, stages[2], S/32, S/32)
        return c4, (self.conv5(c5) if self.conv5 is not None else c5)
