"""Pure per-image steps of the image pipeline: decode, validate, convert, resize, hash.

No Beam here: :func:`clean_image` maps one *source* (a manifest row with the bytes of its
image and mask, as :func:`pipelines.beam.image_manifest.read_source` makes it) to either a
``clean_images`` row or a quarantine row, so every rule is testable on bytes alone.

Checks run cheapest first and stop at the first failure, so each bad image has exactly
one reason: the manifest row, the file (missing, empty), the header (undecodable, size,
aspect, mode), the pixels (truncated), the label, then the mask. Quarantine reasons are
short kebab-case codes (:data:`REASONS`); the ``detail`` says what exactly was wrong.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.config import ImagesConfig
from pipelines.beam.image_boxes import mask_boxes

__all__ = [
    "REASONS",
    "clean_image",
    "content_sha256",
    "fit_box",
    "hamming",
    "phash_bands",
    "priority",
    "quarantine_row",
]

# reason -> the pipeline step that rejects it (the quarantine's ``stage`` column).
REASONS = {
    "bad-manifest-row": "manifest",   # a field missing or of the wrong type, a path outside
    "missing-file": "read",
    "empty-file": "read",
    "undecodable": "decode",          # not an image format Pillow knows
    "too-small": "validate",
    "too-large": "validate",          # also Pillow's decompression-bomb guard
    "bad-aspect": "validate",
    "mode-not-allowed": "validate",
    "truncated": "decode",            # the header parsed, the pixel data did not
    "unknown-label": "validate",
    "mask-missing": "read",
    "mask-undecodable": "decode",
    "mask-mode": "validate",
    "mask-size-mismatch": "validate",
    "mask-class-out-of-range": "validate",
}

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class _Reject(Exception):
    """Internal: one quarantine reason and its detail, raised by the check steps."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail


def quarantine_row(source: dict, reason: str, detail: str) -> dict:
    """The quarantine row of a source (columns of ``QUARANTINE_SCHEMA`` in image_io).

    Raises:
        ValueError: ``reason`` is not one of :data:`REASONS`.
    """
    if reason not in REASONS:
        raise ValueError(f"quarantine reason {reason!r} is not one of {sorted(REASONS)}")
    data = source.get("data")
    return {"source": source["source"], "locator": source["locator"], "reason": reason,
            "detail": detail, "bytes": len(data) if data is not None else 0,
            "stage": REASONS[reason], "manifest_line": source["line"]}


def fit_box(width: int, height: int, target_w: int, target_h: int, fit: str
            ) -> tuple[int, int, tuple[int, int, int, int] | None]:
    """The intermediate size and crop box that bring ``width x height`` to the target.

    Returns:
        ``(resize_w, resize_h, box)``: resize to this size, then crop ``box`` (left, top,
        right, bottom) out of it; ``box`` is None when the resize alone lands on the target.
    """
    if fit == "stretch":
        return target_w, target_h, None
    if fit != "center_crop":
        raise ValueError(f"images.fit {fit!r} is not one of ['stretch', 'center_crop']")
    # Scale so the image covers the target, then cut the overhang evenly from both ends.
    scale = max(target_w / width, target_h / height)
    resize_w = max(target_w, round(width * scale))
    resize_h = max(target_h, round(height * scale))
    left, top = (resize_w - target_w) // 2, (resize_h - target_h) // 2
    return resize_w, resize_h, (left, top, left + target_w, top + target_h)


def _resize(image: Image.Image, rules: ImagesConfig, resample) -> Image.Image:
    resize_w, resize_h, box = fit_box(image.width, image.height, rules.width, rules.height,
                                      rules.fit)
    out = image.resize((resize_w, resize_h), resample=resample)
    return out.crop(box) if box is not None else out


