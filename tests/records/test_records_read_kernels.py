"""The reader's numba kernels (records.read_kernels) against its numpy path, value for value."""

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from records_testlib import NO_NUMBA, varint

from records import wire
from records.batch_decode import ExampleDecoder
from records.example_codec import encode_example
from records.framing import frame_record
from records.scan import check_frames
from records.spec import FixedLenFeature, VarLenFeature
from records.wire import Fallback, packed_varints

ROOT = pathlib.Path(__file__).resolve().parents[2]
EDGES = [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**35, 2**63 - 1, -1, -(2**63), 300]


def _payloads(rows: list[bytes]):
    """Payloads laid out as in records: each after a length byte (< 0x80) and a gap byte."""
    buf, ps, pe = bytearray(b"\x00\x00"), [], []
    for row in rows:
        buf += b"\x12\x05"  # another field's bytes, then the payload's length varint
        ps.append(len(buf))
        buf += row
        pe.append(len(buf))
    buf += b"\x00" * 3
    return np.frombuffer(bytes(buf), np.uint8), np.array(ps, np.int64), np.array(pe, np.int64)


def _both(a, ps, pe, size, monkeypatch):
    """``packed_varints`` on the kernels, then on numpy: (values, counts) or "Fallback"."""
    got = []
    for kernels in (wire.compiled_kernels(), None):
        if kernels is None:
            monkeypatch.setattr(wire, "_KERNELS", [None])
        out = None if size is None else np.empty(len(ps) * size, np.int64)
        try:
            values, counts = packed_varints(a, ps, pe, size, out)
            got.append((values.tolist(), counts.tolist()))
        except Fallback:
            got.append("Fallback")
    return got


