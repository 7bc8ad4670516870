"""Row accounting every stage shares: rows in = rows out + quarantined + duplicates dropped.

Spark, Beam and the shard writer all report a :class:`JobCounts` and raise
:class:`ReconciliationError` when the numbers do not add up; nothing here knows an engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["JobCounts", "ReconciliationError"]


class ReconciliationError(RuntimeError):
    """A job's counts do not add up: some rows were lost or invented."""


@dataclass(frozen=True)
class JobCounts:
    """The row accounting of one job over one dt.

    ``duplicates_by_kind`` breaks ``duplicates_dropped`` down (exact / truncation / near);
    when given, its values must add up to ``duplicates_dropped``.
    """

    job: str
    dt: str
    rows_in: int
    rows_out: int
    quarantined: int = 0
    duplicates_dropped: int = 0
    duplicates_by_kind: dict[str, int] = field(default_factory=dict)

    def check(self) -> JobCounts:
        """Return self, or raise :class:`ReconciliationError` if the numbers do not add up."""
        accounted = self.rows_out + self.quarantined + self.duplicates_dropped
        if self.rows_in != accounted:
            raise ReconciliationError(
                f"{self.job} dt={self.dt}: rows in {self.rows_in} != out {self.rows_out}"
                f" + quarantined {self.quarantined} + duplicates {self.duplicates_dropped}"
                f" ({self.rows_in - accounted:+d} unaccounted)"
            )
        if self.duplicates_by_kind and sum(self.duplicates_by_kind.values()) != self.duplicates_dropped:
            raise ReconciliationError(
                f"{self.job} dt={self.dt}: duplicates by kind {self.duplicates_by_kind}"
                f" do not add up to {self.duplicates_dropped}"
            )
        return self

    def as_dict(self) -> dict:
        return asdict(self)
