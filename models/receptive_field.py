"""Receptive fields: the theoretical one from a net's layers, the effective one from gradients.

Theoretical (Araujo et al. 2019, "Computing Receptive Fields of CNNs"): along a chain of
layers ``(kernel k, stride s, dilation d)`` the receptive field ``r`` and the jump ``j``
(input pixels between neighbouring outputs) grow as

    k_eff = d * (k - 1) + 1;    r += (k_eff - 1) * j;    j *= s        (r = j = 1 at the input)

Padding moves the field, never its size; a residual or a parallel branch adds nothing beyond
its widest path, so a net is measured along its deepest chain. An *upsampling* layer is a
layer with a fractional stride ``1/f``, its kernel counted in the input pixels one output
reads (bilinear x f: 2; a transposed conv of kernel K and stride f: ceil(K / f); pixel
shuffle: 1). Global pooling makes the field the whole image; :func:`conv_chain` walks only
convolutions and pools, so a caller says so apart.

Effective (Luo et al. 2016, "Understanding the Effective Receptive Field in Deep CNNs"): the
gradient of one output pixel (the centre) with respect to the input, its absolute value summed
over channels and averaged over images, :func:`effective_receptive_field`. It is a Gaussian-like
blob far smaller than the theoretical square; training widens it.

Known values the tests hold it to: VGG-16 conv5_3 196 and pool5 212, AlexNet conv5 163 and
pool5 195, the dilated context module of Yu & Koltun (dilations 1, 1, 2, 4, 8, 16, 1) 67.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction

import torch
from torch import nn

__all__ = ["Layer", "conv_chain", "effective_receptive_field", "erf_radius",
           "receptive_field_jump", "theoretical_receptive_field", "upsample_layer"]

Layer = tuple[int, int | Fraction, int]  # (kernel, stride, dilation); stride 1/f upsamples


def receptive_field_jump(layers: Iterable[Sequence]) -> tuple[Fraction, Fraction]:
    """``(r, j)`` after a chain of ``(kernel, stride[, dilation])`` layers, in input pixels.

    Raises:
        ValueError: a kernel, stride or dilation that is not positive.
    """
    r, j = Fraction(1), Fraction(1)
    for i, layer in enumerate(layers):
        kernel, stride, *rest = layer
        dilation = rest[0] if rest else 1
        if kernel < 1 or stride <= 0 or dilation < 1:
            raise ValueError(f"layer {i}: kernel, stride and dilation must be positive, "
                             f"got {tuple(layer)}")
        r += (dilation * (kernel - 1)) * j
        j *= Fraction(stride)
    return r, j


def theoretical_receptive_field(layers: Iterable[Sequence]) -> int:
    """Side of the input square one output of the chain can see (rounded up to whole pixels).

    Args:
        layers: ``(kernel, stride, dilation)`` per layer, input first (``dilation`` may be
            left out: 1). An upsampling layer has stride ``Fraction(1, f)``.

    Example::

        theoretical_receptive_field([(3, 1, 1)] * 2)        # 5: two 3x3 convs see 5x5
        theoretical_receptive_field([(3, 1, 2), (3, 1, 4)])  # 13: dilated 3x3 convs
    """
    r, _ = receptive_field_jump(layers)
    return math.ceil(r)


def upsample_layer(kind: str, factor: int, kernel: int | None = None) -> Layer:
    """The receptive-field layer of an upsampling by ``factor``.

    Args:
        kind: ``"bilinear"`` (2 inputs per side), ``"transposed"`` (``ceil(kernel /
            factor)``; ``kernel`` required), ``"pixel_shuffle"`` or ``"nearest"`` (1).
    """
    if kind == "bilinear":
        reads = 2
    elif kind == "transposed":
        if kernel is None:
            raise ValueError("a transposed upsampling needs its kernel")
        reads = -(-kernel // factor)
    elif kind in ("pixel_shuffle", "nearest"):
        reads = 1
    else:
        raise ValueError(f"unknown upsampling kind {kind!r}")
    return (reads if factor > 1 else 1, Fraction(1, factor), 1)


def conv_chain(module: nn.Module) -> list[Layer]:
    """The conv and pooling layers of ``module`` in registration order, as :data:`Layer`s.

    Right for nets whose registration order is their forward order and whose branches
    are residual (MobileNetV2, VGG, ResNets along their main path). Square kernels are
    assumed (the first side is taken).
    """
    out: list[Layer] = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            out.append((m.kernel_size[0], m.stride[0], m.dilation[0]))
        elif isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            d = getattr(m, "dilation", 1)
            out.append((k, s, d if isinstance(d, int) else d[0]))
    return out


def effective_receptive_field(forward: Callable[[torch.Tensor], torch.Tensor],
                              x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed |d centre output / d input| over a batch (the unnormalized ERF), and the outputs.

    One forward with gradients on, so a caller that also needs the outputs (an evaluation)
    runs the model once.

    Args:
        forward: images (B, C, H, W) -> dense outputs (B, K, H', W'); each image's output
            depends on that image only (eval-mode BatchNorm).
        x: the input batch; it is not modified.

    Returns:
        ``(erf, outputs)``: ``erf`` float32 (H, W), the absolute input gradient of the sum
        over channels of each image's centre output pixel ``(H'//2, W'//2)``, summed over
        channels and images (divide by B for the mean); ``outputs`` detached (B, K, H', W').
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = forward(x)  # (B, K, H', W')
        # fp16 gradients of one pixel underflow far from it: scale them, as a GradScaler does
        scale = 2.0**12 if out.dtype == torch.float16 else 1.0
        centre = out[:, :, out.shape[2] // 2, out.shape[3] // 2].float().sum() * scale
        (grad,) = torch.autograd.grad(centre, x)
    return grad.float().abs().sum(dim=(0, 1)) / scale, out.detach()  # (H, W), (B, K, H', W')


def erf_radius(erf: torch.Tensor, mass: float = 0.95) -> float:
    """Half the side of the smallest centred square holding ``mass`` of the ERF's total."""
    H, W = erf.shape
    total = float(erf.sum())
    if total <= 0:
        return 0.0
    cy, cx = H // 2, W // 2
    for half in range(max(H, W)):
        box = erf[max(0, cy - half):cy + half + 1, max(0, cx - half):cx + half + 1]
        if float(box.sum()) >= mass * total:
            return half + 0.5
    return max(H, W) / 2
