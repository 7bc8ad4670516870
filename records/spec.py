"""Decode specs: what the reader turns each feature into.

The names and semantics follow ``tf.io.FixedLenFeature`` / ``tf.io.VarLenFeature``
so a spec reads the same to someone coming from TensorFlow, and specs travel in
``manifest.json`` through :func:`spec_to_dict` / :func:`spec_from_dict`.

Reader output per batch of B records:
    * ``FixedLenFeature(shape, "int64"|"float32")`` -> tensor ``[B, *shape]``;
      a missing feature takes ``default`` (error when there is none).
    * ``FixedLenFeature((), "bytes")`` -> ``list[bytes]``; ``((k,), "bytes")`` ->
      ``list[list[bytes]]`` (bytes features are at most 1-d).
    * ``VarLenFeature("int64"|"float32", max_len)`` -> padded tensor ``[B, L]``
      (``L = max_len`` or the longest row in the batch; rows longer than
      ``max_len`` are truncated) plus ``<name>_lengths`` ``[B]`` int64 holding
      the number of valid positions; a missing feature is an empty row.
    * ``VarLenFeature("bytes")`` -> ``list[list[bytes]]`` plus ``<name>_lengths``.

``RecordDataset(bytes_as="uint8")`` packs scalar bytes features into a padded uint8
tensor plus lengths, and ``varlen_as="nested"`` gives numeric VarLen features as jagged
``torch.nested`` tensors (see :func:`records.reader.to_torch`).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DTYPES",
    "FixedLenFeature",
    "VarLenFeature",
    "FeatureSpec",
    "spec_to_dict",
    "spec_from_dict",
    "validate_spec",
]

DTYPES = ("int64", "float32", "bytes")


def _check_dtype(dtype: Any) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")


def _encode_default(value: Any) -> Any:
    # JSON has no bytes: wrap them so from_dict can tell them from text.
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return [_encode_default(v) for v in value]
    if isinstance(value, np.ndarray):
        return _encode_default(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode_default(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"base64"}:
        return base64.b64decode(value["base64"])
    if isinstance(value, list):
        return [_decode_default(v) for v in value]
    return value


def _normalize_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(_normalize_default(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class FixedLenFeature:
    """A feature with exactly ``prod(shape)`` values in every record.

    Attributes:
        shape: shape of one record's value, ``()`` for a scalar.
        dtype: ``"int64"``, ``"float32"`` or ``"bytes"``.
        default: used when a record lacks the feature; a scalar (broadcast) or a
            value with ``prod(shape)`` elements. ``None`` makes the feature required.
    """

    shape: tuple[int, ...]
    dtype: str
    default: Any = None

    def __post_init__(self) -> None:
        shape = (self.shape,) if isinstance(self.shape, int) else tuple(self.shape)
        if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
            raise ValueError(f"shape must be non-negative ints, got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        _check_dtype(self.dtype)
        if self.dtype == "bytes" and len(self.shape) > 1:
            raise ValueError(f"bytes features are at most 1-d, got shape {self.shape}")
        if self.default is not None:
            # Normalize to hashable Python values so specs compare equal after a JSON trip.
            object.__setattr__(self, "default", _normalize_default(self.default))
            self.default_array()  # validates size and type now, not at read time

    @property
    def size(self) -> int:
        """Number of values per record (``prod(shape)``)."""
        return math.prod(self.shape)

    def default_array(self) -> np.ndarray | list[bytes]:
        """The default as a flat array/list of ``size`` values (broadcast if scalar)."""
        d = self.default
        if self.dtype == "bytes":
            vals = [d] if isinstance(d, (bytes, str)) else list(d)
            vals = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in vals]
            if len(vals) == 1:
                vals = vals * self.size
        else:
            np_dtype = np.int64 if self.dtype == "int64" else np.float32
            arr = np.asarray(d, dtype=np_dtype).ravel()
            vals = np.broadcast_to(arr, (self.size,)).copy() if arr.size == 1 else arr
        if len(vals) != self.size:
            raise ValueError(f"default has {len(vals)} values but shape {self.shape} "
                             f"needs {self.size}")
        return vals

    def to_dict(self) -> dict:
        """JSON-serializable form."""
        return {"kind": "fixed_len", "shape": list(self.shape), "dtype": self.dtype,
                "default": _encode_default(self.default)}

    @classmethod
    def from_dict(cls, d: dict) -> FixedLenFeature:
        """Inverse of :meth:`to_dict`."""
        return cls(shape=tuple(d["shape"]), dtype=d["dtype"],
                   default=_decode_default(d.get("default")))


@dataclass(frozen=True)
class VarLenFeature:
    """A feature with any number of values per record (missing = empty).

    Attributes:
        dtype: ``"int64"``, ``"float32"`` or ``"bytes"``.
        max_len: pad/truncate every row to this length; ``None`` pads to the
            longest row of each batch.
        pad_value: value used for padding positions (numeric dtypes).
    """

    dtype: str
    max_len: int | None = None
    pad_value: Any = field(default=0)

    def __post_init__(self) -> None:
        _check_dtype(self.dtype)
        if self.max_len is not None and (not isinstance(self.max_len, int) or self.max_len < 0):
            raise ValueError(f"max_len must be a non-negative int or None, got {self.max_len!r}")
        if self.dtype != "bytes" and not isinstance(self.pad_value, (int, float, np.number)):
            raise TypeError(f"pad_value must be a number, got {type(self.pad_value).__name__}")

    def to_dict(self) -> dict:
        """JSON-serializable form."""
        return {"kind": "var_len", "dtype": self.dtype, "max_len": self.max_len,
                "pad_value": _encode_default(self.pad_value)}

    @classmethod
    def from_dict(cls, d: dict) -> VarLenFeature:
        """Inverse of :meth:`to_dict`."""
        return cls(dtype=d["dtype"], max_len=d.get("max_len"),
                   pad_value=_decode_default(d.get("pad_value", 0)))


FeatureSpec = dict[str, FixedLenFeature | VarLenFeature]


def validate_spec(spec: Any) -> FeatureSpec:
    """Checks that ``spec`` maps str names to feature specs; returns it as a dict.

    Raises:
        TypeError: a key is not a str or a value is not a feature spec.
        ValueError: a ``<name>_lengths`` output would collide with another feature.
    """
    if not isinstance(spec, dict) or not spec:
        raise TypeError("feature_spec must be a non-empty dict of name -> "
                        "FixedLenFeature | VarLenFeature")
    for name, feat in spec.items():
        if not isinstance(name, str):
            raise TypeError(f"feature names must be str, got {name!r}")
        if not isinstance(feat, (FixedLenFeature, VarLenFeature)):
            raise TypeError(f"feature {name!r}: expected FixedLenFeature or VarLenFeature, "
                            f"got {type(feat).__name__}")
        if isinstance(feat, VarLenFeature) and f"{name}_lengths" in spec:
            raise ValueError(f"feature {name!r}: output {name}_lengths collides with a feature")
    return dict(spec)


def spec_to_dict(spec: FeatureSpec) -> dict:
    """JSON-serializable form of a whole spec (``{name: feature.to_dict()}``)."""
    return {name: feat.to_dict() for name, feat in sorted(validate_spec(spec).items())}


def spec_from_dict(d: dict) -> FeatureSpec:
    """Inverse of :func:`spec_to_dict`.

    Raises:
        ValueError: an entry has an unknown ``kind``.
    """
    out: FeatureSpec = {}
    for name, item in d.items():
        kind = item.get("kind")
        if kind == "fixed_len":
            out[name] = FixedLenFeature.from_dict(item)
        elif kind == "var_len":
            out[name] = VarLenFeature.from_dict(item)
        else:
            raise ValueError(f"feature {name!r}: unknown spec kind {kind!r}")
    return out
