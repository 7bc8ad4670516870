"""``shardforge submit spark <job>``: build and run a real ``spark-submit`` command.

The project ships as a zip on ``--py-files`` (the packages ``core``, ``features``, ``pipelines``,
``records`` and ``shardforge``, SQL files included); the entry script is :mod:`shardforge.spark_jobs`.
Two profiles:

* ``local``: ``--master`` from ``spark.master`` (``local[2]``), Python = this interpreter.
* ``yarn``: ``--master yarn --deploy-mode cluster``, a venv-pack archive of the
  dependencies as ``--archives env.tar.gz#env`` with ``PYSPARK_PYTHON=./env/bin/python``
  on the application master and the executors, queue and executor sizes from
  ``spark.yarn``, and the config file shipped with ``--files``.

``submit_command`` only builds the list (tested as is); ``submit`` also runs it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from core.config import ShardforgeConfig
from shardforge.spark_jobs import JOBS

__all__ = ["PACKAGES", "PROFILES", "build_pyfiles_zip", "spark_submit_path", "submit", "submit_command"]

PROFILES = ("local", "yarn")
# The encode jobs' workers import features/ and records/ too (not in the YARN env archive).
PACKAGES = ("core", "features", "pipelines", "records", "shardforge")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENTRY_SCRIPT = Path(__file__).with_name("spark_jobs.py")
_SHIPPED = (".py", ".sql")


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


def submit_command(cfg: ShardforgeConfig, *, job: str, config_path: str | Path, pyfiles: str | Path,
                   profile: str = "local", lake_root: str | None = None, dts: list[str] | None = None,
                   spark_submit: str | Path | None = None) -> list[str]:
    """The ``spark-submit`` argv for ``job`` under ``profile``.

    Args:
        cfg: the config (master, app name, extra conf, the ``spark.yarn`` profile).
        job: one of :data:`shardforge.spark_jobs.JOBS`.
        config_path: the config file the job loads (shipped with ``--files`` on YARN).
        pyfiles: the project zip (:func:`build_pyfiles_zip`).
        profile: ``local`` or ``yarn``.
        lake_root: the lake root the job uses (default: ``lake.root`` of the config).
        dts: the dt partitions to process (default: all present).
        spark_submit: the executable (default: the one bundled with pyspark).

    Raises:
        ValueError: an unknown job or profile.
    """
    if job not in JOBS:
        raise ValueError(f"unknown Spark job {job!r} (expected one of {', '.join(JOBS)})")
    if profile not in PROFILES:
        raise ValueError(f"unknown submit profile {profile!r} (expected one of {', '.join(PROFILES)})")
    command = [str(spark_submit or spark_submit_path())]
    conf: dict[str, str] = {}
    if profile == "yarn":
        yarn = cfg.spark.yarn
        command += [
            "--master", "yarn", "--deploy-mode", "cluster",
            "--name", f"{cfg.spark.app_name}-{job}",
            "--queue", yarn.queue,
            "--driver-memory", yarn.driver_memory,
            "--executor-memory", yarn.executor_memory,
            "--executor-cores", str(yarn.executor_cores),
            "--num-executors", str(yarn.num_executors),
            "--archives", f"{yarn.env_archive}#env",
            "--files", str(config_path),
        ]
        conf["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] = "./env/bin/python"
        conf["spark.executorEnv.PYSPARK_PYTHON"] = "./env/bin/python"
        job_config = Path(config_path).name  # --files puts it in the container's working dir
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


def submit(cfg: ShardforgeConfig, *, job: str, config_path: str | Path, profile: str = "local",
           lake_root: str | None = None, dts: list[str] | None = None, dry_run: bool = False,
           echo=print) -> int:
    """Zip the project, build the command, print it and (unless ``dry_run``) run it.

    Returns:
        ``spark-submit``'s exit code (0 for a dry run).
    """
    with tempfile.TemporaryDirectory(prefix="shardforge-submit-") as tmp:
        pyfiles = build_pyfiles_zip(Path(tmp) / "shardforge.zip")
        command = submit_command(cfg, job=job, config_path=config_path, pyfiles=pyfiles,
                                 profile=profile, lake_root=lake_root, dts=dts)
        echo(" ".join(command))
        if dry_run:
            return 0
        return subprocess.run(command, check=False).returncode
