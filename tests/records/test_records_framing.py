import struct

import pytest

from records.compression import detect_compression
from records.crc import masked_crc32c
from records.errors import CorruptionReport, CorruptRecordError
from records.framing import RecordFileWriter, frame_record, iter_record_blocks, iter_records

pytestmark = pytest.mark.usefixtures("read_path")  # numba kernels and numpy path

RECORDS = [b"", b"a", b"hello world" * 50, bytes(range(256)) * 3, b"z" * 70000]


def _write(path, records, compression=None):
    with RecordFileWriter(path=str(path), compression=compression) as w:
        for r in records:
            w.write(r)
    return w


def test_frame_layout():
    data = b"abc"
    frame = frame_record(data)
    assert frame[:8] == struct.pack("<Q", 3)
    assert frame[8:12] == struct.pack("<I", masked_crc32c(frame[:8]))
    assert frame[12:15] == data
    assert frame[15:] == struct.pack("<I", masked_crc32c(data))


@pytest.mark.parametrize("compression", [None, "GZIP", "ZLIB"])
@pytest.mark.parametrize("declared", ["auto", "same"])
def test_roundtrip(tmp_path, compression, declared):
    w = _write(tmp_path / "f.tfrecord", RECORDS, compression)
    assert w.records == len(RECORDS)
    assert w.bytes_written == (tmp_path / "f.tfrecord").stat().st_size
    assert [o for o, _ in w.offsets] == [sum(len(r) + 16 for r in RECORDS[:i])
                                         for i in range(len(RECORDS))]
    got = list(iter_records(str(tmp_path / "f.tfrecord"),
                            compression="auto" if declared == "auto" else compression))
    assert got == RECORDS


@pytest.mark.parametrize("compression", [None, "GZIP", "ZLIB"])
def test_start_offset_and_count(tmp_path, compression):
    w = _write(tmp_path / "f", RECORDS, compression)
    offset = w.offsets[2][0]
    got = list(iter_records(str(tmp_path / "f"), start_offset=offset, count=2))
    assert got == RECORDS[2:4]


def test_small_chunks_reassemble_records(tmp_path):
    _write(tmp_path / "f", RECORDS)
    blocks = list(iter_record_blocks(str(tmp_path / "f"), chunk_size=100))
    assert [r for b in blocks for r in b.records()] == RECORDS
    assert [i for b in blocks for i in b.indices.tolist()] == list(range(len(RECORDS)))


def test_detect_compression_prefers_a_valid_tfrecord_header(tmp_path):
    # A first record of 376 bytes starts with 78 01: a valid zlib header.
    _write(tmp_path / "f", [b"x" * 376])
    head = (tmp_path / "f").read_bytes()[:16]
    assert head[:2] == b"\x78\x01"
    assert detect_compression(head) is None
    assert list(iter_records(str(tmp_path / "f"))) == [b"x" * 376]
    assert detect_compression(b"\x1f\x8b\x08\x00") == "GZIP"
    assert detect_compression(b"\x78\x9c\x00\x00") == "ZLIB"


def _corrupt(path, pos, value=None):
    data = bytearray(path.read_bytes())
    data[pos] = (data[pos] ^ 0xFF) if value is None else value
    path.write_bytes(bytes(data))


def _three(tmp_path):
    path = tmp_path / "f.tfrecord"
    w = _write(path, [b"one" * 10, b"two" * 10, b"three" * 10])
    return path, w.offsets


# (what to damage, expected record index, expected code, offset of record #)
CASES = [
    ("data", 1, "bad_data_crc"),
    ("length", 1, "bad_length_crc"),
    ("truncate", 2, "truncated"),
    ("first_header", 0, "not_tfrecord"),
]


@pytest.mark.parametrize("what, index, code", CASES)
def test_corruption_raises_naming_file_offset_record(tmp_path, what, index, code):
    path, offsets = _three(tmp_path)
    if what == "data":
        _corrupt(path, offsets[1][0] + 14)
    elif what == "length":
        _corrupt(path, offsets[1][0] + 1)
    elif what == "truncate":
        path.write_bytes(path.read_bytes()[:-3])
    else:
        _corrupt(path, 9)
    got = []
    with pytest.raises(CorruptRecordError) as info:
        for r in iter_records(str(path)):
            got.append(r)
    err = info.value
    assert (err.path, err.record_index, err.code) == (str(path), index, code)
    assert err.offset == offsets[index][0]
    assert str(path) in str(err) and f"#{index}" in str(err) and f"offset {err.offset}" in str(err)
    assert len(got) == index  # the good records before it were delivered


def test_not_a_tfrecord_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a TFRecord file at all")
    with pytest.raises(CorruptRecordError, match="not a TFRecord file") as info:
        list(iter_records(str(path)))
    assert info.value.record_index == 0 and info.value.offset == 0


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "f.gz"
    _write(path, RECORDS, "GZIP")
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(CorruptRecordError) as info:
        list(iter_records(str(path)))
    assert info.value.code in ("bad_compression", "truncated")


def test_skip_mode_skips_bad_data_and_reports(tmp_path):
    path, offsets = _three(tmp_path)
    _corrupt(path, offsets[1][0] + 14)
    report = CorruptionReport()
    got = list(iter_records(str(path), on_corrupt="skip", report=report))
    assert got == [b"one" * 10, b"three" * 10]
    assert [(e.record_index, e.code) for e in report.errors] == [(1, "bad_data_crc")]
    assert report.skipped_records == 1 and report.truncated_files == []


def test_skip_mode_bad_length_ends_the_file(tmp_path):
    path, offsets = _three(tmp_path)
    _corrupt(path, offsets[1][0] + 1)
    report = CorruptionReport()
    assert list(iter_records(str(path), on_corrupt="skip", report=report)) == [b"one" * 10]
    assert report.truncated_files == [str(path)]


def test_verify_crc_false_ignores_data_crc(tmp_path):
    path, offsets = _three(tmp_path)
    _corrupt(path, offsets[2][0] + 12 + 30 + 1)  # the data CRC bytes themselves
    assert len(list(iter_records(str(path), verify_crc=False))) == 3
    with pytest.raises(CorruptRecordError):
        list(iter_records(str(path)))


def test_writer_rejects_bad_input(tmp_path):
    w = RecordFileWriter(path=str(tmp_path / "f"))
    with pytest.raises(TypeError):
        w.write("text")
    w.close()
    with pytest.raises(ValueError):
        w.write(b"x")
    with pytest.raises(ValueError):
        RecordFileWriter(path=str(tmp_path / "g"), compression="LZ4")
