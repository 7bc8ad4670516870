"""From image records to model inputs: uint8 on the host, float NCHW on the device.

The shard contract (written by the feature layer): each tf.Example holds

    image        bytes_list, one value: raw uint8 H*W*C bytes, row-major HWC (no PNG)
    image_shape  int64 [3]: H, W, C
    label        int64 [1]: the class id (classifiers)
    mask         bytes, optional: raw uint8 H*W class ids, 0 = background, c = label c - 1
    mask_shape   int64 [3]: H, W, 1 (0, 0, 0 without a mask)
    boxes        int64 var-len, 4 per object: x0, y0, x1, y1 in mask pixels (x1, y1 exclusive)
    box_labels   int64 var-len, one mask class id (>= 1) per box

``records.reader.RecordDataset(bytes_as="uint8")`` yields the images of a batch as
one zero-padded uint8 tensor (B, L) plus lengths. :func:`decode_images` checks them
against ``image_shape`` and views them as (B, H, W, C) without copying; the loader
does nothing else. The device does the rest in :func:`to_model_input`: the uint8
batch (4x smaller than float) crosses the bus, is permuted to NCHW (free: NHWC
memory *is* channels-last NCHW), converted, resized if asked and normalized there.

The dense kinds (``VisionModel.targets == "dense"``) also read the mask and the boxes:
:func:`decode_dense` checks them on the host (every image must have a mask: a row without
one raises, naming it) and keeps them as a few padded tensors, and :func:`to_dense_targets`
builds a :class:`~models.vision_model.DenseTargets` on the device, the masks resized with
nearest-neighbour sampling and the boxes scaled to the model's input size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F

from models.vision_model import DenseTargets
from records.spec import FixedLenFeature, VarLenFeature

__all__ = ["BOXES_KEY", "BOX_LABELS_KEY", "DenseBatch", "IMAGE_KEY", "LABEL_KEY", "MASK_KEY",
           "MASK_SHAPE_KEY", "SHAPE_KEY", "ImageBatch", "decode_dense", "decode_images",
           "dense_batches", "image_batches", "image_spec", "to_dense_targets", "to_model_input"]

IMAGE_KEY, SHAPE_KEY, LABEL_KEY = "image", "image_shape", "label"
MASK_KEY, MASK_SHAPE_KEY, BOXES_KEY, BOX_LABELS_KEY = "mask", "mask_shape", "boxes", "box_labels"

ImageBatch = tuple[torch.Tensor, torch.Tensor | None]  # uint8 (B, H, W, C), int64 (B,) or None
# uint8 images (B, H, W, C), int64 labels (B,), uint8 masks (B, h, w), int64 boxes (B, N, 4),
# int64 box_labels (B, N), int64 box counts (B,): rows i hold counts[i] valid boxes, N the most
DenseBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                   torch.Tensor]


def image_spec(*, labels: bool, dense: bool = False
               ) -> dict[str, FixedLenFeature | VarLenFeature]:
    """The decode spec of the features read (``label`` only when ``labels``; ``mask``,
    ``mask_shape``, ``boxes`` and ``box_labels`` too when ``dense``)."""
    spec: dict[str, FixedLenFeature | VarLenFeature] = {
        IMAGE_KEY: FixedLenFeature((), "bytes"), SHAPE_KEY: FixedLenFeature((3,), "int64")}
    if labels or dense:
        spec[LABEL_KEY] = FixedLenFeature((1,), "int64")
    if dense:  # optional in the shards; decode_dense says which row lacks a mask
        spec[MASK_KEY] = FixedLenFeature((), "bytes", default=b"")
        spec[MASK_SHAPE_KEY] = FixedLenFeature((3,), "int64", default=(0, 0, 0))
        spec[BOXES_KEY] = VarLenFeature("int64")
        spec[BOX_LABELS_KEY] = VarLenFeature("int64")
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


def decode_dense(batch: dict, *, num_classes: int | None = None) -> DenseBatch:
    """One ``RecordDataset(bytes_as="uint8", feature_spec=image_spec(labels=True,
    dense=True))`` batch -> a :data:`DenseBatch` on the host.

    Args:
        batch: a reader batch with the image, label, mask and box features.
        num_classes: when given, labels must lie in ``[0, num_classes)`` and mask and box
            class ids in ``[0, num_classes]`` (0 = background).

    Raises:
        ValueError: what :func:`decode_images` raises; an image without a mask (the dense
            kinds need every image's mask; the error names the image's place in the batch
            and the feature), masks of different or inconsistent shapes, boxes that are not
            4 values each or whose count differs from their labels', or class ids out of
            range.
    """
    images, labels = decode_images(batch, labels=True, num_classes=num_classes)
    needed = [MASK_KEY, f"{MASK_KEY}_lengths", MASK_SHAPE_KEY, BOXES_KEY, f"{BOXES_KEY}_lengths",
              BOX_LABELS_KEY, f"{BOX_LABELS_KEY}_lengths"]
    missing = [k for k in needed if k not in batch]
    if missing:
        raise ValueError(f"dense image batch lacks {missing} (got {sorted(batch)}); read the "
                         f"shards with feature_spec=image_spec(labels=True, dense=True)")
    mask, lengths, shape = batch[MASK_KEY], batch[f"{MASK_KEY}_lengths"], batch[MASK_SHAPE_KEY]
    B = images.shape[0]
    if B and bool((lengths == 0).any()):
        row = int((lengths == 0).nonzero()[0, 0])
        raise ValueError(f"image {row} of the batch has no mask (feature {MASK_KEY!r} is empty): "
                         "the dense kinds (segmenter, sam, thundernet) need a mask for every "
                         "image; give the corpus masks or train them on a dataset of masked "
                         "images")
    if B and bool((shape != shape[0]).any()):
        distinct = sorted({tuple(s) for s in shape.tolist()})
        raise ValueError(f"masks of one batch must share a shape, got {distinct[:4]}")
    h, w, c = (int(v) for v in shape[0]) if B else (0, 0, 1)
    if c != 1 or (B and bool((lengths != h * w).any())):
        raise ValueError(f"'{MASK_KEY}' must hold H*W uint8 class ids for its mask_shape "
                         f"{(h, w, c)}, got byte counts {sorted(set(lengths.tolist()))[:4]}")
    masks = mask[:, : h * w].reshape(B, h, w)  # a view, like the images
    boxes, n_boxes = batch[BOXES_KEY], batch[f"{BOXES_KEY}_lengths"]
    box_labels, counts = batch[BOX_LABELS_KEY], batch[f"{BOX_LABELS_KEY}_lengths"]
    if bool((n_boxes % 4 != 0).any()) or bool((n_boxes != 4 * counts).any()):
        row = int(((n_boxes % 4 != 0) | (n_boxes != 4 * counts)).nonzero()[0, 0])
        raise ValueError(f"image {row} of the batch has {int(n_boxes[row])} '{BOXES_KEY}' "
                         f"values for {int(counts[row])} '{BOX_LABELS_KEY}': 4 values per box")
    N = box_labels.shape[1]
    boxes = boxes[:, : 4 * N].reshape(B, N, 4)
    if num_classes is not None and B:
        top = max(int(masks.max()), int(box_labels.max()) if N else 0)
        if top > num_classes:
            raise ValueError(f"mask class ids must lie in [0, {num_classes}] (0 = background), "
                             f"got {top}")
    return images, labels, masks, boxes, box_labels, counts


def dense_batches(batches: Iterable[dict], *, num_classes: int | None = None
                  ) -> Iterator[DenseBatch]:
    """:func:`decode_dense` over an iterable of reader batches."""
    for batch in batches:
        yield decode_dense(batch, num_classes=num_classes)


def to_dense_targets(labels: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor,
                     box_labels: torch.Tensor, counts: torch.Tensor, *, size: tuple[int, int],
                     device: torch.device) -> DenseTargets:
    """The host tensors of a :data:`DenseBatch` -> :class:`DenseTargets` on ``device``.

    Args:
        labels, masks, boxes, box_labels, counts: as :func:`decode_dense` returns them
            (``counts`` stays on the host: it splits the boxes without a device sync).
        size: ``(H, W)`` of the model's input; masks are resized to it with nearest
            sampling (pixel centres, as PIL's NEAREST) and boxes scaled by ``W / w`` and
            ``H / h`` of the mask's ``(h, w)``.
        device: where the targets go.
    """
    H, W = size
    h, w = masks.shape[1:]
    masks = masks.to(device, non_blocking=True)  # uint8 (B, h, w)
    if (h, w) != (H, W):
        masks = F.interpolate(masks[:, None].float(), size=(H, W), mode="nearest-exact")[:, 0]
    boxes = boxes.to(device, non_blocking=True).float()  # (B, N, 4) in mask pixels
    if (h, w) != (H, W):
        boxes = boxes * torch.tensor([W / w, H / h, W / w, H / h], device=device)
    box_labels = box_labels.to(device, non_blocking=True)  # (B, N)
    n = counts.tolist()
    return DenseTargets(labels=labels.to(device, non_blocking=True), masks=masks.long(),
                        boxes=[boxes[i, : n[i]] for i in range(len(n))],
                        box_labels=[box_labels[i, : n[i]] for i in range(len(n))])
