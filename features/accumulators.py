"""Analyzer accumulators and artifacts as data (JSON), never as pickles.

The engines hand partial analyses around: Spark's workers send each partition's
accumulator to the driver, Beam's pipeline leaves the extracted artifacts in the lake's
staging area for the committing driver. Unpickling those would let anyone who can write
the lake (or the staging area) run code inside an encode job, so they travel as JSON with a
format tag and are checked field by field when read back: a tampered or foreign file is
refused with a :class:`ValueError` naming what is wrong, and nothing in it is ever executed.

Floats round-trip exactly (JSON numbers are written with ``repr``); infinities (the empty
moments' min/max) are written as JSON's ``Infinity`` extension, which only this reader and
Python's own accept.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from features.analyzers import Moments, SpecAnalyzer
from features.artifacts import Artifacts
from features.sketch import QuantileSketch

__all__ = ["ACCUMULATOR_FORMAT", "ARTIFACTS_FORMAT", "decode_accumulator", "decode_artifacts",
           "encode_accumulator", "encode_artifacts"]

ACCUMULATOR_FORMAT = "shardforge.features.accumulator/1"
ARTIFACTS_FORMAT = "shardforge.features.staged-artifacts/1"


def _moments_to(m: Moments) -> dict[str, Any]:
    return {"type": "moments", "count": m.count, "mean": m.mean, "m2": m.m2, "min": m.min,
            "max": m.max}


def _counts_to(c: Counter) -> dict[str, Any]:
    items = sorted(c.items())
    return {"type": "counts", "values": [v for v, _ in items], "counts": [n for _, n in items]}


def _sketch_to(s: QuantileSketch) -> dict[str, Any]:
    def pairs(store: Counter) -> list[list]:
        return [[k, n] for k, n in sorted(store.items())]

    return {"type": "quantiles", "relative_accuracy": s.relative_accuracy,
            "max_exact": s.max_exact, "count": s.count, "min": s.min, "max": s.max,
            "exact": None if s.exact is None else pairs(s.exact), "positive": pairs(s.positive),
            "negative": pairs(s.negative), "zeros": s.zeros}


def encode_accumulator(acc: dict) -> bytes:
    """A :class:`~features.analyzers.SpecAnalyzer` accumulator as JSON bytes."""
    features = []
    for (name, what), value in sorted(acc["features"].items()):
        if isinstance(value, Moments):
            body = _moments_to(value)
        elif isinstance(value, QuantileSketch):
            body = _sketch_to(value)
        elif isinstance(value, Counter):
            body = _counts_to(value)
        else:
            raise TypeError(f"feature {name!r} ({what}): no data format for {type(value).__name__}")
        features.append({"feature": name, "artifact": what, **body})
    return json.dumps({"format": ACCUMULATOR_FORMAT, "rows": acc["rows"], "features": features},
                      sort_keys=True).encode("utf-8")


class _Reader:
    """Typed field access over parsed JSON; every error names the field's path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, why: str) -> ValueError:
        return ValueError(f"{self.source}: {path}: {why}")

    def get(self, obj: Any, key: str, kind: type | tuple, path: str) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise self.fail(f"{path}.{key}", "missing")
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise self.fail(f"{path}.{key}", f"expected {getattr(kind, '__name__', kind)}, "
                                             f"got {type(value).__name__}")
        return value

    def number(self, obj: Any, key: str, path: str) -> float:
        return float(self.get(obj, key, (int, float), path))

    def int_pairs(self, obj: Any, key: str, path: str, value_kind: type | tuple) -> Counter:
        out: Counter = Counter()
        for i, pair in enumerate(self.get(obj, key, list, path)):
            if (not isinstance(pair, list) or len(pair) != 2 or isinstance(pair[0], bool)
                    or not isinstance(pair[0], value_kind) or isinstance(pair[1], bool)
                    or not isinstance(pair[1], int)):
                raise self.fail(f"{path}.{key}[{i}]", "expected a [value, count] pair")
            out[pair[0]] = pair[1]
        return out


