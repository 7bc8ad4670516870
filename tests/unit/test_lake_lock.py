"""One writer per lake: a second writer exits 2 naming the holder, waits with --wait, and a
dead holder's lock is taken over; readers never need the lock."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.lake import Lake
from core.lake_lock import STALE_AFTER_S, LakeLock, LakeLockedError, LockHolder
from shardforge.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _hold(lake_dir: Path, seconds: float) -> subprocess.Popen:
    """A process that takes the lake's lock, says so, and holds it for ``seconds``."""
    code = ("import sys, time; from core.lake import Lake; from core.lake_lock import LakeLock\n"
            f"with LakeLock(Lake({str(lake_dir)!r}), 'shardforge run'):\n"
            "    print('held', flush=True); time.sleep(float(sys.argv[1]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(seconds)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_exits_2_at_once_naming_the_holder(tmp_path, capsys):
    holder = _hold(tmp_path / "lake", 30)
    try:
        started = time.perf_counter()
        assert main(["sample", "--lake", str(tmp_path / "lake"), "--posts", "10", "--images", "6"]) == 2
        assert time.perf_counter() - started < 5
        err = capsys.readouterr().err.replace("\n", "")
        assert f"is locked by pid {holder.pid} on {socket.gethostname()} (shardforge run)" in err
        assert "--wait" in err
        assert not (tmp_path / "lake" / "raw").exists()  # it wrote nothing
        # Readers never need the lock: report answers (no run yet), it is not refused.
        assert main(["report", "--lake", str(tmp_path / "lake")]) == 1
        assert "no completed run" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


def test_wait_lets_the_holder_finish_first(tmp_path, capsys):
    holder = _hold(tmp_path / "lake", 2)
    started = time.perf_counter()
    assert main(["sample", "--wait", "--lake", str(tmp_path / "lake"), "--posts", "10",
                 "--images", "6"]) == 0
    assert time.perf_counter() - started >= 1.0
    assert holder.wait(timeout=10) == 0
    assert "waiting for the lake's writer" in capsys.readouterr().err
    assert not (tmp_path / "lake" / "_system" / "lock.json").exists()  # released


def test_a_killed_holders_lock_is_taken_over(tmp_path, capsys):
    holder = _hold(tmp_path / "lake", 30)
    holder.kill()  # kill -9: no chance to release
    holder.wait()
    assert (tmp_path / "lake" / "_system" / "lock.json").exists()
    assert main(["sample", "--lake", str(tmp_path / "lake"), "--posts", "10", "--images", "6"]) == 0
    assert f"taking over a stale lake lock (pid {holder.pid}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("pid", "host", "age_s", "stale"),
    [
        (os.getpid(), socket.gethostname(), 0, False),
        (2**22 + 7, socket.gethostname(), 0, True),  # no such pid on this host
        (1, "elsewhere", 10, False),  # alive over there
        (1, "elsewhere", STALE_AFTER_S + 1, True),  # no heartbeat for too long
    ],
)
def test_staleness(pid, host, age_s, stale):
    holder = LockHolder(pid=pid, host=host, command="x", started_at="t",
                        heartbeat=time.time() - age_s)  # ages from now, not from collection
    assert holder.is_stale() is stale


def test_a_half_written_lock_file_counts_as_stale(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    path = tmp_path / "lake" / "_system" / "lock.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"pid": 12', encoding="utf-8")  # the holder died mid-write
    taken = []
    with LakeLock(lake, "shardforge ingest", on_stale=taken.append) as lock:
        assert lock.holder().command == "shardforge ingest"
        with pytest.raises(LakeLockedError, match=r"locked by pid \d+"):
            LakeLock(lake, "shardforge clean").__enter__()
    assert len(taken) == 1 and not path.exists()
