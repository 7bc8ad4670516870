"""Semantic segmentation on a MobileNetV2 backbone: FCN, UNet and DeepLab-v3 heads, one file.

    x (B, 3, H, W) -> MobileNetV2Features -> features at strides 2, 4, 8, 16, 32 (capped at
      output_stride: the deeper stages dilate instead) -> head -> logits (B, K + 1, H, W)

Heads (``model.head``), each ending at the input's resolution:

- ``fcn`` (Long et al. 2015, FCN-8s): a 3x3 conv and a 1x1 *score* layer on the deepest
  feature; its scores are upsampled and added to 1x1 scores of the stride-16 and stride-8
  features (skip connections), then upsampled x8 to the input.
- ``unet`` (Ronneberger et al. 2015): a decoder that upsamples level by level, concatenates
  the backbone's feature of that stride (and at full resolution the input image itself)
  and refines with two 3x3 convs; the widths halve as the grid doubles. The deepest
  feature's scores, upsampled, are added to its output (see :class:`UNetHead`).
- ``deeplab`` (Chen et al. 2017, DeepLab-v3): Atrous Spatial Pyramid Pooling on the deepest
  feature at output stride 16 or 8: a 1x1 conv, three 3x3 convs dilated by rates
  ``(6, 12, 18)`` (doubled at stride 8) and an image-level pooling branch, concatenated and
  projected; then a 3x3 conv, the 1x1 classifier, and upsampling x``output_stride``.

Upsampling (``model.upsample``), wherever a head enlarges a grid by ``f``:
``bilinear`` (fixed interpolation), ``transposed`` (a learned depthwise transposed conv of
kernel ``2f`` and stride ``f``, initialised to bilinear interpolation as FCN did) or
``pixel_shuffle`` (a 3x3 conv to ``C * f^2`` channels rearranged into an ``f``-times finer
grid, Shi et al. 2016, with the ICNR init that starts it as nearest-neighbour upsampling and
so without checkerboard artefacts).

Training adds an auxiliary loss (``model.aux_loss``, 0.4): a 1x1 classifier on the deepest
backbone feature, upsampled bilinearly to the input, as torchvision's segmentation models and
PSPNet train. It puts the class decision into the deep path from the first steps; without it a
UNet, whose skips find the objects' outlines at once, can settle on one class for every object.

Classes: 0 is the background and ``c >= 1`` label id ``c - 1`` (the image dataset's masks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.mobilenet import MobileNetV2Features, conv_bn, init_convnet
from models.receptive_field import Layer, conv_chain, upsample_layer
from models.segmenter_config import HEADS, SEGMENTER_PRESETS, UPSAMPLES, SegmenterConfig

__all__ = ["ASPP", "HEADS", "SEGMENTER_PRESETS", "UPSAMPLES", "Classifier", "DeepLabHead",
           "FCNHead", "Segmenter", "SegmenterConfig", "UNetHead", "Upsample"]


def _conv_relu(c_in: int, c_out: int, kernel: int, cfg: SegmenterConfig, *,
               dilation: int = 1) -> nn.Sequential:
    """conv -> BN -> ReLU (the heads use plain ReLU, as their papers)."""
    block = conv_bn(c_in, c_out, kernel, dilation=dilation, act=False,
                    momentum=cfg.bn_momentum, eps=cfg.bn_eps)
    block.append(nn.ReLU(inplace=True))
    return block


class Classifier(nn.Conv2d):
    """A 1x1 conv to class scores, initialised small (N(0, 0.01), zero bias) as FCN's score
    layers: the first loss is ~log(K) whatever the features' scale."""

    def __init__(self, c_in: int, classes: int) -> None:
        super().__init__(c_in, classes, 1)

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, 0.0, 0.01)
        nn.init.zeros_(self.bias)


