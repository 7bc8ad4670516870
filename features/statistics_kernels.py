"""The one loop of :mod:`features.statistics` that numpy cannot do in a single pass: numba.

Counting the token ids of a batch per split is, in numpy, a ``bincount`` of every id and
then of each smaller split's ids again (a filtered copy); here it is one walk over the rows.
Imported only where numba is installed (the Spark and Beam workers; see setup.cfg's
extras); elsewhere :mod:`features.statistics` takes its numpy path, with the same counts.
``cache=True`` keeps the machine code in ``__pycache__`` beside this file (where that is
read-only, each worker compiles the kernel once, in about a second).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["count_list_values"]


@numba.njit(cache=True, nogil=True)
def count_list_values(values, offsets, row_split, counts):
    """``counts[row_split[r], v] += 1`` for every value ``v`` of row ``r``.

    Args:
        values: the list column's child values (integers).
        offsets: ``rows + 1`` offsets into ``values`` (Arrow's list offsets).
        row_split: each row's split index (a row of ``counts``).
        counts: int64 ``(splits, width)``, zeros, added to in place.

    Returns:
        False at the first value outside ``[0, width)``, with ``counts`` untouched: the
        caller then counts the batch its other way.

    Two histograms per split, one for even and one for odd positions, summed at the end:
    two equal ids in a row (a run of spaces) then never wait for each other's increment,
    which makes the loop about a third faster on text.
    """
    width = counts.shape[1]
    lanes = np.zeros((counts.shape[0], 2, width), np.int64)
    for r in range(len(row_split)):
        s = row_split[r]
        j, end = offsets[r], offsets[r + 1]
        while j + 1 < end:
            a, b = values[j], values[j + 1]
            if a < 0 or a >= width or b < 0 or b >= width:
                return False
            lanes[s, 0, a] += 1
            lanes[s, 1, b] += 1
            j += 2
        if j < end:
            if values[j] < 0 or values[j] >= width:
                return False
            lanes[s, 0, values[j]] += 1
    for s in range(counts.shape[0]):
        for v in range(width):
            counts[s, v] += lanes[s, 0, v] + lanes[s, 1, v]
    return True
