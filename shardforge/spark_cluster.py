"""``shardforge spark-cluster start|stop|status``: a Spark standalone cluster on this machine.

A master and N workers, each its own JVM started from pyspark's own jars
(``bin/spark-class org.apache.spark.deploy.master.Master`` and ``…deploy.worker.Worker``),
bound to 127.0.0.1 only: RPC, block transfer and web UIs (``--host`` and ``SPARK_LOCAL_IP``);
the master's REST submission server is off. ``shardforge submit spark JOB --profile
standalone`` then runs the jobs on it in client mode (:mod:`shardforge.submit`).
Everything the cluster writes lives under the lake's ``_system/spark-cluster/``
(:meth:`core.lake.Lake.spark_cluster`)::

    cluster.json                 what ``start`` started: master URL, web UI, pids
    master.pid   master.log      the Master JVM
    worker-1.pid worker-1.log    a Worker JVM
    worker-1/work/<app>/<exec>/  each executor's stdout and stderr (the job's own logs)
    worker-1/local/              the executors' shuffle and spill files

Every JVM starts in a session of its own (``setsid``), so its process group holds it and
the executors it launches. ``stop`` ends each group (TERM, then KILL after a grace period),
then any process still working inside the folder (PySpark's Python daemons make process
groups of their own; their working directory is the executor's), and checks that nothing
is left (:mod:`shardforge.processes` reads ``/proc``; no psutil needed).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.config import ShardforgeConfig
from core.engines import MissingEngineError, require
from core.lake import Lake
from shardforge.processes import (
    alive,
    group_alive,
    listening_ports,
    processes_in,
    read_pid,
    works_in,
)

__all__ = [
    "LOOPBACK",
    "ClusterError",
    "ClusterStatus",
    "ClusterUsageError",
    "WorkerStatus",
    "command",
    "leftover_processes",
    "master_json",
    "start",
    "status",
    "stop",
]

LOOPBACK = "127.0.0.1"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
STATE_FILE = "cluster.json"
Progress = Callable[[str], None]


class ClusterUsageError(ValueError):
    """The command cannot run as asked (already running, a port in use, a remote lake…)."""


class ClusterError(RuntimeError):
    """A JVM of the cluster failed to come up; the message names its log."""


@dataclass(frozen=True)
class WorkerStatus:
    """One worker: its pid file, and what the master says about it (None: not registered)."""

    index: int
    pid: int | None
    alive: bool
    state: str | None = None  # ALIVE, DEAD, … as the master reports it
    cores: int = 0
    cores_used: int = 0
    memory_mb: int = 0


@dataclass(frozen=True)
class ClusterStatus:
    """The cluster as its pid files and the master's ``/json/`` status see it."""

    folder: Path
    master_url: str
    webui_url: str
    master_pid: int | None
    master_alive: bool
    master_state: str | None  # ALIVE when the master answers
    workers: list[WorkerStatus] = field(default_factory=list)
    apps: list[str] = field(default_factory=list)  # "name (state, N cores)" of running apps

    @property
    def running(self) -> bool:
        """The master and every started worker run, and the master lists them ALIVE."""
        return (self.master_alive and self.master_state == "ALIVE" and bool(self.workers)
                and all(w.alive and w.state == "ALIVE" for w in self.workers))

    def lines(self) -> list[str]:
        """What ``shardforge spark-cluster status`` prints."""
        if self.master_pid is None:
            return [f"no Spark cluster started under {self.folder}"]
        master = (f"up, {self.master_state or 'not answering'}" if self.master_alive
                  else f"gone (pid {self.master_pid})")
        out = [f"master {self.master_url}: {master}, pid {self.master_pid}, "
               f"web UI {self.webui_url}, log {self.folder / 'master.log'}"]
        for w in self.workers:
            where = (f"{w.state or 'not registered'}, {w.cores_used}/{w.cores} cores used, "
                     f"{w.memory_mb} MiB" if w.alive else f"gone (pid {w.pid})")
            out.append(f"worker {w.index}: {where}, log {self.folder / f'worker-{w.index}.log'}")
        out += [f"app {app}" for app in self.apps]
        return out


def _endpoint(cfg: ShardforgeConfig) -> tuple[str, int]:
    host, port = cfg.spark.standalone.master[len("spark://"):].rsplit(":", 1)
    return host, int(port)


def _webui_url(cfg: ShardforgeConfig) -> str:
    return f"http://{_endpoint(cfg)[0]}:{cfg.spark.standalone.webui_port}"


def _folder(lake: Lake) -> Path:
    if not lake.is_local:
        raise ClusterUsageError(f"spark-cluster keeps its pids and logs under the lake's _system/: "
                                f"needs a local lake (file://…), got {lake.root}")
    return lake.spark_cluster()


def leftover_processes(lake: Lake) -> list[int]:
    """Live processes of this lake's cluster: working in, or naming, its ``_system/spark-cluster/``."""
    return processes_in(_folder(lake))


