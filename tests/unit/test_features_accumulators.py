"""Accumulators and artifacts cross engines as checked JSON: equal after a round trip, and a
tampered or foreign file (a pickle above all) is refused, never executed."""

from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from features.accumulators import (
    decode_accumulator,
    decode_artifacts,
    encode_accumulator,
    encode_artifacts,
)
from features.analyzers import SpecAnalyzer
from features.spec import FeatureSpec

ROOT = Path(__file__).resolve().parents[2]
SPEC = FeatureSpec.model_validate({"key": "k", "features": {
    "t": {"kind": "categorical", "source": "t", "computed_vocabulary": {}},
    "z": {"kind": "numeric", "source": "x", "normalize": "z_score"},
    "b": {"kind": "bucketized", "source": "n", "num_buckets": 5},
    "fixed": {"kind": "categorical", "source": "t", "vocabulary": ["nlp"], "default_value": 0},
}})


def _accumulator(rows: int, distinct: int):
    rng = np.random.default_rng(rows)
    batch = pa.RecordBatch.from_pydict({
        "k": [f"k{i}" for i in range(rows)],
        "t": rng.choice(["nlp", "cv", "rl", "speech"], rows).tolist(),
        "x": rng.normal(3.0, 2.0, rows),
        "n": rng.integers(-distinct, distinct, rows).astype(np.float64) / 7,  # > max_exact: bucketed
    })
    analyzer = SpecAnalyzer(SPEC)
    return analyzer, analyzer.add_batch(analyzer.create(), batch)


@pytest.mark.parametrize("distinct", [50, 10_000])  # quantiles exact, then bucketed
def test_an_accumulator_round_trips_to_the_same_artifacts(distinct):
    analyzer, acc = _accumulator(6000, distinct)
    back = decode_accumulator(encode_accumulator(acc), analyzer)
    assert back["rows"] == acc["rows"]
    assert analyzer.extract(back) == analyzer.extract(acc)
    empty = analyzer.create()  # infinities of empty moments survive too
    assert analyzer.extract(decode_accumulator(encode_accumulator(
        analyzer.merge([empty, back])), analyzer)) == analyzer.extract(acc)


def test_artifacts_round_trip():
    analyzer, acc = _accumulator(500, 20)
    artifacts = analyzer.extract(acc)
    assert decode_artifacts(encode_artifacts(artifacts)) == artifacts


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/shardforge-pwned",))


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda doc: pickle.dumps(_Exploit()), "a pickle or another foreign file is never loaded"),
        (lambda doc: b"\x00\x01garbage", "not shardforge.features.accumulator/1 JSON"),
        (lambda doc: json.dumps({**doc, "format": "other/9"}).encode(), "format: expected"),
        (lambda doc: json.dumps({**doc, "rows": "many"}).encode(), "rows: expected int"),
        (lambda doc: json.dumps({**doc, "features": doc["features"][1:]}).encode(), "features: missing"),
        (lambda doc: json.dumps({**doc, "features": [
            {**f, "type": "moments"} if f["artifact"] == "vocabularies" else f
            for f in doc["features"]]}).encode(), "does not fit Counter"),
        (lambda doc: json.dumps({**doc, "features": [
            {**f, "count": "12"} if f["type"] == "moments" else f
            for f in doc["features"]]}).encode(), ".count: expected int"),
    ],
)
def test_a_tampered_accumulator_is_refused(tamper, expected):
    analyzer, acc = _accumulator(200, 20)
    doc = json.loads(encode_accumulator(acc))
    with pytest.raises(ValueError, match="partition 3: ") as err:
        decode_accumulator(tamper(doc), analyzer, source="partition 3")
    assert expected in str(err.value)
    assert not Path("/tmp/shardforge-pwned").exists()


def test_tampered_artifacts_are_refused():
    with pytest.raises(ValueError, match="staged: <file>: not shardforge.features.staged-artifacts/1"):
        decode_artifacts(pickle.dumps({"vocabularies": {}}), source="staged")
    doc = json.loads(encode_artifacts(_accumulator(50, 5)[0].extract(_accumulator(50, 5)[1])))
    doc["boundaries"]["b"] = ["__import__('os')"]
    with pytest.raises(ValueError, match=r"boundaries\.b: wrong shape"):
        decode_artifacts(json.dumps(doc).encode(), source="staged")


def test_no_engine_code_unpickles_anything():
    for package in ("pipelines", "features", "records", "core"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and node.attr in ("loads", "load") and \
                        isinstance(node.value, ast.Name) and node.value.id == "pickle":
                    raise AssertionError(f"{path.relative_to(ROOT)} unpickles data")
