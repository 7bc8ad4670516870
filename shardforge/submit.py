"""``shardforge submit spark <job>``: build and run a real ``spark-submit`` command.

The project ships as a zip on ``--py-files`` (the packages ``core``, ``features``, ``pipelines``,
``records`` and ``shardforge``, SQL files included); the entry script is :mod:`shardforge.spark_jobs`.
Three profiles:

* ``local``: ``--master`` from ``spark.master`` (``local[2]``), Python = this interpreter.
* ``yarn``: ``--master yarn --deploy-mode cluster``, a venv-pack archive of the
  dependencies as ``--archives env.tar.gz#env`` with ``PYSPARK_PYTHON=./env/bin/python``
  on the application master and the executors, queue and executor sizes from
  ``spark.yarn``, and the config file shipped with ``--files``.
* ``standalone``: ``--master`` from ``spark.standalone.master`` (``shardforge spark-cluster
  start`` runs one here), ``--deploy-mode client``: the driver runs in this process tree,
  so it is the one JVM that opens an embedded Derby metastore; the executors run on the
  workers with ``spark.standalone.python`` (default: this interpreter). Every setting of
  the driver's session is on the command line, so its JVM options (the Derby home, the
  quiet log4j) apply.

On ``yarn`` and ``standalone`` the job's Spark settings are sized from its input
(:mod:`shardforge.engine_sizing`) unless the config sets them. The job loads the config as
:func:`effective_config` makes it — the profile's master, the sized settings, every file
path absolute — written next to the zip, so the driver's session asks for exactly what
the command line did, and a config that leaves ``feature_spec`` unset still finds the
embedded spec (the zip holds no ``conf/``).

``submit_command`` only builds the list (tested as is); ``submit`` also measures, writes and runs.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path

import yaml

from core.config import ShardforgeConfig
from shardforge.engine_sizing import SparkSizing
from shardforge.spark_jobs import JOBS

__all__ = ["PACKAGES", "PROFILES", "SIZED_PROFILES", "build_pyfiles_zip", "effective_config",
           "job_resources", "run_submit", "size_job", "spark_submit_path", "submit", "submit_command",
           "write_config"]

PROFILES = ("local", "yarn", "standalone")
SIZED_PROFILES = ("yarn", "standalone")
# The encode jobs' workers import features/ and records/ too (not in the YARN env archive).
PACKAGES = ("core", "features", "pipelines", "records", "shardforge")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENTRY_SCRIPT = Path(__file__).with_name("spark_jobs.py")
_SHIPPED = (".py", ".sql")
LOOPBACK = "127.0.0.1"
UNSIZED_YARN_EXECUTOR = "4g"  # yarn.executor_memory unset and the input not measured


def spark_submit_path() -> Path:
    """The ``spark-submit`` bundled with the installed pyspark."""
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-submit"


def build_pyfiles_zip(dest: Path, *, root: Path = PROJECT_ROOT) -> Path:
    """Zip :data:`PACKAGES` (their .py and .sql files) from ``root`` into ``dest``.

    Entries are sorted and time-stamped 1980-01-01, so the same sources give the same bytes.
    """
    files = sorted(
        path for package in PACKAGES for path in (root / package).rglob("*")
        if path.is_file() and path.suffix in _SHIPPED and "__pycache__" not in path.parts
    )
    if not files:
        raise ValueError(f"no sources of {PACKAGES} under {root}")
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return dest


def effective_config(cfg: ShardforgeConfig, profile: str,
                     sizing: SparkSizing | None = None) -> ShardforgeConfig:
    """The config a job runs with under ``profile``: its master, sized settings filled in.

    The sized conf goes under ``spark.conf`` beneath what the config sets (explicit keys
    win); an unset executor memory of the profile becomes the sized one (yarn: 4g, and
    standalone: a worker's memory, when there is no sizing).
    """
    spark = cfg.spark
    update: dict = {}
    if profile == "yarn":
        memory = spark.yarn.executor_memory or (_memory(sizing) if sizing else UNSIZED_YARN_EXECUTOR)
        update = {"master": "yarn", "yarn": spark.yarn.model_copy(update={"executor_memory": memory})}
    elif profile == "standalone":
        sa = spark.standalone
        memory = sa.executor_memory or (_memory(sizing) if sizing else sa.worker_memory)
        update = {"master": sa.master,
                  "standalone": sa.model_copy(update={"executor_memory": memory})}
    if sizing is not None:
        sized = sizing.conf()
        if profile == "yarn":
            sized["spark.executor.memoryOverhead"] = f"{sizing.overhead_mib}m"
        update["conf"] = {**sized, **spark.conf}
    return cfg.model_copy(update={"spark": spark.model_copy(update=update)}) if update else cfg


def _memory(sizing: SparkSizing) -> str:
    from shardforge.engine_sizing import format_mib

    return format_mib(sizing.executor_mib)


def write_config(cfg: ShardforgeConfig, dest: Path) -> Path:
    """Write ``cfg`` as YAML that :func:`core.config.load_config` reads back to the same config."""
    dest.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True),
                    encoding="utf-8")
    return dest


def submit_command(cfg: ShardforgeConfig, *, job: str, config_path: str | Path, pyfiles: str | Path,
                   profile: str = "local", lake_root: str | None = None, dts: list[str] | None = None,
                   spark_submit: str | Path | None = None,
                   sizing: SparkSizing | None = None) -> list[str]:
    """The ``spark-submit`` argv for ``job`` under ``profile``.

    Args:
        cfg: the config (master, app name, extra conf, the ``spark.yarn`` and
            ``spark.standalone`` profiles).
        job: one of :data:`shardforge.spark_jobs.JOBS`.
        config_path: the config file the job loads (shipped with ``--files`` on YARN).
        pyfiles: the project zip (:func:`build_pyfiles_zip`).
        profile: ``local``, ``yarn`` or ``standalone``.
        lake_root: the lake root the job uses (default: ``lake.root`` of the config).
        dts: the dt partitions to process (default: all present).
        spark_submit: the executable (default: the one bundled with pyspark).
        sizing: settings sized from the job's input (:func:`size_job`); None: the config's only.

    Raises:
        ValueError: an unknown job or profile.
    """
    if job not in JOBS:
        raise ValueError(f"unknown Spark job {job!r} (expected one of {', '.join(JOBS)})")
    if profile not in PROFILES:
        raise ValueError(f"unknown submit profile {profile!r} (expected one of {', '.join(PROFILES)})")
    cfg = effective_config(cfg, profile, sizing)
    command = [str(spark_submit or spark_submit_path())]
    conf: dict[str, str] = {}
    if profile == "yarn":
        yarn = cfg.spark.yarn
        command += [
            "--master", "yarn", "--deploy-mode", "cluster",
            "--name", f"{cfg.spark.app_name}-{job}",
            "--queue", yarn.queue,
            "--driver-memory", yarn.driver_memory,
            "--executor-memory", str(yarn.executor_memory),
            "--executor-cores", str(yarn.executor_cores),
            "--num-executors", str(yarn.num_executors),
            "--archives", f"{yarn.env_archive}#env",
            "--files", str(config_path),
        ]
        conf["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] = "./env/bin/python"
        conf["spark.executorEnv.PYSPARK_PYTHON"] = "./env/bin/python"
        job_config = Path(config_path).name  # --files puts it in the container's working dir
    elif profile == "standalone":
        from core.lake import Lake
        from pipelines.spark.session import session_conf

        sa = cfg.spark.standalone
        command += ["--master", sa.master, "--deploy-mode", "client",
                    "--name", f"{cfg.spark.app_name}-{job}",
                    "--driver-memory", sa.driver_memory,
                    "--executor-memory", str(sa.executor_memory),
                    "--executor-cores", str(sa.executor_cores)]
        conf.update(session_conf(cfg.spark, Lake(lake_root or cfg.lake.root)))
        if _loopback(sa.master):  # a cluster on this machine: the driver listens there only
            conf["spark.driver.host"] = conf["spark.driver.bindAddress"] = LOOPBACK
        conf["spark.pyspark.python"] = sa.python or sys.executable
        conf["spark.pyspark.driver.python"] = sys.executable
        job_config = str(config_path)
    else:
        command += ["--master", cfg.spark.master, "--name", f"{cfg.spark.app_name}-{job}"]
        conf["spark.pyspark.python"] = sys.executable
        conf["spark.pyspark.driver.python"] = sys.executable
        job_config = str(config_path)
    conf.update(cfg.spark.conf)
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    command += ["--py-files", str(pyfiles), str(ENTRY_SCRIPT), job, "--config", job_config,
                "--lake", lake_root or cfg.lake.root]
    for dt in dts or []:
        command += ["--dt", dt]
    return command


def _loopback(master: str) -> bool:
    return master[len("spark://"):].rsplit(":", 1)[0] in (LOOPBACK, "localhost")


def job_resources(cfg: ShardforgeConfig, profile: str):
    """The executors ``profile`` runs on (:class:`~shardforge.engine_sizing.Resources`).

    ``yarn``: ``spark.yarn``'s executors and cores. ``standalone``: the ALIVE workers the
    master reports on its web UI (``spark.standalone.webui_port``), else the configured ones;
    an executor's heap is capped by what one worker offers.
    """
    from shardforge.engine_sizing import Resources, parse_mib

    cap = parse_mib(cfg.spark.sizing.max_executor_memory)
    if profile == "yarn":
        yarn = cfg.spark.yarn
        return Resources(yarn.num_executors, yarn.executor_cores, cap)
    if profile != "standalone":
        raise ValueError(f"no sized resources for profile {profile!r} (sized: {SIZED_PROFILES})")
    sa = cfg.spark.standalone
    workers = [(int(w["cores"]), int(w["memory"])) for w in _alive_workers(cfg)] or [
        (sa.worker_cores, parse_mib(sa.worker_memory))] * sa.workers
    slots = [(cores // sa.executor_cores, memory) for cores, memory in workers]
    # A worker's memory is shared by the executors it runs: each gets its share at most.
    share = min((memory // n for n, memory in slots if n), default=0)
    return Resources(max(1, sum(n for n, _ in slots)), sa.executor_cores, min(cap, share or cap))


def _alive_workers(cfg: ShardforgeConfig) -> list[dict]:
    """The ALIVE workers the standalone master lists on its web UI ([] when it does not answer)."""
    from shardforge.spark_cluster import master_json

    sa = cfg.spark.standalone
    host = sa.master[len("spark://"):].rsplit(":", 1)[0]
    return [w for w in (master_json(f"http://{host}:{sa.webui_port}") or {}).get("workers", [])
            if w.get("state") == "ALIVE"]


def size_job(cfg: ShardforgeConfig, lake, *, job: str, profile: str,
             dts: list[str] | None = None) -> SparkSizing | None:
    """Measure ``job``'s input in ``lake`` and size it for ``profile``; None if nothing is there.

    Raises:
        OSError: the lake cannot be listed (an ``hdfs://`` lake without a Hadoop client).
    """
    from shardforge.engine_sizing import job_inputs, measure, size_spark

    uris = job_inputs(cfg, lake, job, dts)
    if not uris:
        return None
    return size_spark(measure(lake, uris), job_resources(cfg, profile),
                      partition_mb=cfg.spark.sizing.partition_mb)


def _check_cluster(cfg: ShardforgeConfig) -> None:
    """A master answers, and (when its web UI does) some worker can host one executor."""
    from shardforge.engine_sizing import parse_mib
    from shardforge.spark_cluster import ClusterUsageError

    sa = cfg.spark.standalone
    host, port = sa.master[len("spark://"):].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError:
        raise ClusterUsageError(
            f"spark.standalone.master: no Spark master answers at {sa.master}: start one with "
            "`shardforge spark-cluster start`, or point spark.standalone.master at yours") from None
    workers = _alive_workers(cfg)
    memory = parse_mib(sa.executor_memory) if sa.executor_memory else 0
    if workers and not any(int(w["cores"]) >= sa.executor_cores and int(w["memory"]) >= memory
                           for w in workers):
        biggest = max(workers, key=lambda w: (int(w["cores"]), int(w["memory"])))
        raise ClusterUsageError(
            f"spark.standalone: an executor of {sa.executor_cores} core(s) and {sa.executor_memory} "
            f"fits on no worker of {sa.master} (the largest offers {biggest['cores']} core(s), "
            f"{biggest['memory']} MiB): the job would wait forever")


def submit(cfg: ShardforgeConfig, *, job: str, config_path: str | Path, profile: str = "local",
           lake_root: str | None = None, dts: list[str] | None = None, dry_run: bool = False,
           echo: Callable[[str], None] = print,
           progress: Callable[[str], None] = lambda _: None) -> int:
    """Size (yarn, standalone), zip the project, write the job's config, print and run the command.

    Args:
        config_path: the config file as given; the job gets :func:`effective_config` of
            ``cfg``, written under the same name next to the zip.
        echo: gets the command line (stdout in the CLI); ``progress`` the sizing line.

    Returns:
        ``spark-submit``'s exit code (0 for a dry run).

    Raises:
        ClusterUsageError: ``standalone`` and no master answers at ``spark.standalone.master``.
    """
    from core.lake import Lake

    lake = Lake(lake_root or cfg.lake.root)
    sizing = None
    if profile in SIZED_PROFILES and cfg.spark.sizing.enabled:
        try:
            sizing = size_job(cfg, lake, job=job, profile=profile, dts=dts)
        except OSError as exc:
            progress(f"submit: the input of {job} could not be measured ({exc}): not sized")
        else:
            progress(f"submit: {job} {sizing.describe()}" if sizing else
                     f"submit: {job} has no input in {lake.root} yet: not sized")
    if profile == "standalone" and not dry_run:
        _check_cluster(effective_config(cfg, profile, sizing))
    with tempfile.TemporaryDirectory(prefix="shardforge-submit-") as tmp:
        pyfiles = build_pyfiles_zip(Path(tmp) / "shardforge.zip")
        job_config = write_config(effective_config(cfg, profile, sizing),
                                  Path(tmp) / Path(config_path).name)
        command = submit_command(cfg, job=job, config_path=job_config, pyfiles=pyfiles,
                                 profile=profile, lake_root=lake.root, dts=dts, sizing=sizing)
        echo(shlex.join(command))
        if dry_run:
            return 0
        env = dict(os.environ)
        if profile == "standalone" and _loopback(cfg.spark.standalone.master):
            env["SPARK_LOCAL_IP"] = LOOPBACK  # the driver's web UI binds there, not 0.0.0.0
        return run_submit(command, env=env)


def run_submit(command: list[str], *, env: dict[str, str] | None = None,
               grace_s: float = 30.0) -> int:
    """Run ``command`` in a session of its own and return its exit code.

    Interrupted (Ctrl-C) or terminated (SIGTERM, e.g. a scheduler's timeout), this process
    takes the whole ``spark-submit`` tree with it — the JVM and the Python driver it
    started — instead of leaving a driver running (and holding an embedded metastore)
    after ``shardforge submit`` is gone: TERM to its process group, KILL after ``grace_s``.
    """
    process = subprocess.Popen(command, env=env, start_new_session=True)
    previous = None
    if threading.current_thread() is threading.main_thread():
        def terminated(signum, _frame):
            raise SystemExit(128 + signum)
        previous = signal.signal(signal.SIGTERM, terminated)
    try:
        return process.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            _end_group(process, grace_s)


def _end_group(process: subprocess.Popen, grace_s: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue
