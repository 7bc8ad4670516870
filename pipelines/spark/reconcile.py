"""``job_runs``: the Spark jobs' row accounting (:class:`core.accounting.JobCounts`) as a Hive table."""

from __future__ import annotations

import datetime as _dt

from core.accounting import JobCounts

__all__ = ["record_job_run"]


def record_job_run(spark, db: str, run_id: str, counts: JobCounts) -> None:
    """Check the counts, then append them to the ``job_runs`` table (fails loudly if off)."""
    counts.check()
    row = [(run_id, counts.job, counts.rows_in, counts.rows_out, counts.quarantined,
            counts.duplicates_dropped, _dt.datetime.now(_dt.UTC).replace(tzinfo=None),
            dict(counts.duplicates_by_kind), counts.dt)]
    schema = ("run_id string, job string, rows_in bigint, rows_out bigint, quarantined bigint,"
              " duplicates_dropped bigint, finished_at timestamp,"
              " duplicates_by_kind map<string, bigint>, dt string")
    spark.createDataFrame(row, schema).write.insertInto(f"{db}.job_runs", overwrite=False)