CASES = {  # rows of values -> expected, for FixedLen (size) and VarLen (None)
    "edges, varlen": ([EDGES, [], [5], EDGES[::-1]], None),
    "edges, fixed": ([EDGES, EDGES[::-1]], len(EDGES)),
    "token ids": ([list(range(i, 32000, 997)) for i in range(5)], 33),
    "one value each": ([[7], [2**20], [-3]], 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_kernels_decode_like_numpy(case, monkeypatch):
    if wire.compiled_kernels() is None:
        pytest.fail("numba is a dependency of the test environment (setup.cfg dev extra)")
    rows, size = CASES[case]
    a, ps, pe = _payloads([b"".join(map(varint, r)) for r in rows])
    compiled, numpy = _both(a, ps, pe, size, monkeypatch)
    expected = [v if v < 2**63 else v - 2**64 for r in rows for v in r]
    assert compiled == numpy == (expected, [len(r) for r in rows])


BAD = {  # payload bytes -> every path falls back to protobuf
    "last value runs past its payload": ([varint(5) + b"\x81"], None),
    "11-byte varint": ([b"\xff" * 10 + b"\x01"], None),
    "one value too many": ([varint(1) * 3, varint(1) * 2], 2),
    "one value too few": ([varint(1) * 2, varint(1)], 2),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_kernels_fall_back_where_numpy_does(case, monkeypatch):
    rows, size = BAD[case]
    a, ps, pe = _payloads(rows)
    assert _both(a, ps, pe, size, monkeypatch) == ["Fallback", "Fallback"]


def _frames(lengths, damage=()):
    rng = np.random.default_rng(3)
    frames = [frame_record(rng.bytes(n)) for n in lengths]
    starts = np.cumsum([0] + [len(f) for f in frames[:-1]]).astype(np.int64)
    buf = bytearray(b"".join(frames))
    for pos in damage:
        buf[pos] ^= 0x10
    return bytes(buf), starts


def _check(buf, starts, expected, monkeypatch):
    results = []
    for kernels in (wire.compiled_kernels(), None):
        if kernels is None:
            monkeypatch.setattr(wire, "_KERNELS", [None])
        c = check_frames(buf, starts, expected_lengths=expected)
        results.append((c.lengths.tolist(), c.bad_header, c.header_code, c.bad_data.tolist()))
    return results


@pytest.mark.parametrize("damage, bad_header, bad_data", [
    ((), None, []),
    (("data", 3), None, [3]),
    (("data", 3, "data", 17), None, [3, 17]),
    (("data crc", 5), None, [5]),
    (("length crc", 9), 9, []),
    (("data", 2, "length crc", 9), 9, [2]),
])
def test_hardware_crc_reports_what_the_library_does(damage, bad_header, bad_data, monkeypatch):
    lengths = list(range(0, 40)) + [1000, 4097]  # every tail length of the 8-byte steps
    _, starts = _frames(lengths)
    where = {"data": lambda i: starts[i] + 12, "data crc": lambda i: starts[i] + 12 + lengths[i],
             "length crc": lambda i: starts[i] + 9}
    pos = [where[damage[k]](damage[k + 1]) for k in range(0, len(damage), 2)]
    buf, starts = _frames(lengths, pos)
    compiled, numpy = _check(buf, starts, None, monkeypatch)
    assert compiled == numpy
    assert (compiled[1], compiled[3]) == (bad_header, bad_data)


def test_index_mismatch_and_crc_checks_agree(monkeypatch):
    buf, starts = _frames([10, 20, 30])
    expected = np.array([10, 21, 30])
    compiled, numpy = _check(buf, starts, expected, monkeypatch)
    assert compiled == numpy and compiled[1:3] == (1, "index_mismatch")


def test_without_numba_the_reader_takes_the_numpy_path():
    code = NO_NUMBA + textwrap.dedent("""
        import sys
        import numpy as np
        from records import wire
        from records.batch_decode import ExampleDecoder
        from records.example_codec import encode_example
        from records.framing import frame_record
        from records.scan import check_frames
        from records.spec import FixedLenFeature
        recs = [encode_example({"t": [i, 300, 70000]}) for i in range(3)]
        cols = ExampleDecoder({"t": FixedLenFeature((3,), "int64")}).decode_records(recs)
        buf = frame_record(b"abc") + frame_record(b"de")
        check = check_frames(buf, np.array([0, 19]))
        print(wire.compiled_kernels(), cols["t"][:, 2].tolist(), check.bad_data.tolist(),
              "numba" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
                         timeout=120)
    assert out.stdout.split() == ["None", "[70000,", "70000,", "70000]", "[]", "False"], \
        out.stdout + out.stderr


def test_a_header_outside_the_buffer_is_left_to_the_numpy_path(monkeypatch):
    buf, starts = _frames([10, 20])
    for kernels in (wire.compiled_kernels(), None):
        if kernels is None:
            monkeypatch.setattr(wire, "_KERNELS", [None])
        with pytest.raises(IndexError):
            check_frames(buf[:int(starts[1]) + 6], starts)


def _walks(records, spec):
    """(kernel's spans or None, numpy walk's spans or "Fallback") for one chunk of records."""
    dec = ExampleDecoder(spec)
    buf = b"".join(records)
    a = np.frombuffer(buf, np.uint8)
    lengths = np.array([len(r) for r in records], np.int64)
    s = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    e = s + lengths

    def plain(spans):
        return None if spans is None else [[x.tolist() for x in span] for span in spans]
    try:
        numpy = plain(dec._walk(a, s, e))
    except Fallback:
        numpy = "Fallback"
    return plain(dec._walk_compiled(a, s, e)), numpy


def test_compiled_walk_takes_only_what_the_numpy_walk_takes():
    # every prefix and every single-byte change of two records: the kernel must decline
    # (None) wherever the numpy walk falls back, and agree with it everywhere else
    if wire.compiled_kernels() is None:
        pytest.fail("numba is a dependency of the test environment (setup.cfg dev extra)")
    spec = {"a": FixedLenFeature((2,), "int64"), "bb": VarLenFeature("bytes"),
            "c": FixedLenFeature((), "float32", default=0.0)}
    good = encode_example({"a": [1, 300], "bb": [b"x", b""], "zz": [7]})
    other = encode_example({"c": [0.5], "a": [2, 3]})
    variants = [good[:n] for n in range(len(good))]
    variants += [good[:i] + bytes([v]) + good[i + 1:] for i in range(len(good))
                 for v in (0x00, 0x0A, 0x12, 0x7F, 0x80, 0xFF)]
    variants += [good + good, good + b"\x0a\x00", b"\x0a\x00", b""]
    accepted = 0
    for v in variants:
        compiled, numpy = _walks([other, v], spec)
        if compiled is None:
            continue
        assert compiled == numpy, v
        accepted += 1
    assert accepted > 20  # the kernel takes the well-formed variants (other key values)
    assert _walks([good, other], spec)[0] == _walks([good, other], spec)[1] != "Fallback"
