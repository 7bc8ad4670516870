"""Boxes of a segmentation mask's objects: one per connected component of each class.

Pure numpy + scipy (no Beam): :func:`mask_boxes` maps a stored (resized) mask of class ids to
the ``boxes`` and ``box_labels`` columns of ``clean_images``. The detector kinds train on
them; the feature spec writes them as variable-length int64 lists (``numeric_list``).

Conventions, shared with :class:`models.vision_model.DenseTargets`:

- a box is ``x0, y0, x1, y1`` in pixels of the stored image (column, row), ``x0, y0``
  inclusive and ``x1, y1`` exclusive, so ``x1 - x0`` is the width in pixels and a
  one-pixel object at (x, y) is ``x, y, x + 1, y + 1``;
- an object is a connected component of one non-background class (ids >= 1; 0 is the
  background), connected through the 8 neighbours (diagonal steps too, as
  ``skimage.measure.label`` counts them), so a shape whose outline a NEAREST resize thinned
  to diagonal pixels stays one object. Every component is kept, however small;
- boxes are ordered by class id, then by the component's first pixel in row-major order
  (top to bottom, left to right): the same mask always gives the same list.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mask_boxes"]

_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity structuring element


def mask_boxes(mask: np.ndarray) -> tuple[list[int], list[int]]:
    """The boxes of ``mask``'s objects and their class ids.

    Args:
        mask: uint8 (H, W) class ids, 0 = background.

    Returns:
        ``(boxes, labels)``: ``boxes`` flat, 4 ints per object (``x0, y0, x1, y1``, x1/y1
        exclusive), ``labels`` one class id (>= 1) per object; both empty for a mask of
        background only.

    Raises:
        ValueError: ``mask`` is not 2-d.
    """
    from scipy import ndimage  # the beam extra; workers import it once

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W) class ids, got shape {mask.shape}")
    boxes: list[int] = []
    labels: list[int] = []
    for cls in np.unique(mask).tolist():
        if cls == 0:
            continue
        components, _ = ndimage.label(mask == cls, structure=_EIGHT)  # numbered in scan order
        for rows, cols in ndimage.find_objects(components):
            boxes += [cols.start, rows.start, cols.stop, rows.stop]
            labels.append(int(cls))
    return boxes, labels
