"""When a join side may be broadcast: by its estimated bytes against the driver's heap.

Spark builds a broadcast side on the driver: it collects the rows, then hashes them into a
relation that every executor receives whole, so the side must fit the driver's heap a few
times over. The dedup joins used to hint broadcasts by row count (at most 2M rows), which
held at 1M posts a day and broke at 2M: ``benchmarks/scaling.py``'s second day of 2M posts
died with "Not enough memory to build and broadcast the table" in a 4 GiB driver, because
1.1M members explode into 11M band rows. Rows times an estimated row size, against a
fixed share of the heap, is what decides now; anything larger is shuffled (sort-merge),
which is slower on small data but has no size limit.

The estimate is deliberately coarse and high: an ``UnsafeRow`` of a few narrow columns
(ids, lengths, a date, a band hash or a prefix key) plus the hash relation's own per-row
cost is about 100-200 bytes; :data:`ROW_BYTES` is 192.
"""

from __future__ import annotations

__all__ = ["HEAP_SHARE", "ROW_BYTES", "broadcast_budget", "fits", "hint_if_fits"]

ROW_BYTES = 192  # a narrow row in the driver's hash relation, overheads included
HEAP_SHARE = 16  # a broadcast side may use 1/16 of the driver's max heap


def broadcast_budget(spark) -> int:
    """Bytes a broadcast side may take: the driver JVM's max heap / :data:`HEAP_SHARE`."""
    runtime = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
    return int(runtime.maxMemory()) // HEAP_SHARE


def fits(rows: int, budget: int, row_bytes: int = ROW_BYTES) -> bool:
    """True when ``rows`` rows of about ``row_bytes`` bytes fit ``budget`` bytes."""
    return rows * row_bytes <= budget


def hint_if_fits(frame, rows: int, budget: int, row_bytes: int = ROW_BYTES):
    """``frame`` with a broadcast hint when its ``rows`` fit ``budget``, else ``frame``."""
    from pyspark.sql import functions as F

    return F.broadcast(frame) if fits(rows, budget, row_bytes) else frame
