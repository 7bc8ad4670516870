"""What a training run reports: ``metrics.jsonl`` lines, interval timers and a progress bar.

The trainer syncs the device only on log steps, so throughput is measured per
interval (from one metrics line to the next), never per unsynchronized step.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

import torch

from records.uri import open_uri, resolve

__all__ = ["IntervalTimer", "MetricsLog", "ProgressBar", "step_record", "throughput_after"]


class IntervalTimer:
    """Wall time and time blocked on the data iterator since the last :meth:`lap`."""

    def __init__(self) -> None:
        self.start = self._t0 = time.perf_counter()
        self._wait = 0.0
        self.steps = 0  # optimizer steps in the current interval

    def add_wait(self, seconds: float) -> None:
        self._wait += seconds

    def lap(self) -> tuple[float, float]:
        """Returns ``(interval seconds, input-wait seconds)`` and starts a new interval."""
        now = time.perf_counter()
        dt, wait = now - self._t0, self._wait
        self._t0, self._wait, self.steps = now, 0.0, 0
        return dt, wait

    @property
    def elapsed(self) -> float:
        """Seconds since the timer was created."""
        return time.perf_counter() - self.start


class MetricsLog:
    """Appends JSON lines to ``metrics.jsonl``; on resume drops lines after the checkpoint.

    Args:
        uri: the metrics file.
        enabled: False on DDP ranks other than 0 (they write nothing).
        resume_step: keep existing lines with ``step <= resume_step``; 0 starts afresh.
    """

    def __init__(self, uri: str, *, enabled: bool = True, resume_step: int = 0) -> None:
        self.uri, self.enabled = uri, enabled
        self._file: IO[str] | None = None
        if not enabled:
            return
        kept: list[str] = []
        fs, path = resolve(uri)
        if resume_step > 0 and fs.exists(path):
            with open_uri(uri, "r") as f:
                for line in f:
                    line = line.strip()
                    if line and json.loads(line).get("step", 0) <= resume_step:
                        kept.append(line)
        self._file = open_uri(uri, "w")
        for line in kept:
            self._file.write(line + "\n")
        self._file.flush()

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ProgressBar:
    """A tqdm bar on stderr (or nothing when disabled or tqdm is missing).

    Args:
        total: optimizer steps of the run; initial: steps already done (resume).
        enabled: True / False, or None = only when stderr is a terminal.
    """

    def __init__(self, *, total: int, initial: int, enabled: bool | None) -> None:
        show = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None
        if show:
            try:
                from tqdm import tqdm
            except ImportError:  # GPU images may lack tqdm: train without a bar
                return
            self._bar = tqdm(total=total, initial=initial, file=sys.stderr, unit="step",
                             dynamic_ncols=True)

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def update(self, record: dict[str, Any] | None = None) -> None:
        """One step done; ``record`` (a metrics line) updates the postfix."""
        if self._bar is None:
            return
        if record is not None:
            post = {"loss": f"{record['loss']:.4f}"}
            if "tokens_per_s" in record:
                post["tok/s"] = f"{record['tokens_per_s']:.0f}"
            if "images_per_s" in record:  # the vision models' records
                post["img/s"] = f"{record['images_per_s']:.0f}"
            if record.get("mfu") is not None:
                post["mfu"] = f"{record['mfu']:.1%}"
            self._bar.set_postfix(post, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def step_record(
    step: int, loss: float, lr: float, timer: IntervalTimer, *, items_per_step: int,
    world_size: int, unit: str, scaler: torch.amp.GradScaler, skipped: int,
) -> tuple[dict[str, Any], float]:
    """One metrics line; throughput is over the steps since the previous line.

    Args:
        items_per_step: examples one rank consumes per optimizer step.
        unit: what an example is ("tokens", "images"): the rate is ``<unit>_per_s``.

    Returns:
        The line and the per-rank rate (examples per second of one rank).
    """
    steps = timer.steps
    dt, wait = timer.lap()
    per_rank = steps * items_per_step / dt if dt > 0 else float("inf")
    record = {
        "step": step,
        "loss": loss,
        "lr": lr,
        f"{unit}_per_s": per_rank * world_size,  # all ranks together
        "input_wait": wait / dt if dt > 0 else 0.0,  # share of wall time blocked on data
        "loss_scale": scaler.get_scale() if scaler.is_enabled() else None,
        "skipped_steps": skipped,
        "elapsed_s": timer.elapsed,
    }
    return record, per_rank


def throughput_after(metrics_uri: str, *, warmup: int, items_per_step: int, unit: str) -> dict[str, Any]:
    """Throughput and input wait of a finished run over its steps after ``warmup``.

    Reads ``metrics.jsonl``; the run must have logged step ``warmup`` and step 1
    (``log_every`` dividing ``warmup`` does it). Input wait is the time-weighted mean of
    the logged intervals' ``input_wait`` shares.

    Returns:
        ``timed_steps``, ``timed_s``, ``<unit>_per_s`` (``items_per_step`` items per step),
        ``step_ms``, ``input_wait`` (a share), ``first_step_s`` (compile included),
        ``warmup_s``, ``final_loss`` and ``skipped_steps``.
    """
    with open_uri(metrics_uri, "r") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    by_step = {m["step"]: m for m in lines}
    end, mark = lines[-1], by_step[warmup]
    timed_steps = end["step"] - warmup
    seconds = end["elapsed_s"] - mark["elapsed_s"]
    wait, prev = 0.0, mark["elapsed_s"]
    for m in lines:
        if m["step"] > warmup:
            wait += m["input_wait"] * (m["elapsed_s"] - prev)
            prev = m["elapsed_s"]
    return {
        "timed_steps": timed_steps, "timed_s": seconds,
        f"{unit}_per_s": timed_steps * items_per_step / seconds,
        "step_ms": 1e3 * seconds / timed_steps, "input_wait": wait / seconds,
        "first_step_s": by_step[1]["elapsed_s"], "warmup_s": mark["elapsed_s"],
        "final_loss": end["loss"], "skipped_steps": end["skipped_steps"],
    }
