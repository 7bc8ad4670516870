"""One writer per lake: ``_system/lock.json`` names who holds it.

Every command that writes the lake (``sample``, ``ingest``, ``clean``, ``images``, ``encode``,
``train``, ``tokens``, ``validate``, ``run``, ``submit``) takes the lock first; readers
(``records inspect/verify``, ``report``, ``dedup explain``) never do. A second writer fails
within a second with :class:`LakeLockedError` naming the holder (pid, host, command, since
when), or waits for it with ``--wait``.

The lock file holds the holder's pid, host, command, start time and a heartbeat that a
daemon thread refreshes every :data:`HEARTBEAT_S` seconds. It is **stale** — and the next
writer takes it over, saying so — when its holder is on this host and its pid is gone (a
killed run), or when its heartbeat is older than :data:`STALE_AFTER_S` (a holder on another
host that died). On a local lake the file is created with ``O_EXCL``, so two writers never
both win; on ``hdfs://`` the create is checked, then written (HDFS has no exclusive create
through fsspec), which leaves a window of milliseconds.

The Airflow DAG does not take the lock: the scheduler already runs one DAG run at a time
(``max_active_runs=1``) and its tasks in dependency order.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from core.lake import Lake

__all__ = ["HEARTBEAT_S", "STALE_AFTER_S", "LakeLock", "LakeLockedError", "LockHolder"]

HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0  # ten missed heartbeats: the holder is gone


class LakeLockedError(RuntimeError):
    """Another live process holds the lake's lock; the message names it."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lake's lock (what ``_system/lock.json`` holds)."""

    pid: int
    host: str
    command: str
    started_at: str  # ISO 8601, UTC
    heartbeat: float  # time.time() of the last refresh

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} ({self.command}) since {self.started_at}"

    def is_stale(self, now: float | None = None) -> bool:
        """Gone: a pid of this host that no longer runs, or a heartbeat too old."""
        if self.host == socket.gethostname() and not _pid_alive(self.pid):
            return True
        return (now if now is not None else time.time()) - self.heartbeat > STALE_AFTER_S


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


class LakeLock:
    """The lake's writer lock as a context manager.

    Args:
        lake: the lake to lock.
        command: what the holder is doing, shown to whoever waits (``shardforge run``).
        wait: wait for a live holder to finish instead of failing.
        poll_s: how often a waiting writer looks again.
        on_wait: told once, with the holder, when this writer starts waiting.
        on_stale: told when a stale lock is taken over.

    Raises:
        LakeLockedError: on entry, when a live process holds the lock and ``wait`` is off.
    """

    def __init__(self, lake: Lake, command: str, *, wait: bool = False, poll_s: float = 1.0,
                 on_wait: Callable[[LockHolder], None] | None = None,
                 on_stale: Callable[[LockHolder], None] | None = None) -> None:
        self.lake, self.command, self.wait, self.poll_s = lake, command, wait, poll_s
        self.on_wait, self.on_stale = on_wait, on_stale
        self.uri = f"{lake.system()}/lock.json"
        self._path = lake.fs_path(self.uri)
        self._me: LockHolder | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def holder(self) -> LockHolder | None:
        """The current holder, or None when the lake is not locked (or the file is unreadable)."""
        try:
            with self.lake.fs.open(self._path, "r") as handle:
                return LockHolder(**json.load(handle))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):  # half-written by a holder killed mid-write: stale
            return LockHolder(pid=-1, host="?", command="?", started_at="?", heartbeat=0.0)

    def __enter__(self) -> LakeLock:
        told = False
        while not self._try_create():
            held = self.holder()
            if held is None:
                continue  # released between our attempt and the read: try again
            if held.is_stale():
                if self.on_stale is not None:
                    self.on_stale(held)
                self._remove()
                continue
            if not self.wait:
                raise LakeLockedError(
                    f"lake {self.lake.root} is locked by {held.describe()}: one writer at a "
                    f"time; wait for it with --wait, or delete {self.uri} if that process is gone")
            if not told and self.on_wait is not None:
                self.on_wait(held)
                told = True
            time.sleep(self.poll_s)
        self._beat = threading.Thread(target=self._heartbeat, name="lake-lock", daemon=True)
        self._beat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        held = self.holder()
        if held is not None and self._me is not None and (held.pid, held.host) == (
                self._me.pid, self._me.host):
            self._remove()

    @staticmethod
    def _body(holder: LockHolder) -> bytes:
        return json.dumps(asdict(holder), sort_keys=True).encode("utf-8")

    def _try_create(self) -> bool:
        """Create the lock file if there is none; True when this process now holds it."""
        me = LockHolder(os.getpid(), socket.gethostname(), self.command,
                        _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), time.time())
        self._me = me
        self.lake.fs.makedirs(self.lake.fs_path(self.lake.system()), exist_ok=True)
        if self.lake.is_local:
            try:
                fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(self._body(me))
            return True
        if self.lake.fs.exists(self._path):
            return False
        with self.lake.fs.open(self._path, "wb") as handle:
            handle.write(self._body(me))
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            me = self._me = LockHolder(**{**asdict(self._me), "heartbeat": time.time()})
            tmp = f"{self._path}.beat-{os.getpid()}"
            with self.lake.fs.open(tmp, "wb") as handle:
                handle.write(self._body(me))
            self.lake.fs.mv(tmp, self._path)

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.lake.fs.rm(self._path)
