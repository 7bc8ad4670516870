"""tf.Example / tf.SequenceExample encoding and decoding through protobuf.

This is the reference codec: simple, complete and exact. The reader's hot path
uses :mod:`records.batch_decode` instead, and tests hold the two to the same output.

Value conventions (encode):
    * ints / bools, or an integer/bool ndarray  -> ``int64_list``
    * floats, or a float ndarray (cast to float32) -> ``float_list``
    * ``bytes`` / ``str`` (UTF-8), or a list of them -> ``bytes_list``
    * a scalar is a one-element list; an n-d array is flattened (row major)
    * ``(kind, values)`` with kind in ``{"int64", "float32", "bytes"}`` forces the
      kind; it is required for an empty list, whose kind cannot be inferred.

Decode returns int64 -> ``np.int64`` array, float -> ``np.float32`` array,
bytes -> ``list[bytes]``; a Feature with no kind set decodes to ``[]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from records import tfproto

__all__ = [
    "KINDS",
    "encode_example",
    "decode_example",
    "encode_sequence_example",
    "decode_sequence_example",
]

KINDS = ("int64", "float32", "bytes")
_KIND_ALIASES = {"int64": "int64", "float32": "float32", "float": "float32", "bytes": "bytes"}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_TEXT = (bytes, bytearray, memoryview, str)


def _to_bytes(name: str, v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytes, bytearray, memoryview, np.bytes_)):
        return bytes(v)
    raise TypeError(f"feature {name!r}: expected bytes or str values, got {type(v).__name__}")


def _check_int(name: str, v: Any) -> int:
    if isinstance(v, (bool, np.bool_, int, np.integer)):
        v = int(v)
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise ValueError(f"feature {name!r}: value {v} does not fit in int64")
        return v
    raise TypeError(f"feature {name!r}: expected int values for int64, got {type(v).__name__}")


def _check_float(name: str, v: Any) -> float:
    if isinstance(v, (bool, int, float, np.integer, np.floating)):
        return float(v)
    raise TypeError(f"feature {name!r}: expected float values for float32, "
                    f"got {type(v).__name__}")


def _coerce(name: str, kind: str, values: Any) -> list:
    """Converts ``values`` (scalar, sequence or ndarray) to a flat list of ``kind``."""
    if isinstance(values, np.ndarray):
        arr = values.ravel()
        if kind == "int64":
            if arr.dtype.kind in "biu":
                if arr.dtype.kind == "u" and arr.size and arr.max() > _INT64_MAX:
                    raise ValueError(f"feature {name!r}: uint64 value does not fit in int64")
                return arr.astype(np.int64).tolist()
            if arr.dtype.kind != "O":
                raise TypeError(f"feature {name!r}: expected an integer array for int64, "
                                f"got dtype {arr.dtype}")
        elif kind == "float32" and arr.dtype.kind in "biuf":
            return arr.astype(np.float32).tolist()
        values = arr.tolist()
    elif isinstance(values, _TEXT) or not isinstance(values, Sequence):
        values = [values]
    if kind == "int64":
        return [_check_int(name, v) for v in values]
    if kind == "float32":
        return [_check_float(name, v) for v in values]
    return [_to_bytes(name, v) for v in values]


def _infer_kind(name: str, values: Any) -> str:
    if isinstance(values, np.ndarray):
        k = values.dtype.kind
        if k in "biu":
            return "int64"
        if k == "f":
            return "float32"
        if k in "SU":
            return "bytes"
        if k != "O":
            raise TypeError(f"feature {name!r}: unsupported array dtype {values.dtype}")
        values = values.ravel().tolist()
    if isinstance(values, _TEXT) or not isinstance(values, Sequence):
        values = [values]
    if len(values) == 0:
        raise ValueError(f"feature {name!r}: an empty list needs an explicit kind, "
                         f"e.g. ('int64', [])")
    if all(isinstance(v, _TEXT + (np.bytes_,)) for v in values):
        return "bytes"
    if all(isinstance(v, (bool, int, np.integer, np.bool_)) for v in values):
        return "int64"
    if all(isinstance(v, (bool, int, float, np.integer, np.floating)) for v in values):
        return "float32"
    kinds = sorted({type(v).__name__ for v in values})
    raise TypeError(f"feature {name!r}: cannot infer a kind from element types {kinds}; "
                    f"expected all ints, all floats or all bytes/str")


def _explicit(values: Any) -> tuple[str, Any] | None:
    if (isinstance(values, tuple) and len(values) == 2 and isinstance(values[0], str)
            and values[0] in _KIND_ALIASES and not isinstance(values[1], _TEXT)):
        return _KIND_ALIASES[values[0]], values[1]
    return None


def _fill_feature(feature, name: str, values: Any) -> None:
    explicit = _explicit(values)
    kind, values = explicit if explicit else (_infer_kind(name, values), values)
    items = _coerce(name, kind, values)
    if kind == "int64":
        feature.int64_list.SetInParent()
        feature.int64_list.value.extend(items)
    elif kind == "float32":
        feature.float_list.SetInParent()
        feature.float_list.value.extend(items)
    else:
        feature.bytes_list.SetInParent()
        feature.bytes_list.value.extend(items)


def _fill_features(features, mapping: Mapping[str, Any]) -> None:
    if not isinstance(mapping, Mapping):
        raise TypeError(f"features must be a mapping of name -> values, "
                        f"got {type(mapping).__name__}")
    for name, values in mapping.items():
        if not isinstance(name, str):
            raise TypeError(f"feature names must be str, got {name!r}")
        _fill_feature(features.feature[name], name, values)


def encode_example(features: Mapping[str, Any]) -> bytes:
    """Serializes a mapping of feature name -> values as a ``tf.train.Example``.

    Output is deterministic (map entries in sorted key order), so the same
    mapping always yields the same bytes.

    Args:
        features: name -> values, see the module docstring for accepted values.

    Returns:
        The serialized Example.

    Raises:
        TypeError: a value has an unsupported type; the message names the feature.
        ValueError: an empty list without explicit kind, or an int outside int64.
    """
    ex = tfproto.Example()
    ex.features.SetInParent()
    _fill_features(ex.features, features)
    return ex.SerializeToString(deterministic=True)


def encode_sequence_example(context: Mapping[str, Any],
                            feature_lists: Mapping[str, Any]) -> bytes:
    """Serializes a ``tf.train.SequenceExample``.

    Args:
        context: name -> values, as for :func:`encode_example`.
        feature_lists: name -> sequence of per-step values (each as for
            :func:`encode_example`), or ``(kind, steps)`` to force the kind of
            every step.

    Returns:
        The serialized SequenceExample (deterministic bytes).
    """
    seq = tfproto.SequenceExample()
    seq.context.SetInParent()
    seq.feature_lists.SetInParent()
    _fill_features(seq.context, context)
    if not isinstance(feature_lists, Mapping):
        raise TypeError("feature_lists must be a mapping of name -> list of steps")
    for name, steps in feature_lists.items():
        explicit = _explicit(steps)
        kind, steps = explicit if explicit else (None, steps)
        if isinstance(steps, _TEXT) or not isinstance(steps, (Sequence, np.ndarray)):
            raise TypeError(f"feature list {name!r}: expected a sequence of steps, "
                            f"got {type(steps).__name__}")
        flist = seq.feature_lists.feature_list[name]
        for i, step in enumerate(steps):
            step_kind = kind
            if step_kind is None and not (hasattr(step, "__len__") and len(step) == 0):
                step_kind = _infer_kind(f"{name}[{i}]", step)
            if step_kind is None:  # empty step of an inferred list: use a sibling's kind
                others = [s for s in steps if not (hasattr(s, "__len__") and len(s) == 0)]
                if not others:
                    raise ValueError(f"feature list {name!r}: all steps are empty; "
                                     f"pass (kind, steps)")
                step_kind = _infer_kind(name, others[0])
            _fill_feature(flist.feature.add(), f"{name}[{i}]", (step_kind, step))
    return seq.SerializeToString(deterministic=True)


def _values(feature) -> np.ndarray | list[bytes]:
    kind = feature.WhichOneof("kind")
    if kind == "int64_list":
        v = feature.int64_list.value
        return np.fromiter(v, dtype=np.int64, count=len(v))
    if kind == "float_list":
        v = feature.float_list.value
        return np.fromiter(v, dtype=np.float32, count=len(v))
    if kind == "bytes_list":
        return list(feature.bytes_list.value)
    return []


def _parse(cls, data: bytes, what: str):
    msg = cls()
    try:
        msg.ParseFromString(bytes(data))
    except DecodeError as err:
        raise ValueError(f"not a serialized {what}: {err}") from err
    return msg


def decode_example(data: bytes) -> dict[str, np.ndarray | list[bytes]]:
    """Parses a serialized ``tf.train.Example``.

    Args:
        data: the serialized message.

    Returns:
        name -> ``np.int64`` array | ``np.float32`` array | ``list[bytes]``.

    Raises:
        ValueError: ``data`` is not a valid Example.
    """
    ex = _parse(tfproto.Example, data, "tf.Example")
    return {k: _values(f) for k, f in ex.features.feature.items()}


def decode_sequence_example(data: bytes) -> tuple[dict, dict]:
    """Parses a serialized ``tf.train.SequenceExample``.

    Args:
        data: the serialized message.

    Returns:
        ``(context, feature_lists)``: context as :func:`decode_example` returns;
        feature_lists maps name -> list of per-step values.

    Raises:
        ValueError: ``data`` is not a valid SequenceExample.
    """
    seq = _parse(tfproto.SequenceExample, data, "tf.SequenceExample")
    context = {k: _values(f) for k, f in seq.context.feature.items()}
    lists = {k: [_values(f) for f in fl.feature] for k, fl in seq.feature_lists.feature_list.items()}
    return context, lists
