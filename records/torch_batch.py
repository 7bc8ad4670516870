"""Decoded numpy batches -> torch tensors, packing image bytes straight into one array.

:func:`to_torch` is what :class:`records.reader.RecordDataset` applies to every batch.
Scalar bytes features read with ``bytes_as="uint8"`` arrive as
:class:`~records.columns.ByteSpans` (the decoder leaves them in the record buffers):
they are copied once, row by row, into one preallocated ``uint8 [B, L]`` array. Inside a
DataLoader worker that array is allocated in shared memory, so handing the batch to the
main process copies nothing more; the main process pins it (one copy) for the GPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import get_worker_info

from records.columns import ByteSpans
from records.spec import FeatureSpec, FixedLenFeature, VarLenFeature

__all__ = ["batch_array", "to_torch"]


def batch_array(rows: int, width: int) -> torch.Tensor:
    """An uninitialized uint8 ``[rows, width]`` tensor; in shared memory inside a
    DataLoader worker (what the worker's result queue would otherwise copy it into)."""
    if get_worker_info() is None or rows * width == 0:
        return torch.empty((rows, width), dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(rows * width)
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, (rows, width))


def to_torch(batch: dict, spec: FeatureSpec | None = None, *, bytes_as: str = "list",
             varlen_as: str = "padded") -> dict:
    """A decoded numpy batch -> tensors laid out as asked.

    Args:
        batch: what the decoder yields for ``spec``.
        spec: needed for the non-default layouts (which features are bytes / VarLen).
        bytes_as: ``"list"`` keeps scalar bytes features as ``list[bytes]``; ``"uint8"``
            packs them into a zero-padded ``uint8`` tensor ``[B, L]`` plus
            ``<name>_lengths`` ``[B]`` (raw image or text bytes, ready for the GPU).
        varlen_as: ``"padded"`` keeps numeric VarLen features as ``[B, L]`` plus
            ``<name>_lengths``; ``"nested"`` turns them into one jagged
            ``torch.nested`` tensor (the lengths stay alongside).

    Numeric arrays become C-contiguous ``torch.from_numpy`` tensors (pin_memory-able).
    """
    out = {k: (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v)
           for k, v in batch.items()}
    for k, v in out.items():
        if isinstance(v, ByteSpans) and bytes_as != "uint8":
            out[k] = v.tolist()
    if spec is None:
        return out
    for name, feature in spec.items():
        if name not in out:
            continue
        if (bytes_as == "uint8" and feature.dtype == "bytes"
                and isinstance(feature, FixedLenFeature) and tuple(feature.shape) == ()):
            value = out[name]
            if isinstance(value, ByteSpans):  # one copy, record buffer -> batch array
                packed = batch_array(len(value), int(value.lengths.max(initial=0)))
                lengths = value.pack(packed.numpy())[1]
                out[name], out[f"{name}_lengths"] = packed, torch.from_numpy(lengths)
            else:
                out[name], out[f"{name}_lengths"] = _pack_bytes(value)
        elif (varlen_as == "nested" and isinstance(feature, VarLenFeature)
                and feature.dtype != "bytes"):
            padded, lengths = out[name], out[f"{name}_lengths"]
            valid = torch.arange(padded.shape[1]) < lengths[:, None]
            offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
            torch.cumsum(lengths, 0, out=offsets[1:])
            out[name] = torch.nested.nested_tensor_from_jagged(padded[valid], offsets)
    return out


def _pack_bytes(values: list[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """``list[bytes]`` -> zero-padded uint8 ``[B, max_len]`` and int64 lengths ``[B]``."""
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    width = int(lengths.max()) if len(values) else 0
    if width >= _ROW_COPY_BYTES:
        # Large values (images): one memcpy per row beats a boolean mask over B x width.
        packed = np.empty((len(values), width), dtype=np.uint8)
        for row, (value, n) in enumerate(zip(values, lengths.tolist(), strict=True)):
            packed[row, :n] = np.frombuffer(value, dtype=np.uint8)
            packed[row, n:] = 0
        return torch.from_numpy(packed), torch.from_numpy(lengths)
    flat = np.frombuffer(b"".join(values), dtype=np.uint8)
    packed = np.zeros((len(values), width), dtype=np.uint8)
    packed[np.arange(width) < lengths[:, None]] = flat  # row-major fill = concatenation order
    return torch.from_numpy(packed), torch.from_numpy(lengths)


_ROW_COPY_BYTES = 1024  # widest value from which _pack_bytes copies row by row
