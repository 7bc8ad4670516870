"""Progress inside long Spark stages: a line now and then naming the running stage and its tasks.

Spark's console progress bar is off (it draws over our own lines), so without this a long
``explode_clean`` is silent for minutes. A daemon thread asks the SparkContext's status
tracker every ``every_s`` seconds what runs and reports it through ``report`` — one line
per active stage, only when something changed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["SparkProgress", "stage_lines"]


def stage_lines(tracker) -> list[str]:
    """``stage <id> (<name>): <done>/<total> tasks[, <n> running]`` for each active stage."""
    lines = []
    for stage_id in sorted(tracker.getActiveStageIds()):
        info = tracker.getStageInfo(stage_id)
        if info is None:
            continue
        name = info.name.split(" at ")[0]
        running = f", {info.numActiveTasks} running" if info.numActiveTasks else ""
        lines.append(f"spark stage {stage_id} ({name}): {info.numCompletedTasks}/"
                     f"{info.numTasks} tasks{running}")
    return lines


class SparkProgress:
    """Report active Spark stages through ``report`` every ``every_s`` seconds until stopped."""

    def __init__(self, spark, report: Callable[[str], None], *, every_s: float = 10.0) -> None:
        self._tracker = spark.sparkContext.statusTracker()
        self._report, self._every_s = report, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spark-progress", daemon=True)

    def start(self) -> SparkProgress:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        last: list[str] = []
        while not self._stop.wait(self._every_s):
            try:
                lines = stage_lines(self._tracker)
            except Exception:  # the session is stopping: nothing more to say
                return
            if lines and lines != last:
                for line in lines:
                    self._report(line)
            last = lines
