"""CRC32C with TFRecord's masking, backed by a hardware-accelerated library.

TFRecord stores ``masked_crc32c`` of the length field and of the payload of every
record. The mask exists because a CRC of data that itself contains CRCs is weak;
TensorFlow rotates and offsets the value, and we must do exactly the same to read
and write files that TensorFlow accepts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["crc32c", "masked_crc32c", "mask_crc", "bulk_crc32c_fn", "masked_crc32c_u64"]

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF

try:  # google-crc32c is the documented dependency (SSE4.2 / ARMv8 CRC instructions).
    import google_crc32c as _google
except ImportError:  # pragma: no cover - depends on the environment
    _google = None

try:  # the `crc32c` package is also hardware based and accepts memoryviews (no copy).
    import crc32c as _crc32c_pkg
except ImportError:  # pragma: no cover - depends on the environment
    _crc32c_pkg = None

if _google is None and _crc32c_pkg is None:  # pragma: no cover - depends on the environment
    raise ImportError(
        "records needs a CRC32C implementation: `pip install google-crc32c` "
        "(or the `crc32c` package)"
    )


def crc32c(data: bytes) -> int:
    """Plain (unmasked) CRC32C of ``data``.

    Args:
        data: any bytes-like object.

    Returns:
        The CRC as an unsigned 32-bit int.
    """
    if _google is not None:
        return _google.value(bytes(data))
    return _crc32c_pkg.crc32c(data)


def mask_crc(crc: int) -> int:
    """Applies TensorFlow's CRC mask: ``((crc >> 15) | (crc << 17)) + 0xa282ead8 mod 2**32``."""
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def masked_crc32c(data: bytes) -> int:
    """Masked CRC32C of ``data`` exactly as TensorFlow's ``crc32c::Mask(crc32c::Value(...))``.

    Args:
        data: any bytes-like object.

    Returns:
        The masked CRC as an unsigned 32-bit int.
    """
    return mask_crc(crc32c(data))


def bulk_crc32c_fn() -> Callable[[memoryview], int]:
    """The fastest plain CRC32C callable that accepts a ``memoryview`` slice.

    The reader checks one CRC per record through ``map`` over memoryview slices, so
    an implementation that avoids a copy per record matters (google-crc32c only takes
    ``bytes``; we copy for it).
    """
    if _crc32c_pkg is not None:
        return _crc32c_pkg.crc32c
    return lambda view: _google.value(bytes(view))


def _table() -> np.ndarray:
    # Reflected Castagnoli polynomial; one byte per step is plenty for 8-byte inputs.
    poly = 0x82F63B78
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ poly, table >> 1).astype(np.uint32)
    return table


_TABLE = _table()


def masked_crc32c_u64(values: np.ndarray) -> np.ndarray:
    """Masked CRC32C of many little-endian uint64s at once (the TFRecord length fields).

    Vectorized over records: eight table steps for the whole array instead of one
    library call per record, which is what makes header checks nearly free.

    Args:
        values: array of non-negative integers (the record lengths).

    Returns:
        uint32 array of masked CRCs, same shape as ``values``.
    """
    v = np.asarray(values, dtype=np.uint64)
    crc = np.full(v.shape, _U32, dtype=np.uint32)
    for k in range(8):
        byte = ((v >> np.uint64(8 * k)) & np.uint64(0xFF)).astype(np.uint32)
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= np.uint32(_U32)
    return mask_array(crc)


def mask_array(crc: np.ndarray) -> np.ndarray:
    """Vectorized :func:`mask_crc` over a uint32 array (wraps modulo 2**32)."""
    crc = crc.astype(np.uint32, copy=False)
    return ((crc >> 15) | (crc << 17)) + np.uint32(_MASK_DELTA)
