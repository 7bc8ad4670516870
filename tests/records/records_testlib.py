"""Helpers shared by the records tests (a module, not conftest, so imports are unambiguous)."""

from __future__ import annotations

import numpy as np

from records.example_codec import encode_example
from records.spec import FixedLenFeature, VarLenFeature
from records.writer import DatasetWriter

SPEC = {
    "tokens": FixedLenFeature((4,), "int64"),
    "label": FixedLenFeature((), "int64"),
    "weight": FixedLenFeature((), "float32"),
    "ids": VarLenFeature("int64"),
    "text": FixedLenFeature((), "bytes"),
}


def make_example(i: int) -> dict:
    """Example ``i`` of the toy dataset; ``label`` is the record id, so reads are traceable."""
    return {"tokens": np.arange(4) + 10 * i, "label": i, "weight": i / 2,
            "ids": ("int64", list(range(i % 3))), "text": f"row-{i}"}


def write_dataset(root, n: int = 60, *, shard_size: int = 7, compression=None,
                  splits=("train",), name: str = "toy") -> str:
    """Writes a committed toy dataset under ``root``; returns its version folder URI."""
    uri = f"file://{root}/records/{name}/v=1"
    with DatasetWriter(uri=uri, dataset=name, version="1", feature_spec=SPEC,
                       compression=compression, max_records_per_shard=shard_size,
                       config={"n": n}, inputs=["file:///raw/toy"]) as w:
        for split in splits:
            for i in range(n):
                w.write(split, encode_example(make_example(i)))
    return uri
