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
        False at the first value outside ``[0, width)``, with ``counts`` half filled: the
        caller drops it and counts the batch its other way.
    """
    width = counts.shape[1]
    for r in range(len(row_split)):
        s = row_split[r]
        for j in range(offsets[r], offsets[r + 1]):
            v = values[j]
            if v < 0 or v >= width:
                return False
            counts[s, v] += 1
    return True
