"""Fault injection for the kill -9 tests: a named point that SIGKILLs its process group.

Off unless the environment variable ``SHARDFORGE_FAULT`` is set, which only the fault
tests (``tests/integration/test_fault_kill.py``) do. Its value names one point:

* ``after:<stage>``: right after stage ``<stage>`` finished (``shardforge run``'s stage
  runner; a subcommand after its work, while it still holds the lake's lock);
* ``inside:<writer>:<n>``: the ``n``-th time (1-based, counted per process) the writer
  reaches one of its points: ``records_writer`` (:mod:`records.writer`: each shard
  written, the manifest written, the old version moved aside, staging renamed to final),
  ``encode_commit`` (:mod:`pipelines.encode.commit`), ``image_writer``
  (:mod:`pipelines.beam.image_io`: each part written, each partition's commit steps) and
  ``spark_write`` (before each Spark table write, see :mod:`pipelines.spark.session`) and
  ``artifact_write`` (:mod:`features.artifacts`: each file written, before its rename).

The point kills the whole process group with SIGKILL, as ``kill -9 -<pgid>`` would: the
Spark JVM, DataLoader or Beam workers die with it, and no ``finally`` or ``atexit`` runs.
``SHARDFORGE_FAULT_TRACE=<file>`` appends the name of every point reached to ``<file>``
(how a test finds the ``n`` of a commit step).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

__all__ = ["ENV", "fault_point", "armed"]

ENV = "SHARDFORGE_FAULT"
TRACE_ENV = "SHARDFORGE_FAULT_TRACE"

_reached: Counter = Counter()


def armed(point: str) -> bool:
    """True when ``SHARDFORGE_FAULT`` names a point of ``point`` (e.g. ``inside:spark_write``)."""
    spec = os.environ.get(ENV, "")
    return bool(spec) and (spec == point or spec.startswith(point + ":"))


def fault_point(point: str) -> None:
    """Kill this process group here if ``SHARDFORGE_FAULT`` names this occurrence of ``point``.

    Args:
        point: ``after:<stage>`` or ``inside:<writer>``; an ``inside`` point fires at the
            occurrence the variable's ``:<n>`` names (default 1).
    """
    spec = os.environ.get(ENV)
    trace = os.environ.get(TRACE_ENV)
    if not spec and not trace:
        return
    _reached[point] += 1
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(f"{point}:{_reached[point]}\n")
    if spec in (point, f"{point}:{_reached[point]}"):
        os.killpg(os.getpgrp(), signal.SIGKILL)
