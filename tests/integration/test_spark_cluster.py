"""A real Spark standalone cluster on this machine: `shardforge spark-cluster` and `--profile standalone`.

The cluster (a master and 2 workers of 1 core and 512m, JVMs from pyspark's jars) is driven
through the CLI in subprocesses only: this session's own SparkSession (conftest) stays the
one in-process JVM. The same sample feed corpus (the articles corpus is left out to keep
the test short: its stages add Spark jobs, not a shuffle the feeds lack) goes through ``submit
--profile local`` (``local[2]``) and through the cluster; tables and shards must come out the
same. The local run starts first and runs while the cluster comes up (the two share nothing
but the CPUs).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from core.lake import Lake
from shardforge.sample import write_sample_corpus
from shardforge.spark_cluster import leftover_processes, master_json

pytestmark = pytest.mark.integration

DT = "2026-11-01"
JOBS = ("ingest", "explode_clean", "encode")
SLOW_TASK_DIR = Path(__file__).resolve().with_name("spark_workers")  # pyspark_slow_task.py
CONFIG = """\
spark:
  conf: {{spark.ui.enabled: "false"}}
  standalone: {{master: "spark://127.0.0.1:{master}", webui_port: {webui}, workers: 2,
               worker_cores: 1, worker_memory: 512m, driver_memory: 768m}}
corpora:
  feeds: {{format: feed_dump}}
"""
# Every Python task sleeps 2 s first, and the driver's UI says which executor runs what.
SLOW_CONF = """\
  conf: {{spark.ui.enabled: "true", spark.ui.port: "{ui}",
          spark.python.worker.module: pyspark_slow_task,
          spark.executorEnv.PYTHONPATH: "{path}",
          spark.executorEnv.SHARDFORGE_TEST_TASK_DELAY_S: "2"}}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Work:
    config: Path  # the cluster's ports, 512m workers, the feeds corpus
    slow_config: Path  # the same, with slow Python tasks and the driver UI on `ui_port`
    local_lake: Path
    cluster_lake: Path
    master: str  # spark://127.0.0.1:PORT
    webui: str
    ui_port: int

    @property
    def folder(self) -> Path:
        return Lake(str(self.cluster_lake)).spark_cluster()


def _cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """The CLI in a subprocess; past ``timeout`` it gets TERM, which ends its spark-submit tree too."""
    argv = [sys.executable, "-m", "shardforge.cli", *args]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        out, err = process.communicate(timeout=60)
        err += f"\n(timed out after {timeout:.0f} s)"
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def _submit(job: str, profile: str, config: Path, lake: Path) -> subprocess.CompletedProcess:
    return _cli("submit", "spark", job, "--profile", profile, "--config", str(config),
                "--lake", str(lake))


def _run_jobs(profile: str, config: Path, lake: Path) -> list[subprocess.CompletedProcess]:
    done = []
    for job in JOBS:
        done.append(_submit(job, profile, config, lake))
        if done[-1].returncode:
            break
    return done


def _failed(runs: list[subprocess.CompletedProcess]) -> str:
    return "\n".join(f"{r.args[4]}: rc {r.returncode}\n{r.stderr[-3000:]}" for r in runs if r.returncode)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Work:
    root = tmp_path_factory.mktemp("spark-cluster")
    master, webui, ui = _free_port(), _free_port(), _free_port()
    config = root / "cluster.yaml"
    config.write_text(CONFIG.format(master=master, webui=webui))
    slow = root / "slow.yaml"
    slow.write_text(config.read_text().replace('  conf: {spark.ui.enabled: "false"}\n',
                                               SLOW_CONF.format(ui=ui, path=SLOW_TASK_DIR)))
    lakes = root / "local-lake", root / "cluster-lake"
    for lake_dir in lakes:
        lake = Lake(str(lake_dir))
        write_sample_corpus(lambda corpus, lake=lake: lake.fs_path(lake.raw(corpus, DT)), fs=lake.fs,
                            posts=240, images=6, seed=3)
    return Work(config, slow, *lakes, f"spark://127.0.0.1:{master}", f"http://127.0.0.1:{webui}", ui)


@pytest.fixture(scope="module")
def reference(work):
    """The three jobs through ``submit --profile local`` (local[2]), running in the background."""
    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(_run_jobs, "local", work.config, work.local_lake)


