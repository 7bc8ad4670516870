"""Image features from a network trained inside the project, and the perceptual distance.

No pretrained weights can be downloaded here (no VGG for LPIPS, no Inception for FID),
so the features come from what the project trains itself:

- ``from_checkpoint(uri)``: an EfficientNet classifier trained on the image shards
  (``shardforge train`` of a ``kind: efficientnet`` entry). Its stage outputs are the
  perceptual layers; its pooled head (the penultimate layer, as Inception's pool3 for
  FID) is the embedding :mod:`models.frechet` compares.
- ``from_checkpoint(None)``: a fixed convnet with seeded random weights. Random
  convolutional features are a known, weaker stand-in (they still separate blur from
  detail); its distances are comparable only with the same seed, and the runs say
  ``features: random`` so nobody mistakes them for a trained network's.

The perceptual distance is LPIPS's form without its learned per-channel weights (those
are fitted to human judgements we do not have): per layer, unit-normalise each
position's channel vector, take the squared difference, average over positions; sum
over layers::

    d(x, y) = sum_l mean_hw || f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)| ||^2
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ImageFeatures", "PerceptualLoss", "RandomFeatures", "from_checkpoint"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class RandomFeatures(nn.Module):
    """conv3x3 (stride 2) -> ReLU stages with N(0, 2/fan_in) weights drawn from ``seed``.

    (B, C, H, W) in [-1, 1] -> one map per stage: (B, w_i, H/2^(i+1), W/2^(i+1)).
    """

    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (32, 64, 128),
                 seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        convs, c = [], in_channels
        for w in widths:
            conv = nn.Conv2d(c, w, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen)
                                  * (2.0 / (c * 9)) ** 0.5)
                conv.bias.zero_()
            convs.append(conv)
            c = w
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for conv in self.convs:
            x = F.relu(conv(x))
            maps.append(x)
        return maps


class _EfficientNetStages(nn.Module):
    """A trained EfficientNet's stage outputs; images in [-1, 1] are re-normalised for it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        cfg = net.config
        self.net = net
        ends, total = [], 0
        for stage in cfg.stages():  # the block index after which each stage ends
            total += stage.repeats
            ends.append(total)
        self.ends = ends
        mean, std = ((IMAGENET_MEAN, IMAGENET_STD) if cfg.in_channels == 3
                     else ((0.5,) * cfg.in_channels, (0.5,) * cfg.in_channels))
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.resolution = cfg.resolution

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) * 0.5 - self.mean) / self.std  # [-1, 1] -> the classifier's inputs
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution,) * 2, mode="bilinear",
                              align_corners=False)
        x = self.net.stem(x)
        maps = [x]
        for i, block in enumerate(self.net.blocks):
            x = block(x)
            if i + 1 in self.ends[1::2]:  # every other stage end: 3-4 maps at falling sizes
                maps.append(x)
        maps.append(self.net.head(x))  # (B, head_width, h, w): pooled, the FD embedding
        return maps


class ImageFeatures(nn.Module):
    """A frozen feature network: multi-layer maps (perceptual) and one embedding (Frechet).

    Attributes:
        source: ``"random"`` or ``"efficientnet:<checkpoint uri>"``.
    """

    def __init__(self, body: nn.Module, source: str) -> None:
        super().__init__()
        self.body, self.source = body, source
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ImageFeatures:
        return super().train(False)  # always eval: BatchNorm statistics stay as trained

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of images ``x`` (B, C, H, W) in [-1, 1], shallow to deep."""
        return self.body(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F) float32: the deepest map, globally average-pooled (EfficientNet: its
        penultimate layer), concatenated with the pooled others for random features."""
        maps = self.body(x)
        if self.source == "random":
            return torch.cat([m.float().mean((2, 3)) for m in maps], dim=1)
        return maps[-1].float().mean((2, 3))


def from_checkpoint(uri: str | None, in_channels: int = 3) -> ImageFeatures:
    """The feature network of an EfficientNet checkpoint, or seeded random features.

    Args:
        uri: ``ckpt.pt`` or run folder of a ``kind: efficientnet`` run; None = random.
        in_channels: image channels (checked against the classifier's).

    Raises:
        FileNotFoundError: no checkpoint at ``uri``.
        ValueError: the checkpoint is not an EfficientNet's, or has other channels.
    """
    if uri is None:
        return ImageFeatures(RandomFeatures(in_channels), "random")
    from models.checkpoint import checkpoint_file, load_checkpoint
    from models.efficientnet import EfficientNet, EfficientNetConfig

    path = checkpoint_file(uri)
    ckpt = load_checkpoint(path)
    kind = ckpt["extra"].get("kind")
    if kind != "efficientnet":
        raise ValueError(f"{path} holds a {kind!r} model; the feature network must be an "
                         "efficientnet classifier")
    net = EfficientNet(EfficientNetConfig(**ckpt["model_config"]))
    net.load_state_dict(ckpt["model"])
    if net.config.in_channels != in_channels:
        raise ValueError(f"{path}: the classifier takes {net.config.in_channels} channels, "
                         f"the images have {in_channels}")
    return ImageFeatures(_EfficientNetStages(net), f"efficientnet:{path}")


class PerceptualLoss(nn.Module):
    """LPIPS-form distance (uniform layer weights) on a frozen :class:`ImageFeatures`."""

    def __init__(self, features: ImageFeatures) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image distance (B,) float32 between ``x`` and ``y`` (B, C, H, W) in [-1, 1];
        gradients flow to both (the network itself is frozen)."""
        total = x.new_zeros(x.shape[0], dtype=torch.float32)
        for fx, fy in zip(self.features(x), self.features(y), strict=True):
            fx = F.normalize(fx.float(), dim=1, eps=1e-8)  # (B, c, h, w) unit channel vectors
            fy = F.normalize(fy.float(), dim=1, eps=1e-8)
            total = total + (fx - fy).pow(2).sum(1).mean((1, 2))
        return total
