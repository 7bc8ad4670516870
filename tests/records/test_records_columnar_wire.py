"""records.columnar_wire: both paths (numba, numpy) write encode_example's bytes; bad input is named.

numpy only, like every records test (a GPU host collects them without pyarrow); the random
batches of every feature kind are in tests/unit/test_features_examples.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from records_testlib import NO_NUMBA

from records.columnar_wire import COMPILED, Column, serialize_columns
from records.example_codec import encode_example

ROOT = Path(__file__).resolve().parents[2]
PATHS = [pytest.param(True, id="numba"), pytest.param(False, id="numpy")]


def _bytes_column(rows: list[list[bytes]], present=None) -> Column:
    items = [item for row in rows for item in row]
    item_offsets = np.concatenate([[0], np.cumsum([len(i) for i in items])]).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return Column("bytes", np.frombuffer(b"".join(items), np.uint8), offsets, item_offsets, present)


CASES = {
    # name: (columns, rows, the rows as encode_example takes them)
    "int64 edges": ({"i": Column("int64", np.array([0, 127, 128, 2**63 - 1, -1, -(2**63)]),
                                 np.array([0, 2, 2, 6]))}, 3,
                    [{"i": ("int64", [0, 127])}, {"i": ("int64", [])},
                     {"i": ("int64", [128, 2**63 - 1, -1, -(2**63)])}]),
    "offsets from 5": ({"i": Column("int64", np.arange(8), np.array([5, 6, 8]))}, 2,
                       [{"i": [5]}, {"i": [6, 7]}]),
    "uint8 and bool widen": ({"u": Column("int64", np.array([200, 1], np.uint8), np.array([0, 2])),
                              "b": Column("int64", np.array([True]), np.array([0, 1]))}, 1,
                             [{"u": [200, 1], "b": [1]}]),
    "floats narrow": ({"f": Column("float32", np.array([0.1, np.nan, -np.inf, 1e300]),
                                   np.array([0, 0, 4]))}, 2,
                      [{"f": ("float32", [])}, {"f": ("float32", [0.1, np.nan, -np.inf, np.inf])}]),
    "bytes, empty items and lists": ({"s": _bytes_column([[b"", "关于".encode()], [], [b"x" * 300]])},
                                     3, [{"s": ("bytes", [b"", "关于".encode()])},
                                         {"s": ("bytes", [])}, {"s": ("bytes", [b"x" * 300])}]),
    "absent rows": ({"s": _bytes_column([[b"a"], [b"b"]], np.array([False, True])),
                     "n": Column("int64", np.array([4, 5]), np.arange(3), present=np.array([1, 0]))},
                    2, [{"n": [4]}, {"s": [b"b"]}]),
    "keys in byte order": ({"é": Column("int64", [1], [0, 1]), "z": Column("int64", [2], [0, 1]),
                            "A" * 130: Column("int64", [3], [0, 1])}, 1,
                           [{"é": [1], "z": [2], "A" * 130: [3]}]),
    "no rows": ({"i": Column("int64", np.zeros(0, np.int64), np.array([0]))}, 0, []),
    "no features": ({}, 2, [{}, {}]),
}


@pytest.mark.parametrize("compiled", PATHS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_cases_equal_encode_example(case, compiled):
    if compiled and not COMPILED:
        pytest.fail("numba is a dependency of the test environment (setup.cfg dev extra)")
    columns, rows, expected = CASES[case]
    offsets, data = serialize_columns(columns, rows, compiled=compiled)
    assert offsets.dtype == np.int64 and offsets[0] == 0 and len(offsets) == rows + 1
    got = [bytes(data[offsets[i]:offsets[i + 1]]) for i in range(rows)]
    assert got == [encode_example(row) for row in expected]


def test_both_paths_agree_on_a_large_mixed_batch():
    rng = np.random.default_rng(7)
    rows = 2000
    offsets = np.concatenate([[0], np.cumsum(rng.integers(0, 50, rows))]).astype(np.int64)
    ids = rng.integers(0, 300, offsets[-1])
    ids[rng.random(len(ids)) < 0.01] = -5
    columns = {"ids": Column("int64", ids, offsets),
               "w": Column("float32", rng.normal(size=offsets[-1]), offsets,
                           present=rng.random(rows) < 0.5)}
    fast, slow = (serialize_columns(columns, rows, compiled=c) for c in (True, False))
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])


@pytest.mark.parametrize(("column", "error", "message"), [
    (Column("int32", [1], [0, 1]), ValueError, "kind must be one of"),
    (Column("int64", [1], [0, 1, 1]), ValueError, "offsets has 3 entries, expected 2"),
    (Column("int64", [1], [0, 2]), ValueError, "must rise from >= 0 to <= 1"),
    (Column("int64", [1, 2], [1, 0]), ValueError, "must rise"),
    (Column("int64", [1.5], [0, 1]), TypeError, "values must be a 1-d integer array"),
    (Column("int64", np.array([2**64 - 1], np.uint64), [0, 1]), ValueError, "above int64"),
    (Column("int64", [1], [0.0, 1.0]), TypeError, "offsets must be a 1-d integer array"),
    (Column("float32", [[1.0]], [0, 1]), TypeError, "values must be 1-d"),
    (Column("bytes", np.zeros(2, np.uint8), [0, 1], [0, 3]), ValueError, "item_offsets must rise"),
    (Column("int64", [1], [0, 1], present=[True, False]), ValueError, "present has shape"),
    (Column("bytes", np.zeros(2, np.uint8), [0, 0], np.zeros(0, np.int64)), ValueError,
     "item_offsets has 0 entries"),
])
def test_bad_columns_raise_naming_the_feature(column, error, message):
    for compiled in (True, False):
        with pytest.raises(error, match=f"feature 'f': .*{message}"):
            serialize_columns({"f": column}, 1, compiled=compiled)


def test_feature_names_must_be_str():
    with pytest.raises(TypeError, match="feature names must be str, got 3"):
        serialize_columns({3: Column("int64", [1], [0, 1])}, 1)


def test_without_numba_the_numpy_path_writes_the_same_bytes():
    # A GPU host may lack numba: importing records must still work, on the numpy path.
    code = NO_NUMBA + textwrap.dedent("""
        import sys
        import numpy as np
        from records.columnar_wire import COMPILED, Column, serialize_columns
        from records.example_codec import encode_example
        offsets, data = serialize_columns({"i": Column("int64", np.array([1, 300]), [0, 2])}, 1)
        try:
            serialize_columns({}, 1, compiled=True)
        except RuntimeError as err:
            refused = "numba is not installed" in str(err)
        print(COMPILED, bytes(data) == encode_example({"i": [1, 300]}), refused,
              "numba" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.stdout.split() == ["False", "True", "True", "False"], out.stdout + out.stderr