def master_json(webui_url: str, *, timeout_s: float = 2.0) -> dict | None:
    """The master's status (``<web UI>/json/``), or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{webui_url}/json/", timeout=timeout_s) as response:
            return json.load(response)
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _spark_class() -> Path:
    pyspark = require("pyspark", for_what="shardforge spark-cluster")
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        raise MissingEngineError("shardforge spark-cluster: needs Java 17 (java on PATH or JAVA_HOME)")
    return Path(pyspark.__file__).parent / "bin" / "spark-class"


def _launch(argv: list[str], *, folder: Path, name: str, env: dict[str, str]) -> int:
    """Start one JVM in a session of its own, logging to ``<name>.log``; returns its pid."""
    log = folder / f"{name}.log"
    with log.open("ab") as out:
        stamp = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        out.write(f"==== {stamp} shardforge spark-cluster start: {' '.join(argv)}\n".encode())
        out.flush()
        process = subprocess.Popen(argv, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    (folder / f"{name}.pid").write_text(f"{process.pid}\n")
    return process.pid


def _wait(what: str, ready: Callable[[], bool], pids: dict[str, int], folder: Path,
          timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        for name, pid in pids.items():
            if not alive(pid):
                raise ClusterError(f"the {name} JVM (pid {pid}) exited while waiting for {what}: "
                                   f"see {folder / f'{name}.log'}")
        if time.monotonic() > deadline:
            raise ClusterError(f"no {what} after {timeout_s:.0f} s: see the logs in {folder}")
        time.sleep(0.25)


def start(cfg: ShardforgeConfig, lake: Lake, *, workers: int | None = None,
          progress: Progress = lambda _: None, timeout_s: float = 120.0) -> ClusterStatus:
    """Start a master and ``workers`` workers (default ``spark.standalone.workers``).

    Returns once the master lists every worker ALIVE.

    Raises:
        ClusterUsageError: a cluster already runs from this lake, a port is in use, the
            master is not ``spark://127.0.0.1:PORT`` or the lake is not local.
        MissingEngineError: pyspark or Java is missing.
        ClusterError: a JVM exited or did not register in ``timeout_s`` (whatever started is
            stopped again; its log stays).
    """
    sa = cfg.spark.standalone
    folder = _folder(lake)
    host, port = _endpoint(cfg)
    if host != LOOPBACK:
        raise ClusterUsageError(f"spark.standalone.master: {sa.master}: spark-cluster start binds "
                                f"to {LOOPBACK} only; use spark://{LOOPBACK}:{port}")
    count = workers if workers is not None else sa.workers
    if count < 1:
        raise ClusterUsageError(f"--workers: must be >= 1, got {count}")
    current = status(cfg, lake)
    if current.master_alive or any(w.alive for w in current.workers):
        raise ClusterUsageError(f"a Spark cluster already runs from {folder} (master pid "
                                f"{current.master_pid}): `shardforge spark-cluster stop` first")
    for key, number in (("spark.standalone.master", port), ("spark.standalone.webui_port",
                                                           sa.webui_port)):
        if not _port_free(number):
            raise ClusterUsageError(f"{key}: port {number} on {LOOPBACK} is in use (another "
                                    f"cluster or service); pick a free one")
    spark_class = str(_spark_class())
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("*.pid"), folder / STATE_FILE]:
        stale.unlink(missing_ok=True)
    env = {**os.environ, "SPARK_LOCAL_IP": LOOPBACK, "SPARK_DAEMON_MEMORY": sa.daemon_memory,
           "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false"}
    pids: dict[str, int] = {}
    try:
        progress(f"spark-cluster: master {sa.master} (web UI {_webui_url(cfg)})")
        pids["master"] = _launch([spark_class, MASTER_CLASS, "--host", LOOPBACK, "--port", str(port),
                                  "--webui-port", str(sa.webui_port)], folder=folder,
                                 name="master", env=env)
        _wait("master answering on its web UI", lambda: _state(cfg) == "ALIVE", pids, folder,
              timeout_s)
        for index in range(1, count + 1):
            work = folder / f"worker-{index}"
            (work / "work").mkdir(parents=True, exist_ok=True)
            (work / "local").mkdir(exist_ok=True)
            pids[f"worker-{index}"] = _launch(
                [spark_class, WORKER_CLASS, "--host", LOOPBACK, "--cores", str(sa.worker_cores),
                 "--memory", sa.worker_memory, "--webui-port", "0", "--work-dir", str(work / "work"),
                 sa.master], folder=folder, name=f"worker-{index}",
                env={**env, "SPARK_LOCAL_DIRS": str(work / "local")})
        progress(f"spark-cluster: {count} worker(s), {sa.worker_cores} core(s) and "
                 f"{sa.worker_memory} each, registering")
        _wait(f"{count} ALIVE workers", lambda: _alive_workers(cfg) >= count, pids, folder, timeout_s)
    except BaseException:
        stop(lake)
        raise
    state = {"master": sa.master, "webui": _webui_url(cfg), "pids": pids,
             "started_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    (folder / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
    return status(cfg, lake)


def _state(cfg: ShardforgeConfig) -> str | None:
    answer = master_json(_webui_url(cfg))
    return answer.get("status") if answer else None


def _alive_workers(cfg: ShardforgeConfig) -> int:
    answer = master_json(_webui_url(cfg)) or {}
    return int(answer.get("aliveworkers", 0))


def status(cfg: ShardforgeConfig, lake: Lake) -> ClusterStatus:
    """The cluster of this lake: its pid files, and the master's view of its workers."""
    folder = _folder(lake)
    state = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        state = json.loads((folder / STATE_FILE).read_text())
    master_url = state.get("master", cfg.spark.standalone.master)
    webui = state.get("webui", _webui_url(cfg))
    master_pid = read_pid(folder / "master.pid")
    master_alive = works_in(master_pid, folder)
    answer = master_json(webui) if master_alive else None
    by_port: dict[int, dict] = {}
    registered = [w for w in (answer or {}).get("workers", []) if w.get("state") == "ALIVE"]
    for worker in registered:
        by_port[int(worker["port"])] = worker
    workers = []
    for pid_file in sorted(folder.glob("worker-*.pid"), key=lambda p: int(p.stem.split("-")[1])):
        index, pid = int(pid_file.stem.split("-")[1]), read_pid(pid_file)
        running = works_in(pid, folder)
        seen = _worker_entry(pid, by_port) if running else None
        workers.append(WorkerStatus(index, pid, running, *(
            (seen["state"], int(seen["cores"]), int(seen["coresused"]), int(seen["memory"]))
            if seen else (None, 0, 0, 0))))
    apps = [f"{app.get('name')} ({app.get('state')}, {app.get('cores')} cores)"
            for app in (answer or {}).get("activeapps", [])]
    return ClusterStatus(folder, master_url, webui, master_pid, master_alive,
                         answer.get("status") if answer else None, workers, apps)