@pytest.fixture(scope="module")
def cluster(work, reference):  # reference first: it runs while the JVMs start
    started = _cli("spark-cluster", "start", "--workers", "2", "--config", str(work.config),
                   "--lake", str(work.cluster_lake))
    assert started.returncode == 0, started.stderr[-3000:]
    yield started
    _cli("spark-cluster", "stop", "--config", str(work.config), "--lake", str(work.cluster_lake))


@pytest.fixture(scope="module")
def cluster_runs(work, cluster):
    return _run_jobs("standalone", work.config, work.cluster_lake)


def _tables(lake_dir: Path) -> dict[str, list[str]]:
    """Every warehouse table as sorted JSON rows (lake root masked, run ids and times dropped)."""
    root = Lake(str(lake_dir)).root
    out = {}
    for folder in sorted((lake_dir / "warehouse" / "shardforge.db").iterdir()):
        table = ds.dataset(folder, format="parquet", partitioning="hive").to_table()
        table = table.drop_columns([c for c in ("run_id", "finished_at") if c in table.column_names])
        out[folder.name] = sorted(json.dumps(row, default=str, ensure_ascii=False).replace(root, "<lake>")
                                  for row in table.to_pylist())
    return out


def _shards(lake_dir: Path) -> dict[str, str]:
    dataset = lake_dir / "records" / "posts" / "v=1"
    return {p.relative_to(dataset).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(dataset.glob("split=*/part-*"))}


# -- usage errors: one line, exit 2, no cluster needed --------------------------------------


def _config(tmp_path: Path, master: str, webui: int) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f'spark: {{standalone: {{master: "{master}", webui_port: {webui}}}}}\n')
    return path


