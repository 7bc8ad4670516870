"""Decoded records held column-wise, and turning rows of them into batches.

A *columns* object is a plain ``dict`` name -> column, one row per record:
    * FixedLen int64/float32: ndarray ``[n, *shape]``
    * VarLen int64/float32: :class:`Ragged`
    * bytes (any spec): Python list; ``list[bytes]`` for shape ``()``,
      ``list[list[bytes]]`` otherwise.

Decoding a whole shuffle window into columns and then cutting batches out of it
keeps the per-batch work to a few array copies, independent of how records are
laid out in files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from records.spec import FeatureSpec, FixedLenFeature, VarLenFeature

__all__ = ["Ragged", "num_rows", "take_rows", "slice_rows", "concat_columns", "to_batch",
           "empty_columns"]


@dataclass
class Ragged:
    """Rows of different lengths: ``values[offsets[i]:offsets[i+1]]`` is row ``i``."""

    values: np.ndarray
    offsets: np.ndarray  # int64, n + 1 entries, offsets[0] == 0

    @classmethod
    def from_lengths(cls, values: np.ndarray, lengths: np.ndarray) -> Ragged:
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(values, offsets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, rows: np.ndarray) -> Ragged:
        lengths = self.lengths[rows]
        starts = self.offsets[:-1][rows]
        out = Ragged.from_lengths(None, lengths)
        total = int(out.offsets[-1])
        idx = np.repeat(starts - out.offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
        out.values = self.values[idx]
        return out

    def slice(self, a: int, b: int) -> Ragged:
        off = self.offsets[a:b + 1]
        return Ragged(self.values[off[0]:off[-1]], off - off[0])

    def padded(self, width: int | None, pad_value) -> tuple[np.ndarray, np.ndarray]:
        """``[n, width]`` array (rows truncated/padded) and int64 valid lengths."""
        lengths = self.lengths
        width = int(lengths.max(initial=0)) if width is None else width
        n = len(lengths)
        out = np.full((n, width), pad_value, dtype=self.values.dtype)
        valid = np.minimum(lengths, width)
        if n and width:
            mask = np.arange(width) < valid[:, None]
            src = self.offsets[:-1, None] + np.arange(width)
            out[mask] = self.values[src[mask]]
        return out, valid.astype(np.int64)


def num_rows(columns: dict) -> int:
    """Number of records in ``columns``."""
    return len(next(iter(columns.values())))


def empty_columns(spec: FeatureSpec) -> dict:
    """Zero-row columns for ``spec``."""
    out = {}
    for name, f in spec.items():
        if f.dtype == "bytes":
            out[name] = []
        elif isinstance(f, FixedLenFeature):
            out[name] = np.empty((0, *f.shape), dtype=_np_dtype(f.dtype))
        else:
            out[name] = Ragged(np.empty(0, _np_dtype(f.dtype)), np.zeros(1, np.int64))
    return out


def _np_dtype(dtype: str):
    return np.int64 if dtype == "int64" else np.float32


def take_rows(columns: dict, rows: np.ndarray) -> dict:
    """Rows ``rows`` (int array) of every column, in that order (copies)."""
    out = {}
    for name, col in columns.items():
        if isinstance(col, np.ndarray):
            out[name] = np.take(col, rows, axis=0)
        elif isinstance(col, Ragged):
            out[name] = col.take(rows)
        else:
            out[name] = [col[i] for i in rows.tolist()]
    return out


def slice_rows(columns: dict, a: int, b: int) -> dict:
    """Rows ``a:b`` of every column (views where possible)."""
    return {name: (col.slice(a, b) if isinstance(col, Ragged) else col[a:b])
            for name, col in columns.items()}


def concat_columns(parts: list[dict]) -> dict:
    """Concatenates row-wise."""
    if len(parts) == 1:
        return parts[0]
    out = {}
    for name, first in parts[0].items():
        cols = [p[name] for p in parts]
        if isinstance(first, np.ndarray):
            out[name] = np.concatenate(cols)
        elif isinstance(first, Ragged):
            out[name] = Ragged.from_lengths(np.concatenate([c.values for c in cols]),
                                            np.concatenate([c.lengths for c in cols]))
        else:
            out[name] = [x for c in cols for x in c]
    return out


def to_batch(columns: dict, spec: FeatureSpec) -> dict:
    """Batch dict for the model: see :mod:`records.spec` for what each spec becomes.

    Numeric outputs are C-contiguous numpy arrays (the reader wraps them with
    ``torch.from_numpy``); bytes stay Python lists.
    """
    out = {}
    for name, f in spec.items():
        col = columns[name]
        if isinstance(f, VarLenFeature):
            if f.dtype == "bytes":
                rows = col if f.max_len is None else [r[:f.max_len] for r in col]
                out[name] = rows
                out[f"{name}_lengths"] = np.fromiter(map(len, rows), np.int64, len(rows))
            else:
                out[name], out[f"{name}_lengths"] = col.padded(f.max_len, f.pad_value)
        elif isinstance(col, np.ndarray):
            out[name] = np.ascontiguousarray(col)
        else:
            out[name] = list(col)
    return out
