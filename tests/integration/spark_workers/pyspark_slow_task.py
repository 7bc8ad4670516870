"""A PySpark Python worker that sleeps before every task (tests only).

Set as ``spark.python.worker.module`` (PySpark's daemon imports a worker module only when
its name starts with ``pyspark``), with this folder on the executors' ``PYTHONPATH`` and
``SHARDFORGE_TEST_TASK_DELAY_S`` in their environment: every Python task then runs for at
least that long, so a test can kill a worker while its tasks are surely running.
"""

from __future__ import annotations

import os
import time

from pyspark.worker import main as _pyspark_main

__all__ = ["main"]


def main(infile, outfile) -> None:
    """Sleep, then run the task as PySpark's own worker would."""
    time.sleep(float(os.environ.get("SHARDFORGE_TEST_TASK_DELAY_S", "0")))
    _pyspark_main(infile, outfile)