def _parse(data: bytes, source: str, expected: str) -> tuple[_Reader, dict]:
    reader = _Reader(source)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise reader.fail("<file>", f"not {expected} JSON (a pickle or another foreign file "
                                    "is never loaded)") from None
    if not isinstance(doc, dict) or doc.get("format") != expected:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise reader.fail("format", f"expected {expected!r}, got {found!r}")
    return reader, doc


def decode_accumulator(data: bytes, analyzer: SpecAnalyzer, *, source: str = "accumulator") -> dict:
    """What :func:`encode_accumulator` wrote, checked against ``analyzer``'s features.

    Raises:
        ValueError: not this format, a missing or mistyped field, or features that are not
            the analyzer's; the message names ``source`` and the field.
    """
    r, doc = _parse(data, source, ACCUMULATOR_FORMAT)
    acc = analyzer.create()
    acc["rows"] = r.get(doc, "rows", int, "")
    seen = set()
    for i, item in enumerate(r.get(doc, "features", list, "")):
        path = f"features[{i}]"
        key = (r.get(item, "feature", str, path), r.get(item, "artifact", str, path))
        if key not in acc["features"] or key in seen:
            raise r.fail(path, f"{key} is not an analysis of this spec (or repeated)")
        seen.add(key)
        empty, kind = acc["features"][key], r.get(item, "type", str, path)
        if isinstance(empty, Moments) and kind == "moments":
            value: Any = Moments(r.get(item, "count", int, path), *(
                r.number(item, k, path) for k in ("mean", "m2", "min", "max")))
        elif isinstance(empty, QuantileSketch) and kind == "quantiles":
            value = QuantileSketch(r.number(item, "relative_accuracy", path),
                                   r.get(item, "max_exact", int, path))
            value.count, value.zeros = r.get(item, "count", int, path), r.get(item, "zeros", int, path)
            value.min, value.max = r.number(item, "min", path), r.number(item, "max", path)
            value.exact = (None if item.get("exact") is None
                           else r.int_pairs(item, "exact", path, (int, float)))
            value.positive = r.int_pairs(item, "positive", path, int)
            value.negative = r.int_pairs(item, "negative", path, int)
        elif isinstance(empty, Counter) and kind == "counts":
            values, counts = r.get(item, "values", list, path), r.get(item, "counts", list, path)
            if len(values) != len(counts) or not all(isinstance(v, str) for v in values) or not all(
                    isinstance(n, int) and not isinstance(n, bool) for n in counts):
                raise r.fail(path, "counts must be strings and integers of equal length")
            value = Counter(dict(zip(values, counts, strict=True)))
        else:
            raise r.fail(f"{path}.type", f"{kind!r} does not fit {type(empty).__name__}")
        acc["features"][key] = value
    missing = sorted(set(acc["features"]) - seen)
    if missing:
        raise r.fail("features", f"missing {missing}")
    return acc


def encode_artifacts(artifacts: Artifacts) -> bytes:
    """Extracted artifacts as JSON bytes (the staging copy a driver reads back)."""
    return json.dumps({"format": ARTIFACTS_FORMAT, "rows": artifacts.rows,
                       "vocabularies": artifacts.vocabularies, "boundaries": artifacts.boundaries,
                       "stats": artifacts.stats, "tokenizers": artifacts.tokenizers},
                      sort_keys=True).encode("utf-8")


def decode_artifacts(data: bytes, *, source: str = "artifacts") -> Artifacts:
    """What :func:`encode_artifacts` wrote, checked field by field.

    Raises:
        ValueError: not this format, or a field of the wrong shape (named).
    """
    r, doc = _parse(data, source, ARTIFACTS_FORMAT)

    def mapping(key: str, check) -> dict:
        out = r.get(doc, key, dict, "")
        for name, value in out.items():
            if not check(value):
                raise r.fail(f"{key}.{name}", "wrong shape")
        return out

    def numbers(values) -> bool:
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)

    return Artifacts(
        vocabularies=mapping("vocabularies", lambda v: isinstance(v, list) and all(
            isinstance(x, str) for x in v)),
        boundaries=mapping("boundaries", lambda v: isinstance(v, list) and numbers(v)),
        stats=mapping("stats", lambda v: isinstance(v, dict) and numbers(v.values())),
        tokenizers=mapping("tokenizers", lambda v: isinstance(v, str)),
        rows=r.get(doc, "rows", int, ""))
