"""Boxes of the masks' connected components, and the clean_images rows that carry them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.config import ImagesConfig
from pipelines.beam.image_boxes import mask_boxes
from pipelines.beam.image_io import CLEAN_IMAGES_SCHEMA
from pipelines.beam.image_ops import clean_image


def _mask(rows: list[str]) -> np.ndarray:
    """A mask drawn as text: '.' background, a digit its class id."""
    return np.array([[0 if c == "." else int(c) for c in row] for row in rows], np.uint8)


@pytest.mark.parametrize(
    ("rows", "boxes", "labels"),
    [
        (["....", "...."], [], []),
        (["....", "..1.", "...."], [2, 1, 3, 2], [1]),  # one pixel: x1, y1 exclusive
        (["11..", "11..", "...."], [0, 0, 2, 2], [1]),
        # two objects of class 2 (scan order: top first) and one of class 1 between them
        (["..22", "1...", "1.2."], [0, 1, 1, 3, 2, 0, 4, 1, 2, 2, 3, 3], [1, 2, 2]),
        (["1...", ".1..", "..1."], [0, 0, 3, 3], [1]),  # diagonal steps connect (8-neighbours)
        (["12", "12"], [0, 0, 1, 2, 1, 0, 2, 2], [1, 2]),  # touching classes stay apart
        (["3.3", "333"], [0, 0, 3, 2], [3]),  # a U shape is one object
    ],
)
def test_mask_boxes(rows, boxes, labels):
    assert mask_boxes(_mask(rows)) == (boxes, labels)


def test_mask_boxes_rejects_a_non_2d_mask():
    with pytest.raises(ValueError, match="must be \\(H, W\\)"):
        mask_boxes(np.zeros((2, 2, 1), np.uint8))


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _source(image: bytes, mask: bytes | None) -> dict:
    return {"line": 1, "locator": "manifest.jsonl:line 1", "source": "file:///c/a.png",
            "label": "circle", "mask_source": "file:///c/m.png" if mask is not None else None,
            "data": image, "mask": mask, "error": None}


def test_clean_image_rows_carry_the_boxes_of_the_stored_mask():
    # A 40x20 source with a 10x10 class-2 square at x 20..29, y 4..13 and a 2x2 class-1
    # corner; stretched to 20x10 (NEAREST takes source pixel 2i + 1) the square becomes
    # x 10..14, y 2..6 and the corner one pixel.
    ids = np.zeros((20, 40), np.uint8)
    ids[4:14, 20:30] = 2
    ids[:2, :2] = 1
    rgb = np.stack([ids * 60] * 3, axis=-1).astype(np.uint8)
    rules = ImagesConfig(height=10, width=20, min_side=4, labels=["circle", "square"])
    kind, row = clean_image(_source(_png(rgb), _png(ids)), rules)
    assert kind == "image"
    stored = np.frombuffer(row["mask"], np.uint8).reshape(10, 20)
    assert (row["boxes"], row["box_labels"]) == mask_boxes(stored)
    assert row["box_labels"] == [1, 2] and row["boxes"] == [0, 0, 1, 1, 10, 2, 15, 7]
    assert {"boxes", "box_labels"} <= set(CLEAN_IMAGES_SCHEMA.names)

    kind, bare = clean_image(_source(_png(rgb), None), rules)
    assert kind == "image" and bare["mask"] is None
    assert bare["boxes"] is None and bare["box_labels"] is None  # no mask, no boxes
