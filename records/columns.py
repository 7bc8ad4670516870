"""Decoded records held column-wise, and turning rows of them into batches.

A *columns* object is a plain ``dict`` name -> column, one row per record:
    * FixedLen int64/float32: ndarray ``[n, *shape]``
    * VarLen int64/float32: :class:`Ragged`
    * bytes (any spec): Python list; ``list[bytes]`` for shape ``()``,
      ``list[list[bytes]]`` otherwise; or, for scalar bytes features a decoder was asked
      to leave in place (``ExampleDecoder(spans=...)``), :class:`ByteSpans`: where each
      value lies in its record buffer, so that a batch is packed straight from the
      buffers into one uint8 array (:meth:`ByteSpans.pack`), with no per-value copy.

Decoding a whole shuffle window into columns and then cutting batches out of it
keeps the per-batch work to a few array copies, independent of how records are
laid out in files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from records.spec import FeatureSpec, FixedLenFeature, VarLenFeature

__all__ = ["ByteSpans", "Ragged", "num_rows", "take_rows", "slice_rows", "concat_columns", "to_batch",
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


@dataclass
class ByteSpans:
    """Scalar bytes values left in their buffers: row ``i`` is
    ``bufs[which[i]][starts[i]:stops[i]]`` (``bufs`` are uint8 arrays, kept alive here)."""

    bufs: list[np.ndarray]
    which: np.ndarray  # int64 [n]: index into bufs
    starts: np.ndarray  # int64 [n]
    stops: np.ndarray  # int64 [n]

    @classmethod
    def from_values(cls, values: list[bytes]) -> ByteSpans:
        """Values held as Python bytes (the protobuf path) -> one joined buffer."""
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
        stops = np.cumsum(lengths)
        buf = np.frombuffer(b"".join(values), dtype=np.uint8)
        return cls([buf], np.zeros(len(values), np.int64), stops - lengths, stops)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def lengths(self) -> np.ndarray:
        return self.stops - self.starts

    def take(self, rows: np.ndarray) -> ByteSpans:
        return ByteSpans(self.bufs, self.which[rows], self.starts[rows], self.stops[rows])

    def slice(self, a: int, b: int) -> ByteSpans:
        return ByteSpans(self.bufs, self.which[a:b], self.starts[a:b], self.stops[a:b])

    @classmethod
    def concat(cls, parts: list[ByteSpans]) -> ByteSpans:
        bufs: list[np.ndarray] = []
        which = []
        for p in parts:  # buffers are few (one per decoded piece): dedupe by identity
            ids = [next((j for j, b in enumerate(bufs) if b is buf), None) for buf in p.bufs]
            for j, i in enumerate(ids):
                if i is None:
                    ids[j] = len(bufs)
                    bufs.append(p.bufs[j])
            which.append(np.asarray(ids, dtype=np.int64)[p.which] if len(p) else p.which)
        return cls(bufs, np.concatenate(which), np.concatenate([p.starts for p in parts]),
                   np.concatenate([p.stops for p in parts]))

    def tolist(self) -> list[bytes]:
        """The values as ``list[bytes]`` (copies each value)."""
        return [self.bufs[w][s:e].tobytes() for w, s, e in
                zip(self.which.tolist(), self.starts.tolist(), self.stops.tolist(), strict=True)]

    def pack(self, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Copies row ``i`` into ``out[i, :len_i]`` and zeroes the rest of the row.

        Args:
            out: uint8 ``[n, >= longest]``, C-contiguous (e.g. shared or pinned memory);
                None = a new array of the longest row's width.

        Returns:
            ``(out, lengths)``: one memcpy per row, no intermediate ``bytes``.
        """
        lengths = self.lengths
        width = int(lengths.max(initial=0))
        if out is None:
            out = np.empty((len(self), width), dtype=np.uint8)
        if out.shape[0] != len(self) or out.shape[1] < width or out.dtype != np.uint8:
            raise ValueError(f"pack needs a uint8 array [{len(self)}, >= {width}], "
                             f"got {out.dtype} {out.shape}")
        bufs, full = self.bufs, out.shape[1]
        for row, (w, s, e) in enumerate(zip(self.which.tolist(), self.starts.tolist(),
                                            self.stops.tolist(), strict=True)):
            out[row, :e - s] = bufs[w][s:e]
            if e - s < full:
                out[row, e - s:] = 0
        return out, lengths


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
        elif isinstance(col, (Ragged, ByteSpans)):
            out[name] = col.take(rows)
        else:
            out[name] = [col[i] for i in rows.tolist()]
    return out


def slice_rows(columns: dict, a: int, b: int) -> dict:
    """Rows ``a:b`` of every column (views where possible)."""
    return {name: (col.slice(a, b) if isinstance(col, (Ragged, ByteSpans)) else col[a:b])
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
        elif isinstance(first, ByteSpans):
            out[name] = ByteSpans.concat(cols)
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
        elif isinstance(col, ByteSpans):
            out[name] = col  # packed by the reader (records.torch_batch.to_torch)
        else:
            out[name] = list(col)
    return out
