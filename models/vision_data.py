"""From image records to model inputs: uint8 on the host, float NCHW on the device.

The shard contract (written by the feature layer): each tf.Example holds

    image        bytes_list, one value: raw uint8 H*W*C bytes, row-major HWC (no PNG)
    image_shape  int64 [3]: H, W, C
    label        int64 [1]: the class id (classifiers)
    mask         bytes, optional: raw uint8 H*W (not read here)

``records.reader.RecordDataset(bytes_as="uint8")`` yields the images of a batch as
one zero-padded uint8 tensor (B, L) plus lengths. :func:`decode_images` checks them
against ``image_shape`` and views them as (B, H, W, C) without copying; the loader
does nothing else. The device does the rest in :func:`to_model_input`: the uint8
batch (4x smaller than float) crosses the bus, is permuted to NCHW (free: NHWC
memory *is* channels-last NCHW), converted, resized if asked and normalized there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from records.spec import FixedLenFeature

__all__ = ["IMAGE_KEY", "LABEL_KEY", "SHAPE_KEY", "ImageBatch", "decode_images", "image_batches",
           "image_spec", "to_model_input"]

IMAGE_KEY, SHAPE_KEY, LABEL_KEY = "image", "image_shape", "label"

ImageBatch = tuple[torch.Tensor, torch.Tensor | None]  # uint8 (B, H, W, C), int64 (B,) or None


def image_spec(*, labels: bool) -> dict[str, FixedLenFeature]:
    """The decode spec of the features read (``label`` only when ``labels``)."""
    spec = {IMAGE_KEY: FixedLenFeature((), "bytes"), SHAPE_KEY: FixedLenFeature((3,), "int64")}
    if labels:
        spec[LABEL_KEY] = FixedLenFeature((1,), "int64")
    return spec


def decode_images(batch: dict, *, labels: bool = False, num_classes: int | None = None
                  ) -> ImageBatch:
    """One ``RecordDataset(bytes_as="uint8")`` batch -> ``(images, labels)``.

    Args:
        batch: with ``image`` uint8 (B, L), ``image_lengths`` (B,), ``image_shape`` (B, 3)
            and, when ``labels``, ``label`` (B, 1).
        labels: also return the labels.
        num_classes: when given, labels outside ``[0, num_classes)`` raise.

    Returns:
        ``images`` uint8 (B, H, W, C), a view of the batch's tensor; ``labels`` int64 (B,)
        or None.

    Raises:
        ValueError: a missing feature, images of different shapes in one batch (the
            feature layer resizes to one size), byte counts that do not match
            ``image_shape``, or labels out of range.
    """
    needed = [IMAGE_KEY, f"{IMAGE_KEY}_lengths", SHAPE_KEY] + ([LABEL_KEY] if labels else [])
    missing = [k for k in needed if k not in batch]
    if missing:
        raise ValueError(f"image batch lacks {missing} (got {sorted(batch)}); read the shards "
                         f"with RecordDataset(bytes_as='uint8', feature_spec=image_spec(...))")
    image, lengths, shape = batch[IMAGE_KEY], batch[f"{IMAGE_KEY}_lengths"], batch[SHAPE_KEY]
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.dim() != 2:
        raise ValueError(f"'image' must be a uint8 (B, L) tensor, got {getattr(image, 'shape', image)}"
                         f" {getattr(image, 'dtype', type(image).__name__)}")
    B = image.shape[0]
    if shape.shape != (B, 3):
        raise ValueError(f"'image_shape' must be (B, 3) = H, W, C per image, got {tuple(shape.shape)}")
    if B and bool((shape != shape[0]).any()):
        distinct = sorted({tuple(s) for s in shape.tolist()})
        raise ValueError(f"images of one batch must share a shape (H, W, C), got {distinct[:4]}")
    H, W, C = (int(v) for v in shape[0]) if B else (0, 0, 0)
    if min(H, W, C) < 1 and B:
        raise ValueError(f"'image_shape' must be positive, got {(H, W, C)}")
    n = H * W * C
    if bool((lengths != n).any()):
        bad = int((lengths != n).nonzero()[0, 0])
        raise ValueError(f"image {bad} of the batch holds {int(lengths[bad])} bytes but its "
                         f"image_shape {(H, W, C)} needs {n} (raw uint8 HWC, not PNG)")
    images = image[:, :n].reshape(B, H, W, C)  # a view: the padded width is n here
    if not labels:
        return images, None
    label = batch[LABEL_KEY]
    if label.shape != (B, 1):
        raise ValueError(f"'label' must be int64 [1] per example, got shape {tuple(label.shape)}")
    label = label.reshape(B)
    if num_classes is not None and B and (int(label.min()) < 0 or int(label.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got "
                         f"[{int(label.min())}, {int(label.max())}]")
    return images, label


def image_batches(batches: Iterable[dict], *, labels: bool = False,
                  num_classes: int | None = None) -> Iterator[ImageBatch]:
    """:func:`decode_images` over an iterable of reader batches."""
    for batch in batches:
        yield decode_images(batch, labels=labels, num_classes=num_classes)


def to_model_input(images: torch.Tensor, *, mean: Sequence[float], std: Sequence[float],
                   size: int | None = None, channels_last: bool = False) -> torch.Tensor:
    """uint8 ``images`` (B, H, W, C) -> normalized float32 (B, C, H', W') where they lie.

    Args:
        images: uint8 (B, H, W, C), ideally already on the device.
        mean, std: per channel, on the [0, 1] scale (``(0.5,)*C`` twice -> [-1, 1]).
        size: resize to ``size`` x ``size`` (bilinear, antialiased) when the images are
            another size; None keeps them as they are.
        channels_last: return channels-last memory (what cuDNN's fast NHWC kernels want);
            else contiguous NCHW.

    Raises:
        ValueError: ``mean``/``std`` do not have C entries.
    """
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images (B, H, W, C), got {tuple(images.shape)} "
                         f"{images.dtype}")
    C = images.shape[3]
    if len(mean) != C or len(std) != C:
        raise ValueError(f"mean and std need {C} entries (one per channel), got {mean}, {std}")
    x = images.permute(0, 3, 1, 2).float()  # (B, C, H, W), channels-last strides
    if size is not None and tuple(x.shape[2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
    m = torch.tensor(mean, device=x.device, dtype=torch.float32).view(1, C, 1, 1) * 255.0
    s = torch.tensor(std, device=x.device, dtype=torch.float32).view(1, C, 1, 1) * 255.0
    x = (x - m) / s  # (B, C, H, W)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)