class Upsample(nn.Module):
    """(B, C, H, W) -> (B, C, f*H, f*W), by ``kind``; the identity for ``factor`` 1."""

    def __init__(self, channels: int, factor: int, kind: str) -> None:
        super().__init__()
        if kind not in UPSAMPLES:
            raise ValueError(f"upsample must be one of {UPSAMPLES}, got {kind!r}")
        self.factor, self.kind = factor, kind
        self.op: nn.Module | None = None
        if factor == 1 or kind == "bilinear":
            return
        if kind == "transposed":  # kernel 2f, stride f, padding f/2: exactly f times larger
            self.op = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor,
                                         padding=factor // 2, groups=channels, bias=False)
        else:  # pixel_shuffle
            self.op = nn.Sequential(nn.Conv2d(channels, channels * factor**2, 3, padding=1),
                                    nn.PixelShuffle(factor))

    def reset_parameters(self) -> None:
        """Bilinear init (transposed), ICNR init (pixel shuffle); called after the net's init."""
        if isinstance(self.op, nn.ConvTranspose2d):
            k, f = self.op.kernel_size[0], self.factor
            centre = f - 0.5  # of a kernel of side 2f
            ramp = 1 - torch.abs(torch.arange(k, dtype=torch.float32) - centre) / f  # (k,)
            with torch.no_grad():
                self.op.weight.copy_((ramp[:, None] * ramp[None, :]).expand_as(self.op.weight))
        elif isinstance(self.op, nn.Sequential):
            conv, f2 = self.op[0], self.factor**2
            base = torch.empty(conv.out_channels // f2, *conv.weight.shape[1:])
            nn.init.kaiming_normal_(base)
            with torch.no_grad():  # the f^2 sub-pixels of a channel start equal: nearest
                conv.weight.copy_(base.repeat_interleave(f2, dim=0))
                conv.bias.zero_()

    def rf_layers(self) -> list[Layer]:
        if self.factor == 1:
            return []
        if self.kind == "pixel_shuffle":
            return [(3, 1, 1), upsample_layer("pixel_shuffle", self.factor)]
        return [upsample_layer(self.kind, self.factor, kernel=2 * self.factor)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        if self.op is None:
            return F.interpolate(x, scale_factor=self.factor, mode="bilinear",
                                 align_corners=False)
        return self.op(x)


class FCNHead(nn.Module):
    """FCN-8s scores: deepest -> conv3x3 -> score; + skip scores at strides 16 and 8; x8 up."""

    def __init__(self, channels: list[int], strides: list[int], cfg: SegmenterConfig) -> None:
        super().__init__()
        K = cfg.mask_classes
        self.conv = _conv_relu(channels[-1], cfg.decoder_channels, 3, cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.score = Classifier(cfg.decoder_channels, K)
        self.skips = (3, 2)  # the stride-16 and stride-8 features (both 8 at output stride 8)
        self.skip_scores = nn.ModuleList(Classifier(channels[i], K) for i in self.skips)
        ups, stride = [], strides[-1]
        for i in self.skips:
            ups.append(Upsample(K, stride // strides[i], cfg.upsample))
            stride = strides[i]
        self.ups = nn.ModuleList(ups)
        self.final = Upsample(K, stride, cfg.upsample)

    def rf_layers(self) -> list[Layer]:
        return [(3, 1, 1), *(la for up in self.ups for la in up.rf_layers()),
                *self.final.rf_layers()]

    def forward(self, feats: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        score = self.score(self.dropout(self.conv(feats[-1])))  # (B, K, H/os, W/os)
        for up, i, skip in zip(self.ups, self.skips, self.skip_scores, strict=True):
            score = up(score) + skip(feats[i])  # (B, K, H/s_i, W/s_i)
        return self.final(score)  # (B, K, H, W)


class UNetHead(nn.Module):
    """Decoder: per finer level, upsample, concatenate the skip, two 3x3 convs; then x2 up.

    The deepest feature's class scores, upsampled to the input, are added to the decoder's:
    the class decision stays on the deep path and the decoder learns where the outlines run.
    (Without it the decoder, which finds the outlines from its skips at once, settles on one
    class for every object and stays there; the sample shapes show it within 250 steps.)
    """

    def __init__(self, channels: list[int], strides: list[int], cfg: SegmenterConfig) -> None:
        super().__init__()
        c, stride = channels[-1], strides[-1]
        self.ups, self.blocks = nn.ModuleList(), nn.ModuleList()
        for level, i in enumerate(range(len(channels) - 2, -1, -1)):  # s16, s8, s4, s2
            width = max(8, cfg.decoder_channels >> level)
            self.ups.append(Upsample(c, stride // strides[i], cfg.upsample))
            self.blocks.append(nn.Sequential(_conv_relu(c + channels[i], width, 3, cfg),
                                             _conv_relu(width, width, 3, cfg)))
            c, stride = width, strides[i]
        self.final_up = Upsample(c, stride, cfg.upsample)  # stride 2 -> full resolution
        self.refine = _conv_relu(c + cfg.in_channels, c, 3, cfg)  # with the image itself
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = Classifier(c, cfg.mask_classes)
        self.deep_score = Classifier(channels[-1], cfg.mask_classes)
        self.deep_up = Upsample(cfg.mask_classes, strides[-1], cfg.upsample)

    def rf_layers(self) -> list[Layer]:
        out: list[Layer] = []
        for up in self.ups:
            out += [*up.rf_layers(), (3, 1, 1), (3, 1, 1)]
        return [*out, *self.final_up.rf_layers(), (3, 1, 1), (1, 1, 1)]

    def forward(self, feats: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        y = feats[-1]  # (B, C, H/os, W/os)
        for up, block, skip in zip(self.ups, self.blocks, reversed(feats[:-1]), strict=True):
            y = block(torch.cat([up(y), skip], dim=1))  # (B, width, H/s, W/s)
        y = torch.cat([self.final_up(y), x], dim=1)  # (B, width + C_in, H, W)
        deep = self.deep_up(self.deep_score(feats[-1]))  # (B, K, H, W): what the deep path says
        return self.classifier(self.dropout(self.refine(y))) + deep  # (B, K, H, W)


class ASPP(nn.Module):
    """Atrous Spatial Pyramid Pooling: (B, C, h, w) -> (B, out, h, w)."""

    def __init__(self, c_in: int, c_out: int, rates: tuple[int, ...], cfg: SegmenterConfig
                 ) -> None:
        super().__init__()
        self.rates = rates
        self.branches = nn.ModuleList(
            [_conv_relu(c_in, c_out, 1, cfg)]
            + [_conv_relu(c_in, c_out, 3, cfg, dilation=r) for r in rates])
        self.pool = _conv_relu(c_in, c_out, 1, cfg)  # on the image-level average
        self.project = _conv_relu(c_out * (len(rates) + 2), c_out, 1, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        pooled = self.pool(x.mean((2, 3), keepdim=True))  # (B, out, 1, 1): global context
        parts = [b(x) for b in self.branches] + [pooled.expand(-1, -1, h, w)]
        return self.project(torch.cat(parts, dim=1))  # (B, out, h, w)


class DeepLabHead(nn.Module):
    """DeepLab-v3: ASPP -> conv3x3 -> 1x1 classifier -> upsample x output_stride."""

    def __init__(self, channels: list[int], strides: list[int], cfg: SegmenterConfig) -> None:
        super().__init__()
        c = cfg.decoder_channels
        self.aspp = ASPP(channels[-1], c, cfg.aspp_rates(), cfg)
        self.conv = _conv_relu(c, c, 3, cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = Classifier(c, cfg.mask_classes)
        self.final = Upsample(cfg.mask_classes, strides[-1], cfg.upsample)

    def rf_layers(self) -> list[Layer]:  # along the widest ASPP branch; pooling is global
        return [(3, 1, max(self.aspp.rates)), (3, 1, 1), *self.final.rf_layers()]

    def forward(self, feats: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.aspp(feats[-1]))  # (B, c, H/os, W/os)
        return self.final(self.classifier(self.dropout(y)))  # (B, K, H, W)


_HEADS = {"fcn": FCNHead, "unet": UNetHead, "deeplab": DeepLabHead}


class Segmenter(nn.Module):
    """Per-pixel classifier built from a :class:`SegmenterConfig`."""

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.backbone = MobileNetV2Features(cfg.backbone())
        self.head = _HEADS[cfg.head](self.backbone.channels, self.backbone.strides, cfg)
        # training only: scores of the deepest feature, upsampled (bilinear) to the input
        self.aux = (Classifier(self.backbone.channels[-1], cfg.mask_classes) if cfg.aux_loss
                    else None)
        init_convnet(self)
        for m in self.modules():  # after the generic init: the layers with their own
            if isinstance(m, Upsample | Classifier):
                m.reset_parameters()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def global_context(self) -> bool:
        """Whether an output sees the whole image (DeepLab's image pooling branch)."""
        return self.config.head == "deeplab"

    def receptive_field_layers(self) -> list[Layer]:
        """The deepest conv path, input to logits (see :mod:`models.receptive_field`)."""
        return conv_chain(self.backbone) + self.head.rf_layers()

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Segments images ``x`` (B, C, H, W), normalized; H, W multiples of output_stride.

        Returns:
            ``(logits (B, num_classes + 1, H, W), loss)``: ``loss`` is the pixel-mean cross
            entropy with ``targets`` (B, H, W) int64 class ids (fp32), plus ``aux_loss`` times
            that of the auxiliary classifier in training mode; None without targets.

        Raises:
            ValueError: wrong channels, or a side that is not a multiple of output_stride.
        """
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"expected images (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] % cfg.output_stride or x.shape[3] % cfg.output_stride:
            raise ValueError(f"image sides {tuple(x.shape[2:])} must be multiples of "
                             f"output_stride {cfg.output_stride}")
        feats = self.backbone(x)  # 5 x (B, C_k, H/s_k, W/s_k)
        logits = self.head(feats, x)  # (B, K, H, W)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float(), targets)
            if self.aux is not None and self.training:
                aux = F.interpolate(self.aux(feats[-1]), size=x.shape[2:], mode="bilinear",
                                    align_corners=False)  # (B, K, H, W)
                loss = loss + cfg.aux_loss * F.cross_entropy(aux.float(), targets)
        return logits, loss