def test_start_binds_to_loopback_only(tmp_path):
    result = _cli("spark-cluster", "start", "--config", str(_config(tmp_path, "spark://10.1.2.3:7077", 8080)),
                  "--lake", str(tmp_path / "lake"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "spark.standalone.master" in result.stderr
    assert "127.0.0.1 only" in result.stderr


def test_start_names_a_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = _config(tmp_path, f"spark://127.0.0.1:{_free_port()}", port)
        result = _cli("spark-cluster", "start", "--config", str(config), "--lake", str(tmp_path / "lake"))
    assert result.returncode == 2
    assert f"spark.standalone.webui_port: port {port} on 127.0.0.1 is in use" in result.stderr
    assert not leftover_processes(Lake(str(tmp_path / "lake")))


def test_standalone_submit_without_a_master_and_status_of_nothing(tmp_path):
    config = _config(tmp_path, f"spark://127.0.0.1:{_free_port()}", _free_port())
    lake = tmp_path / "lake"
    result = _submit("ingest", "standalone", config, lake)
    assert result.returncode == 2 and result.stderr.count("\n") == 2  # the sizing line, the error
    assert "spark.standalone.master: no Spark master answers at spark://127.0.0.1:" in result.stderr
    status = _cli("spark-cluster", "status", "--config", str(config), "--lake", str(lake))
    assert status.returncode == 1 and "no Spark cluster started under" in status.stdout


def test_a_terminated_submit_takes_its_spark_submit_tree_with_it(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = ("from shardforge.submit import run_submit; import sys; sys.exit(run_submit("
              f"['sh', '-c', 'sleep 300 & echo $! > {pid_file}; wait'], grace_s=5))")
    submit = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchild = int(pid_file.read_text())
    submit.terminate()
    assert submit.wait(timeout=60) == 128 + signal.SIGTERM
    time.sleep(0.5)
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(grandchild)], capture_output=True, text=True)
    assert state.stdout.strip()[:1] in ("", "Z")  # Z, Zs…: dead, not reaped yet


# -- the cluster -------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_worker_cluster_writes_what_local_writes(work, cluster, cluster_runs, reference):
    assert not _failed(cluster_runs), _failed(cluster_runs)
    command = cluster_runs[0].stdout.splitlines()[0].split()
    assert command[command.index("--master") + 1] == work.master
    assert command[command.index("--deploy-mode") + 1] == "client" and "--py-files" in command
    apps = (master_json(work.webui) or {}).get("completedapps", [])
    assert sorted(a["name"] for a in apps) == sorted(f"shardforge-{job}" for job in JOBS)
    assert {a["cores"] for a in apps} == {2}  # every job had an executor on each worker
    local = reference.result()
    assert not _failed(local), _failed(local)
    tables, shards = _tables(work.cluster_lake), _shards(work.cluster_lake)
    assert {"raw_feeds", "posts", "clean_posts", "quarantine", "duplicates", "dedup_index",
            "documents", "job_runs"} <= set(tables)
    assert tables == _tables(work.local_lake)
    assert len(shards) == 10 and shards == _shards(work.local_lake)  # 5 shards, 5 indexes


def _procs() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of this user's processes."""
    out = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        out[int(entry.name)] = (int(stat[stat.rindex(")") + 2:].split()[1]), cmdline)
    return out


def _holds(pid: int, fragment: str) -> bool:
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        try:
            if fragment in os.readlink(fd):
                return True
        except OSError:
            continue
    return False


def _executor_tasks(ui_port: int) -> dict[str, int]:
    """executor id -> its running tasks, from the driver's REST API ({} while it is not up)."""
    base = f"http://127.0.0.1:{ui_port}/api/v1/applications"
    try:
        with urllib.request.urlopen(base, timeout=2) as response:
            app = json.load(response)[0]["id"]
        with urllib.request.urlopen(f"{base}/{app}/executors", timeout=2) as response:
            return {e["id"]: e["activeTasks"] for e in json.load(response)}
    except (OSError, ValueError, IndexError, KeyError):
        return {}


@pytest.mark.slow
def test_killing_a_worker_mid_job_completes_it_on_the_other(work, cluster_runs, reference):
    assert not _failed(cluster_runs), _failed(cluster_runs)
    victim = int((work.folder / "worker-2.pid").read_text())
    lake = str(work.cluster_lake)
    job = subprocess.Popen([sys.executable, "-m", "shardforge.cli", "submit", "spark", "encode",
                            "--profile", "standalone", "--config", str(work.slow_config),
                            "--lake", lake], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, executor = time.monotonic() + 600, None
    while job.poll() is None and time.monotonic() < deadline:
        procs = _procs()
        executor = next((c.split("--executor-id ")[1].split()[0] for ppid, c in procs.values()
                         if ppid == victim and "CoarseGrainedExecutorBackend" in c), None)
        if executor is not None and _executor_tasks(work.ui_port).get(executor, 0) > 0:
            break
        time.sleep(0.2)
    assert job.poll() is None and executor is not None, "no task ran on worker 2 while the job ran"
    # The embedded metastore: the driver (client mode, this machine) holds it; no executor does.
    driver = [pid for pid, (_, c) in procs.items() if "deploy.SparkSubmit" in c and lake in c]
    assert len(driver) == 1 and _holds(driver[0], "metastore_db")
    cluster_pids = leftover_processes(Lake(lake))
    assert len(cluster_pids) >= 5 and not any(_holds(p, "metastore_db") for p in cluster_pids)
    os.killpg(victim, signal.SIGKILL)  # the Worker JVM and its executor: one process group
    out, err = job.communicate(timeout=600)
    assert job.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["stages"][0]["rows_out"] > 0
    assert _shards(work.cluster_lake) == _shards(work.local_lake)
    assert (master_json(work.webui) or {}).get("aliveworkers") == 1


@pytest.mark.slow
def test_stop_leaves_no_process_behind(work, cluster):
    pids = [int(p.read_text()) for p in work.folder.glob("*.pid")]
    assert pids and leftover_processes(Lake(str(work.cluster_lake)))
    stopped = _cli("spark-cluster", "stop", "--config", str(work.config), "--lake", str(work.cluster_lake))
    assert stopped.returncode == 0, stopped.stderr
    for pid in pids:  # gone, or a zombie its new parent has not reaped yet
        state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True)
        assert state.stdout.strip()[:1] in ("", "Z"), f"pid {pid} still runs: {state.stdout}"
    assert not leftover_processes(Lake(str(work.cluster_lake))) and not list(work.folder.glob("*.pid"))
    assert not [c for _, c in _procs().values() if "org.apache.spark.deploy." in c and work.master in c]
    assert (work.folder / "master.log").stat().st_size > 0  # the logs stay
    status = _cli("spark-cluster", "status", "--config", str(work.config), "--lake", str(work.cluster_lake))
    assert status.returncode == 1
