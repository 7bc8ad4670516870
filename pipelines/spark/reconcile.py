"""Row accounting: every job proves rows in = rows out + quarantined + duplicates dropped."""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass

__all__ = ["JobCounts", "ReconciliationError", "record_job_run"]


class ReconciliationError(RuntimeError):
    """A job's counts do not add up: some rows were lost or invented."""


@dataclass(frozen=True)
class JobCounts:
    job: str
    dt: str
    rows_in: int
    rows_out: int
    quarantined: int = 0
    duplicates_dropped: int = 0

    def check(self) -> JobCounts:
        """Return self, or raise :class:`ReconciliationError` if the numbers do not add up."""
        accounted = self.rows_out + self.quarantined + self.duplicates_dropped
        if self.rows_in != accounted:
            raise ReconciliationError(
                f"{self.job} dt={self.dt}: rows in {self.rows_in} != out {self.rows_out}"
                f" + quarantined {self.quarantined} + duplicates {self.duplicates_dropped}"
                f" ({self.rows_in - accounted:+d} unaccounted)"
            )
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def record_job_run(spark, db: str, run_id: str, counts: JobCounts) -> None:
    """Check the counts, then append them to the ``job_runs`` table (fails loudly if off)."""
    counts.check()
    row = [(run_id, counts.job, counts.rows_in, counts.rows_out, counts.quarantined,
            counts.duplicates_dropped, _dt.datetime.now(_dt.UTC).replace(tzinfo=None), counts.dt)]
    schema = ("run_id string, job string, rows_in bigint, rows_out bigint, quarantined bigint,"
              " duplicates_dropped bigint, finished_at timestamp, dt string")
    spark.createDataFrame(row, schema).write.insertInto(f"{db}.job_runs", overwrite=False)
