"""Run a script as a real two-rank job under torchrun, for the DDP tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_two_ranks(script: Path, *args: str, timeout: float) -> None:
    """``torchrun --standalone --nproc_per_node 2 script *args``; fails the test with its stderr.

    ``--standalone`` picks a free port. The job gets its own process group, so a hung job is
    killed with both of its ranks when ``timeout`` runs out.
    """
    run_ranks(script, *args, nproc=2, timeout=timeout)


def run_ranks(script: Path, *args: str, nproc: int, timeout: float) -> None:
    """:func:`run_two_ranks` with ``nproc`` ranks."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(nproc), str(script), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr[-3000:]
