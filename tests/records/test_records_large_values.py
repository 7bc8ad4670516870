"""Records whose few numbers sit between large bytes values (images): the paths built for them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from records_testlib import SPEC, write_dataset
from torch.utils.data import DataLoader

from records.batch_decode import ExampleDecoder, decode_slow
from records.columns import ByteSpans
from records.example_codec import encode_example
from records.reader import RecordDataset
from records.spec import FixedLenFeature, VarLenFeature
from records.torch_batch import _pack_bytes


def _image_records(rng: np.random.Generator, n: int) -> list[bytes]:
    records = []
    for _ in range(n):
        side = int(rng.integers(40, 70))
        pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
        records.append(encode_example({
            "image": [pixels.tobytes()], "image_shape": [side, side, 3],
            "label": [int(rng.integers(0, 2**40))], "ids": rng.integers(0, 300, int(rng.integers(0, 5))),
        }))
    return records


def test_numbers_between_large_bytes_decode_like_protobuf():
    records = _image_records(np.random.default_rng(0), 64)
    spec = {"image": FixedLenFeature((), "bytes"), "image_shape": FixedLenFeature((3,), "int64"),
            "label": FixedLenFeature((1,), "int64"), "ids": VarLenFeature("int64")}
    decoder = ExampleDecoder(spec)
    fast = decoder.decode_records(records)
    assert decoder.fast_chunks == 1 and decoder.slow_chunks == 0
    slow = decode_slow(records, spec)
    np.testing.assert_array_equal(fast["image_shape"], slow["image_shape"])
    np.testing.assert_array_equal(fast["label"], slow["label"])
    assert fast["image"] == slow["image"]
    np.testing.assert_array_equal(fast["ids"].values, slow["ids"].values)
    np.testing.assert_array_equal(fast["ids"].lengths, slow["ids"].lengths)


def test_pack_bytes_pads_large_and_small_values_alike():
    for width in (8, 5000):  # below and above the row-copy threshold
        values = [bytes([i + 1]) * (width - 3 * i) for i in range(3)] + [b""]
        packed, lengths = _pack_bytes(values)
        assert packed.shape == (4, width)
        assert lengths.tolist() == [len(v) for v in values]
        for row, value in enumerate(values):
            assert bytes(packed[row, :len(value)].numpy()) == value
            assert not packed[row, len(value):].any()


def _spans_equal(spans, values):
    assert spans.tolist() == values
    packed, lengths = spans.pack()
    ref, ref_lengths = _pack_bytes(values)
    np.testing.assert_array_equal(packed, ref.numpy())
    np.testing.assert_array_equal(lengths, ref_lengths.numpy())


def test_byte_spans_decode_pack_shuffle_and_concat_like_byte_lists():
    records = _image_records(np.random.default_rng(1), 40)
    spec = {"image": FixedLenFeature((), "bytes"), "label": FixedLenFeature((1,), "int64")}
    values = decode_slow(records, spec)["image"]
    decoder = ExampleDecoder(spec, spans=["image"])
    spans = decoder.decode_records(records)["image"]
    assert isinstance(spans, ByteSpans) and decoder.fast_chunks == 1
    _spans_equal(spans, values)
    order = np.random.default_rng(2).permutation(40)
    other = ExampleDecoder(spec, spans=["image"]).decode_records(records[:7])["image"]
    _spans_equal(ByteSpans.concat([spans.take(order).slice(3, 30), other]),
                 [values[i] for i in order[3:30]] + values[:7])


def test_byte_spans_fill_missing_values_and_survive_the_protobuf_path():
    spec = {"mask": FixedLenFeature((), "bytes", default=b"-"), "n": FixedLenFeature((), "int64")}
    records = [encode_example({"n": [i], **({"mask": [bytes([i]) * 9]} if i % 3 else {})})
               for i in range(9)]
    want = decode_slow(records, spec)["mask"]
    _spans_equal(ExampleDecoder(spec, spans=["mask"]).decode_records(records)["mask"], want)
    broken = records + [b""]  # an empty record: the chunk goes to the protobuf path
    decoder = ExampleDecoder({"mask": spec["mask"]}, spans=["mask"])
    got = decoder.decode_records(broken)["mask"]
    assert decoder.slow_chunks == 1
    _spans_equal(got, want + [b"-"])


def test_uint8_batches_from_workers_come_in_shared_memory(tmp_path):
    uri = write_dataset(tmp_path, n=20, shard_size=6)
    kw = dict(batch_size=6, shuffle=True, seed=3, shuffle_buffer=8)
    as_list = list(RecordDataset(uri, "train", **kw))
    packed = list(DataLoader(RecordDataset(uri, "train", bytes_as="uint8", **kw),
                             batch_size=None, num_workers=1))
    assert [b["label"].tolist() for b in packed] == [b["label"].tolist() for b in as_list]
    for got, ref in zip(packed, as_list, strict=True):
        want, lengths = _pack_bytes(ref["text"])
        assert torch.equal(got["text"], want) and torch.equal(got["text_lengths"], lengths)
        assert got["text"].is_shared()
    with pytest.raises(ValueError, match="not a scalar bytes feature"):
        ExampleDecoder(SPEC, spans=["ids"])
