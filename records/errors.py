"""Corruption errors and the report that collects skipped corruption.

Kept apart from the framing code so the writer, the scanner and the reader share
one error type without import cycles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["CorruptRecordError", "CorruptionReport", "OnCorrupt", "handle_corruption"]

log = logging.getLogger(__name__)

# Machine-readable `code`s; `reason` is the human sentence.
TRUNCATED = "truncated"
BAD_LENGTH_CRC = "bad_length_crc"
BAD_DATA_CRC = "bad_data_crc"
NOT_TFRECORD = "not_tfrecord"
BAD_COMPRESSION = "bad_compression"
INDEX_MISMATCH = "index_mismatch"

OnCorrupt = str  # "raise" | "skip"


class CorruptRecordError(ValueError):
    """A TFRecord file is damaged at a known place.

    Attributes:
        path: the file (URI or path as given).
        offset: byte offset of the record's start in the uncompressed stream.
        record_index: 0-based number of the record in the file.
        reason: what is wrong, in words.
        code: one of ``truncated``, ``bad_length_crc``, ``bad_data_crc``,
            ``not_tfrecord``, ``bad_compression``, ``index_mismatch``.
        skippable: True when only this record is lost (bad data CRC); False when
            the rest of the file cannot be framed.
    """

    def __init__(self, path: str, offset: int, record_index: int, reason: str,
                 code: str = "", skippable: bool = False) -> None:
        self.path = path
        self.offset = int(offset)
        self.record_index = int(record_index)
        self.reason = reason
        self.code = code
        self.skippable = skippable
        super().__init__(f"{path}: corrupt record #{self.record_index} at offset "
                         f"{self.offset}: {reason}")

    def __reduce__(self):  # keep attributes when sent across DataLoader workers
        return (type(self), (self.path, self.offset, self.record_index, self.reason,
                             self.code, self.skippable))


@dataclass
class CorruptionReport:
    """Collects the corruption that ``on_corrupt="skip"`` stepped over.

    Pass an instance (or any callable taking a :class:`CorruptRecordError`) as
    ``report=``. Every skip is also logged as a warning, so nothing is lost
    silently even without a report.

    Attributes:
        errors: one entry per event, in file order.
    """

    errors: list[CorruptRecordError] = field(default_factory=list)

    def __call__(self, error: CorruptRecordError) -> None:
        self.errors.append(error)

    @property
    def skipped_records(self) -> int:
        """Records dropped one by one (bad data CRC)."""
        return sum(1 for e in self.errors if e.skippable)

    @property
    def truncated_files(self) -> list[str]:
        """Files whose tail could not be read (framing lost)."""
        return [e.path for e in self.errors if not e.skippable]

    def __len__(self) -> int:
        return len(self.errors)


def handle_corruption(error: CorruptRecordError, on_corrupt: str,
                      report: Callable[[CorruptRecordError], None] | None) -> None:
    """Raises ``error`` (mode "raise"), logs and reports it ("skip"), or only reports it
    ("collect", used internally to defer the decision to the consumer thread)."""
    if on_corrupt == "raise":
        raise error
    if on_corrupt == "collect":
        report(error)
        return
    what = "skipping record" if error.skippable else "ignoring the rest of the file"
    log.warning("%s; %s", error, what)
    if report is not None:
        report(error)


def check_on_corrupt(on_corrupt: str) -> None:
    """Validates the ``on_corrupt`` argument."""
    if on_corrupt not in ("raise", "skip"):
        raise ValueError(f"on_corrupt must be 'raise' or 'skip', got {on_corrupt!r}")
