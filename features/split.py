"""Stable split and shard assignment by a hash of the key column.

The same key always lands in the same split and shard, whatever engine, worker
count or input order: both come from the first 8 bytes of sha256(key), read as
an unsigned integer. Splits use its top 53 bits as a uniform number in [0, 1);
shards use the whole value modulo the shard count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

__all__ = ["assign", "key_hash"]


def key_hash(key: str) -> int:
    """A 64-bit hash of ``key`` that is stable across processes and machines."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


def assign(key: str, splits: Mapping[str, float], shards: Mapping[str, int]) -> tuple[str, int]:
    """The (split, shard index) a key belongs to.

    Args:
        key: the row's key value.
        splits: split name -> ratio (summing to 1), in a fixed order.
        shards: split name -> number of shards.
    """
    value = key_hash(key)
    point = (value >> 11) / float(1 << 53)
    cumulative = 0.0
    names = list(splits)
    chosen = names[-1]  # rounding: a point at the very top falls in the last split
    for name in names:
        cumulative += splits[name]
        if point < cumulative:
            chosen = name
            break
    return chosen, value % shards[chosen]
