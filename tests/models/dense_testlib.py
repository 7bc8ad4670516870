"""Tiny image shards with masks and boxes for the dense vision tests, as the feature layer writes them."""

from __future__ import annotations

import numpy as np

from records.example_codec import encode_example
from records.spec import FixedLenFeature, VarLenFeature
from records.writer import DatasetWriter

CLASSES = 3  # labels; mask class = label + 1, 0 = background
SPEC = {
    "image": FixedLenFeature((), "bytes"),
    "image_shape": FixedLenFeature((3,), "int64"),
    "label": FixedLenFeature((1,), "int64"),
    "mask": FixedLenFeature((), "bytes", default=b""),
    "mask_shape": FixedLenFeature((3,), "int64", default=(0, 0, 0)),
    "boxes": VarLenFeature("int64"),
    "box_labels": VarLenFeature("int64"),
}


def draw(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One shape on noise: ``(image uint8 (size, size, 3), mask uint8 (size, size), label)``.

    Label 0 a filled square, 1 a disc, 2 a plus sign; the shape's colour contrasts with
    the background, as in the sample corpus.
    """
    label = int(rng.integers(CLASSES))
    side = int(rng.integers(size // 3, size // 2 + 1))
    y0, x0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
    yy, xx = np.mgrid[:side, :side]
    c = (side - 1) / 2
    if label == 0:
        shape = np.ones((side, side), bool)
    elif label == 1:
        shape = (yy - c) ** 2 + (xx - c) ** 2 <= (side / 2) ** 2
    else:
        shape = (np.abs(yy - c) <= side / 6) | (np.abs(xx - c) <= side / 6)
    mask = np.zeros((size, size), np.uint8)
    mask[y0:y0 + side, x0:x0 + side][shape] = label + 1
    base = rng.integers(0, 256, 3)
    image = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 255)
    image[mask > 0] = (base + 128) % 256
    return image.astype(np.uint8), mask, label


def box_of(mask: np.ndarray) -> list[int]:
    """``x0, y0, x1, y1`` (x1, y1 exclusive) of the non-background pixels."""
    rows, cols = np.nonzero(mask)
    return [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]


def write_dense_images(tmp_path, *, train: int = 16, eval: int = 8, size: int = 32,
                       seed: int = 0, name: str = "dense-images", maskless: int = -1) -> str:
    """Writes ``train`` + ``eval`` images with masks and boxes; returns the dataset URI.

    ``maskless``: the index (in the train split) of an image written without mask and
    boxes, as the feature layer writes a row whose mask is null; -1 = none.
    """
    uri = (tmp_path / "records" / name / "v=1").as_uri()
    rng = np.random.default_rng(seed)
    with DatasetWriter(uri=uri, dataset=name, version="1", feature_spec=SPEC,
                       max_records_per_shard=8) as writer:
        for split, n in (("train", train), ("eval", eval)):
            for i in range(n):
                image, mask, label = draw(rng, size)
                example = {"image": [image.tobytes()], "image_shape": list(image.shape),
                           "label": [label]}
                if not (split == "train" and i == maskless):
                    example.update(mask=[mask.tobytes()], mask_shape=[size, size, 1],
                                   boxes=box_of(mask), box_labels=[label + 1])
                writer.write(split, encode_example(example))
    return uri
