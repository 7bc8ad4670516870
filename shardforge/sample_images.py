"""Synthetic labelled images for the sample corpus: shapes on noise, with masks.

Each image is a small RGB PNG showing one filled shape (its class label) on a
noisy background, with a segmentation mask PNG of the same size (mode ``"L"``:
0 background, ``1..K`` the class id) and a line in ``manifest.jsonl``. A few
images carry the defects the Beam image pipeline has to catch. PNGs are encoded
with fixed settings and no metadata chunks, so the same seed gives the same bytes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["DEFECTS", "MIN_IMAGES", "SHAPES", "write_images"]

SHAPES = ("circle", "square", "triangle")  # mask class id = index + 1
DEFECTS = ("truncated-png", "exact-duplicate", "near-duplicate", "grayscale", "tiny")
# Image 0 is always clean: the duplicates need an earlier clean image to copy.
MIN_IMAGES = len(DEFECTS) + 1
_TINY = 4  # side of the "tiny" defect; far below any sane minimum size
_BRIGHTNESS_SHIFT = 5  # small enough that a perceptual hash still matches


@dataclass(frozen=True)
class _Drawn:
    image: Image.Image
    mask: Image.Image
    label: str


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    # Fixed encoder settings: optimize=True searches filters and may change with Pillow.
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _draw(rng: np.random.Generator, width: int, height: int) -> _Drawn:
    """Draws one shape of a random class on a noisy background, and its mask."""
    base = rng.integers(0, 256, size=3)
    noise = rng.normal(0.0, 18.0, size=(height, width, 3))
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    mask = Image.new("L", (width, height), 0)
    cls = int(rng.integers(len(SHAPES)))
    side = min(width, height)
    size = int(rng.integers(max(1, int(side * 0.4)), max(2, int(side * 0.8)) + 1))
    size = min(size, side)
    x0 = int(rng.integers(0, width - size + 1))
    y0 = int(rng.integers(0, height - size + 1))
    x1, y1 = x0 + size - 1, y0 + size - 1
    # Shift every channel by half the range so the shape always contrasts with the background.
    color = tuple(int(c) for c in (base + 128 + rng.integers(-40, 41, size=3)) % 256)
    for canvas, fill in ((ImageDraw.Draw(image), color), (ImageDraw.Draw(mask), cls + 1)):
        # No antialiasing in ImageDraw, so image and mask cover exactly the same pixels.
        if SHAPES[cls] == "circle":
            canvas.ellipse((x0, y0, x1, y1), fill=fill)
        elif SHAPES[cls] == "square":
            canvas.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            canvas.polygon(((x0 + x1) // 2, y0, x0, y1, x1, y1), fill=fill)
    return _Drawn(image, mask, SHAPES[cls])


def _random_drawn(rng: np.random.Generator) -> _Drawn:
    return _draw(rng, int(rng.integers(32, 65)), int(rng.integers(32, 65)))


def write_images(write: Callable[[str, bytes], None], count: int, rng: np.random.Generator
                 ) -> dict[str, str]:
    """Writes ``count`` images ``img-NNNNN.png``, their masks and ``manifest.jsonl``.

    One image of each kind in ``DEFECTS`` sits at a random position after the
    first: the first half of a valid PNG, a byte copy of an earlier clean image, an
    earlier clean image with its brightness shifted by a few levels, a mode ``"L"``
    image, and a 4x4 image. Every image, dirty or not, has a valid mask and a
    manifest line, so the defects reach the pipeline the way real ones would.

    Args:
        write: called as ``write(name, data)`` for every file, in a fixed order.
        count: images to write, dirty ones included; at least ``MIN_IMAGES``.
        rng: the only source of randomness.

    Returns:
        ``dirty``: image file name -> defect (one of ``DEFECTS``).
    """
    positions = sorted(int(p) for p in rng.choice(np.arange(1, count), len(DEFECTS), replace=False))
    defects = [DEFECTS[int(i)] for i in rng.permutation(len(DEFECTS))]
    defect_at = dict(zip(positions, defects, strict=True))
    clean: list[tuple[_Drawn, bytes, bytes]] = []  # (drawn, image png, mask png)
    manifest: list[str] = []
    dirty: dict[str, str] = {}
    for i in range(count):
        name = f"img-{i + 1:05d}.png"
        defect = defect_at.get(i)
        if defect in ("exact-duplicate", "near-duplicate"):
            drawn, image_png, mask_png = clean[int(rng.integers(len(clean)))]
            if defect == "near-duplicate":
                shifted = np.asarray(drawn.image, dtype=np.int16) + _BRIGHTNESS_SHIFT
                image_png = _png(Image.fromarray(np.clip(shifted, 0, 255).astype(np.uint8)))
        else:
            drawn = _draw(rng, _TINY, _TINY) if defect == "tiny" else _random_drawn(rng)
            image_png, mask_png = _png(drawn.image), _png(drawn.mask)
            if defect is None:
                clean.append((drawn, image_png, mask_png))
            elif defect == "grayscale":
                image_png = _png(drawn.image.convert("L"))
            elif defect == "truncated-png":
                image_png = image_png[: len(image_png) // 2]
        if defect is not None:
            dirty[name] = defect
        write(name, image_png)
        write(f"masks/{name}", mask_png)
        entry = {"image": name, "label": drawn.label, "mask": f"masks/{name}"}
        manifest.append(json.dumps(entry, ensure_ascii=False, sort_keys=True))
    write("manifest.jsonl", ("\n".join(manifest) + "\n").encode("utf-8"))
    return dirty