def _worker_entry(pid: int | None, by_port: dict[int, dict]) -> dict | None:
    """The master's entry for the worker JVM ``pid``: matched by the RPC port it listens on."""
    for port in listening_ports(pid):
        if port in by_port:
            return by_port[port]
    return None


def stop(lake: Lake, *, grace_s: float = 15.0, progress: Progress = lambda _: None) -> list[int]:
    """Stop the cluster of this lake: workers (and their executors) first, then the master.

    Each JVM's process group gets TERM, and KILL once ``grace_s`` has passed; then every
    process still working inside the cluster folder gets KILL. Pid files and
    ``cluster.json`` go; logs and executor logs stay.

    Returns:
        The pids (group leaders and leftovers) that were signalled.

    Raises:
        ClusterError: a process of the cluster is still alive afterwards (names the pids).
    """
    folder = _folder(lake)
    if not folder.is_dir():
        return []
    pid_files = sorted(folder.glob("worker-*.pid")) + [folder / "master.pid"]
    # Only groups led by a JVM of this folder: a stale pid file's pid may belong to anyone now.
    groups = [pid for pid in (read_pid(f) for f in pid_files) if works_in(pid, folder)]
    signalled = []
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
            signalled.append(pgid)
    deadline = time.monotonic() + grace_s
    while any(group_alive(g) for g in signalled) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pgid in signalled:
        if group_alive(pgid):
            progress(f"spark-cluster: process group {pgid} ignored TERM for {grace_s:.0f} s: KILL")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
    for pid in processes_in(folder):  # PySpark daemons (own groups) of killed executors
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            signalled.append(pid)
    deadline = time.monotonic() + 10
    while (left := processes_in(folder)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        raise ClusterError(f"processes still running in {folder} after stop: {left}")
    for path in [*pid_files, folder / STATE_FILE]:
        path.unlink(missing_ok=True)
    return signalled


def command(action: str, cfg: ShardforgeConfig, lake: Lake, *, workers: int | None = None,
            progress: Progress = print, echo: Callable[[str], None] = print) -> int:
    """``shardforge spark-cluster start|stop|status``; returns the exit code.

    ``status`` exits 1 unless the master and every worker are up and registered.
    """
    if action == "start":
        current = start(cfg, lake, workers=workers, progress=progress)
        for line in current.lines():
            echo(line)
        return 0
    if action == "stop":
        ended = stop(lake, progress=progress)
        progress(f"spark-cluster: stopped ({len(ended)} process group(s) and leftovers signalled, "
                 f"none left)" if ended else f"spark-cluster: nothing was running from {_folder(lake)}")
        return 0
    if action == "status":
        current = status(cfg, lake)
        for line in current.lines():
            echo(line)
        return 0 if current.running else 1
    raise ClusterUsageError(f"spark-cluster: unknown action {action!r} (start, stop, status)")
