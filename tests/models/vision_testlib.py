"""Tiny image shards for the vision tests, written through records/ as the feature layer would."""

from __future__ import annotations

import numpy as np

from models.efficientnet import EfficientNetConfig
from models.vqvae import VQVAEConfig
from records.example_codec import encode_example
from records.spec import FixedLenFeature, VarLenFeature
from records.writer import DatasetWriter

CLASSES = 3
SPEC = {  # the shard contract, masks and boxes included (the dense kinds read them)
    "image": FixedLenFeature((), "bytes"),
    "image_shape": FixedLenFeature((3,), "int64"),
    "label": FixedLenFeature((1,), "int64"),
    "mask": FixedLenFeature((), "bytes", default=b""),
    "mask_shape": FixedLenFeature((3,), "int64", default=(0, 0, 0)),
    "boxes": VarLenFeature("int64"),
    "box_labels": VarLenFeature("int64"),
}


def draw(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (size, size, 3): class 0 a centred square, 1 horizontal, 2 vertical stripes."""
    img = rng.normal(60, 10, (size, size, 3))
    if label == 0:
        q = size // 4
        img[q:-q, q:-q] += 140
    elif label == 1:
        img[::4] += 140
        img[1::4] += 140
    else:
        img[:, ::4] += 140
        img[:, 1::4] += 140
    return np.clip(img, 0, 255).astype(np.uint8)


def mask_and_boxes(label: int, size: int) -> tuple[np.ndarray, list[int], list[int]]:
    """What :func:`draw` drew as a mask (class = label + 1) and its objects' boxes
    (x0, y0, x1, y1, x1/y1 exclusive): the square, or each 2-pixel stripe."""
    mask = np.zeros((size, size), np.uint8)
    if label == 0:
        q = size // 4
        mask[q:-q, q:-q] = 1
        return mask, [q, q, size - q, size - q], [1]
    boxes = []
    for start in range(0, size, 4):
        end = min(start + 2, size)
        if label == 1:
            mask[start:end] = 2
            boxes += [0, start, size, end]
        else:
            mask[:, start:end] = 3
            boxes += [start, 0, end, size]
    return mask, boxes, [label + 1] * (len(boxes) // 4)


def write_images(tmp_path, *, train: int = 16, eval: int = 6, size: int = 16, seed: int = 0,
                 name: str = "toy-images") -> str:
    """Writes ``train`` + ``eval`` labelled images (4 per shard); returns the dataset URI."""
    uri = (tmp_path / "records" / name / "v=1").as_uri()
    rng = np.random.default_rng(seed)
    with DatasetWriter(uri=uri, dataset=name, version="1", feature_spec=SPEC,
                       max_records_per_shard=4) as writer:
        for split, n in (("train", train), ("eval", eval)):
            for i in range(n):
                label = i % CLASSES
                img = draw(label, size, rng)
                mask, boxes, box_labels = mask_and_boxes(label, size)
                writer.write(split, encode_example({
                    "image": [img.tobytes()], "image_shape": list(img.shape), "label": [label],
                    "mask": [mask.tobytes()], "mask_shape": [size, size, 1],
                    "boxes": boxes, "box_labels": box_labels,
                }))
    return uri


def tiny_vqvae(**overrides) -> VQVAEConfig:
    base = dict(hidden_channels=32, res_blocks=1, res_channels=8, downsample=2,
                codebook_size=16, embedding_dim=8, restart_after=20)
    return VQVAEConfig(**{**base, **overrides})


def tiny_effnet(**overrides) -> EfficientNetConfig:
    base = dict(num_classes=CLASSES, width=0.25, depth=0.1, resolution=16, dropout=0.0,
                drop_connect=0.0, bn_momentum=0.1, label_smoothing=0.0)
    return EfficientNetConfig(**{**base, **overrides})
