"""Helpers shared by the records tests (a module, not conftest, so imports are unambiguous)."""

from __future__ import annotations

import textwrap

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


def varint(n: int) -> bytes:
    """The protobuf varint of ``n`` (negative ints as their 64-bit two's complement)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


# The first lines of a child process's script that must run as on a host without numba.
NO_NUMBA = textwrap.dedent("""
    import sys
    class NoNumba:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("numba", "llvmlite"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, NoNumba())
""")