def _open(data: bytes, what: str, undecodable: str) -> Image.Image:
    try:
        # Pillow warns (then raises) on decompression bombs; both mean "too large" here.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise _Reject(undecodable, f"{what} is not an image Pillow can read") from None
        raise _Reject("too-large", f"{what}: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _Reject(undecodable, f"{what}: {exc}") from None


def _load(image: Image.Image, what: str, reason: str) -> None:
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        # "image file is truncated", "broken data stream", "broken PNG file": the header
        # parsed but the pixel data ended or broke.
        raise _Reject(reason, f"{what}: {exc}") from None


def _check_geometry(image: Image.Image, rules: ImagesConfig) -> None:
    w, h = image.size
    if min(w, h) < rules.min_side:
        raise _Reject("too-small", f"{w}x{h}: a side is below min_side {rules.min_side}")
    if max(w, h) > rules.max_side:
        raise _Reject("too-large", f"{w}x{h}: a side is above max_side {rules.max_side}")
    if max(w, h) / min(w, h) > rules.max_aspect:
        raise _Reject("bad-aspect", f"{w}x{h}: aspect above max_aspect {rules.max_aspect}")
    if image.mode not in rules.allowed_modes:
        raise _Reject("mode-not-allowed",
                      f"mode {image.mode} is not in allowed_modes {list(rules.allowed_modes)}")


def _clean_mask(source: dict, size: tuple[int, int], rules: ImagesConfig) -> bytes | None:
    """The mask resized like the image (NEAREST: class ids are never blended), as HW bytes."""
    if source.get("mask_source") is None:
        return None
    data = source.get("mask")
    if data is None:
        raise _Reject("mask-missing", f"mask {source['mask_source']} does not exist")
    mask = _open(data, f"mask {source['mask_source']}", "mask-undecodable")
    _load(mask, f"mask {source['mask_source']}", "mask-undecodable")
    if mask.mode != "L":
        raise _Reject("mask-mode", f"mask mode {mask.mode}, expected L (0 = background, 1..K)")
    if mask.size != size:
        raise _Reject("mask-size-mismatch",
                      f"mask {mask.width}x{mask.height} != image {size[0]}x{size[1]}")
    if rules.labels:
        top = int(np.asarray(mask).max())
        if top > len(rules.labels):
            raise _Reject("mask-class-out-of-range",
                          f"mask class id {top} > {len(rules.labels)} labels")
    out = _resize(mask, rules, Image.Resampling.NEAREST)
    return np.asarray(out, dtype=np.uint8).tobytes()  # (H, W) row-major


def content_sha256(rgb: Image.Image) -> str:
    """sha256 of the decoded pixels and their size: the same picture in another encoding
    (PNG settings, metadata, palette vs RGB) has the same hash."""
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:RGB:".encode())
    digest.update(np.asarray(rgb, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def clean_image(source: dict, rules: ImagesConfig) -> tuple[str, dict]:
    """Decode, validate, convert and resize one source.

    Args:
        source: ``line``, ``locator``, ``source`` (image URI), ``label``, ``mask_source``
            (URI or None), ``data``/``mask`` (bytes, None when the file is missing) and
            ``error`` (``(reason, detail)`` of a bad manifest row, else None).
        rules: the ``images`` config section.

    Returns:
        ``("image", row)`` with the ``clean_images`` columns (``image`` is the resized
        uint8 HWC pixels, ``mask`` the resized HW class ids or None, ``boxes`` /
        ``box_labels`` the boxes of the resized mask's connected components and their class
        ids (:func:`~pipelines.beam.image_boxes.mask_boxes`) or None without a mask), or
        ``("quarantine", row)`` with exactly one reason.
    """
    import imagehash

    try:
        if source.get("error") is not None:
            raise _Reject(*source["error"])
        data = source.get("data")
        if data is None:
            raise _Reject("missing-file", f"{source['source']} does not exist")
        if not data:
            raise _Reject("empty-file", "0 bytes")
        image = _open(data, "image", "undecodable")
        source_mode = image.mode
        _check_geometry(image, rules)  # from the header: no pixels decoded yet
        _load(image, "image", "truncated")
        if rules.labels and source["label"] not in rules.labels:
            raise _Reject("unknown-label",
                          f"label {source['label']!r} is not in {list(rules.labels)}")
        mask = _clean_mask(source, image.size, rules)
    except _Reject as reject:
        return "quarantine", quarantine_row(source, reject.reason, reject.detail)
    rgb = image.convert("RGB") if image.mode != "RGB" else image
    out = _resize(rgb, rules, _RESAMPLE[rules.resample])
    pixels = np.asarray(out, dtype=np.uint8)  # (H, W, 3)
    boxes = box_labels = None
    if mask is not None:  # the stored mask's objects, in stored-image pixels
        boxes, box_labels = mask_boxes(np.frombuffer(mask, np.uint8).reshape(pixels.shape[:2]))
    digest = content_sha256(rgb)
    return "image", {
        "image_id": digest[:16],
        "source_path": source["source"],
        "manifest_line": source["line"],
        "label": source["label"],
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
        "channels": int(pixels.shape[2]),
        "image": pixels.tobytes(),
        "mask": mask,
        "boxes": boxes,
        "box_labels": box_labels,
        "content_sha256": digest,
        # Of the source, not the resized copy: imagehash downsizes to 32x32 itself, and a
        # target smaller than that would otherwise be upsampled first.
        "phash": str(imagehash.phash(rgb, hash_size=8)),
        "source_width": rgb.width,
        "source_height": rgb.height,
        "source_mode": source_mode,
        "source_bytes": len(data),
    }


def priority(row: dict) -> tuple:
    """Sort key of the copy to keep among duplicates: most source pixels, then the first
    path and manifest line (a total order, so every runner keeps the same copy)."""
    return (-row["source_width"] * row["source_height"], row["source_path"], row["manifest_line"])


def hamming(a: str, b: str) -> int:
    """Bits that differ between two hex perceptual hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def phash_bands(phash: str, max_distance: int) -> list[tuple[int, int]]:
    """``(band, bits)`` keys such that two hashes at most ``max_distance`` bits apart share one.

    Pigeonhole: cut the hash into ``max_distance + 1`` bands; ``max_distance`` differing
    bits can touch at most ``max_distance`` of them, so one band is equal in both. Grouping
    by band finds every near pair without comparing all pairs.
    """
    bits = len(phash) * 4
    value = int(phash, 16)
    bands = max_distance + 1
    if bands > bits:
        raise ValueError(f"phash_max_distance {max_distance} needs more than the {bits} hash bits")
    edges = [bits * i // bands for i in range(bands + 1)]
    return [(i, (value >> lo) & ((1 << (hi - lo)) - 1))
            for i, (lo, hi) in enumerate(itertools.pairwise(edges))]
