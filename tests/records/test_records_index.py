"""records.index: the ``.idx`` parser refuses junk without touching the warning filters."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from records.index import format_index, read_index


def test_a_well_formed_index_reads_back(tmp_path):
    path = tmp_path / "part-0.tfrecord.idx"
    path.write_bytes(format_index([(0, 20), (20, 116), (136, 16)]))
    np.testing.assert_array_equal(read_index(str(path)), [[0, 20], [20, 116], [136, 16]])


@pytest.mark.parametrize("data", [b"0 20\n20 3x\n", b"0 20\n\x00", b"-1 20\n", "0 2é\n".encode(),
                                  b"0 20 36\n"])
def test_junk_is_a_malformed_index_naming_the_file(tmp_path, data):
    path = tmp_path / "bad.idx"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"bad\.idx: malformed index"):
        read_index(str(path))


def test_parsing_leaves_the_process_warning_filters_alone(tmp_path, monkeypatch):
    # Reader threads parse indexes while other threads run: a filter change here (say
    # "error" for every warning) would turn another thread's warnings into exceptions.
    def refuse(*args, **kwargs):
        raise AssertionError("read_index changed the process's warning filters")

    good, bad = tmp_path / "good.idx", tmp_path / "junk.idx"
    good.write_bytes(format_index([(0, 20)]))
    bad.write_bytes(b"0 twenty\n")
    monkeypatch.setattr(warnings, "simplefilter", refuse)
    monkeypatch.setattr(warnings, "filterwarnings", refuse)
    filters = list(warnings.filters)
    assert read_index(str(good)).tolist() == [[0, 20]]
    with pytest.raises(ValueError, match="malformed"):
        read_index(str(bad))
    assert warnings.filters == filters
