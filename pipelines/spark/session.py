"""The SparkSession every Spark job of shardforge runs in.

Locally: ``local[*]`` with Hive support, an embedded Derby metastore under the
lake's ``_system/`` folder and the warehouse inside the lake, so tables survive
between runs exactly like on a cluster. On a cluster: the master, a remote
metastore (``hive.metastore.uris``) and any extra conf come from the config.
Under ``spark-submit`` the driver loads the config ``shardforge submit`` wrote for the
job (its master, and its conf sized from the input), so what the builder sets here equals
what the command line set.

The embedded Derby metastore admits one JVM at a time. The driver is the only JVM that
opens it: locally, and in client mode on a standalone cluster, the driver runs on this
machine (and the lake's lock keeps a second driver out); executors read and write table
files, never the catalog.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from core.config import SparkConfig
from core.engines import require
from core.lake import Lake
from records.faults import armed, fault_point

__all__ = ["QUIET_LOG4J", "build_session", "local_cores", "session_conf"]

# Errors only on the driver's stderr (see the file); SHARDFORGE_VERBOSE=1 keeps Spark's default.
QUIET_LOG4J = Path(__file__).resolve().with_name("log4j2-quiet.properties")


def local_cores(master: str) -> int | None:
    """The worker threads of a ``local``, ``local[N]``, ``local[*]`` or ``local[N, F]`` master; else None."""
    match = re.fullmatch(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?", master.strip())
    if not match:
        return None  # yarn, k8s, spark://, local-cluster[…]
    threads = match.group(1) or "1"
    return (os.cpu_count() or 1) if threads == "*" else int(threads)


def session_conf(spark: SparkConfig, lake: Lake) -> dict[str, str]:
    """The Spark conf shardforge sets, as a dict (also used to build spark-submit commands)."""
    conf = {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": lake.warehouse(),
        # A re-run of a dt replaces exactly that dt's partitions, never the whole table.
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        # dt=2026-11-01 stays a string partition value, as the Hive tables declare it.
        "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        # Raw corpora are many small files (a feed dump is a few KB). At the default 4 MB
        # "open cost" Spark packs 32 of them per task, so 8k dumps became 240 tasks and 240
        # tiny Parquet files in raw_feeds; at 64 KB a task reads ~128 MB of dumps.
        "spark.sql.files.openCostInBytes": str(64 * 1024),
    }
    java_options = []
    # The driver runs here (local, or client mode on a standalone cluster): its console is ours.
    if spark.master.startswith(("local", "spark://")) and not os.environ.get("SHARDFORGE_VERBOSE"):
        java_options.append(f"-Dlog4j2.configurationFile={QUIET_LOG4J.as_uri()}")
    if spark.metastore_uri:
        conf["spark.hadoop.hive.metastore.uris"] = spark.metastore_uri
    else:
        metastore = lake.metastore()
        conf["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
            f"jdbc:derby:;databaseName={metastore};create=true"
        )
        # derby.log lands next to the metastore, not in whatever folder we were started from.
        java_options.append(f"-Dderby.system.home={metastore.parent}")
    if spark.master.startswith("local"):
        # Python workers must run the interpreter that has our packages (pandas for the
        # Arrow UDFs), not whatever "python3" is first on PATH.
        conf["spark.pyspark.python"] = sys.executable
        conf["spark.pyspark.driver.python"] = sys.executable
        # At least 4 file splits per core. Spark's default (one per core, 128 MB at most)
        # read 345 MB of feed dumps as 3 tasks on 2 cores, and each table written from them
        # kept 3 files (one Parquet row group each), so every stage after ingest ran 3
        # tasks: one core idled through the third. Large inputs still split at 128 MB.
        if cores := local_cores(spark.master):
            conf["spark.sql.files.minPartitionNum"] = str(4 * cores)
            # Two tasks per core: tiny local corpora would run 200 mostly empty tasks at
            # Spark's default. The cluster profiles size this from the input instead.
            conf["spark.sql.shuffle.partitions"] = str(2 * cores)
    if java_options:
        conf["spark.driver.extraJavaOptions"] = " ".join(java_options)
    # The console progress bar would interleave with our own progress lines on stderr.
    conf["spark.ui.showConsoleProgress"] = "false"
    conf.update(spark.conf)
    return conf


def _fault_before_writes() -> None:
    """Put :func:`records.faults.fault_point` ``inside:spark_write`` before each table write."""
    from pyspark.sql import DataFrameWriter

    for name in ("insertInto", "saveAsTable"):
        write = getattr(DataFrameWriter, name)

        def before(self, *args, _write=write, **kwargs):
            fault_point("inside:spark_write")
            return _write(self, *args, **kwargs)
        setattr(DataFrameWriter, name, before)


def build_session(spark: SparkConfig, lake: Lake, *, submitted: bool = False):
    """Get or create the SparkSession for ``lake`` and make sure its database exists.

    Args:
        spark: master, database, metastore and extra conf.
        lake: the lake whose warehouse (and local metastore) the session uses.
        submitted: running under ``spark-submit``: its ``--master``, ``--name`` and Python
            settings win, so the config's master, app name and interpreter are not set here.

    Returns:
        A ``pyspark.sql.SparkSession`` with Hive support.

    Raises:
        MissingEngineError: pyspark is not installed (``pip install 'shardforge[spark]'``).
    """
    require("pyspark", for_what="the Spark stages")
    from pyspark.sql import SparkSession

    local = spark.master.startswith("local") and not submitted
    if local:
        # The JVM starts Python workers from its environment, inherited from ours.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder
    if not submitted:  # else spark-submit's --master and --name (shardforge-<job>) stand
        builder = builder.appName(spark.app_name).master(spark.master)
    if lake.is_local and not spark.metastore_uri:
        lake.metastore().parent.mkdir(parents=True, exist_ok=True)
    for key, value in session_conf(spark, lake).items():
        if submitted and key.startswith("spark.pyspark."):
            continue
        builder = builder.config(key, value)
    session = builder.enableHiveSupport().getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    if armed("inside:spark_write"):  # kill -9 tests only: a point before every table write
        _fault_before_writes()
    session.sql(
        f"CREATE DATABASE IF NOT EXISTS {spark.database} LOCATION '{lake.database(spark.database)}'"
    )
    return session
