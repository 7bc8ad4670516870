"""Byte-level and decode-level compatibility with TensorFlow (runs where TF is installed)."""

import numpy as np
import pytest

from records.batch_decode import ExampleDecoder
from records.example_codec import (
    decode_example,
    decode_sequence_example,
    encode_example,
    encode_sequence_example,
)
from records.framing import RecordFileWriter, iter_records
from records.spec import FixedLenFeature, VarLenFeature

pytestmark = pytest.mark.tf

COMPRESSIONS = [None, "GZIP", "ZLIB"]


def _tf_example(tf, i):
    f = tf.train.Feature
    return tf.train.Example(features=tf.train.Features(feature={
        "ids": f(int64_list=tf.train.Int64List(value=list(range(-1, i)) + [2**40 + i])),
        "w": f(float_list=tf.train.FloatList(value=[i / 3, -i])),
        "s": f(bytes_list=tf.train.BytesList(value=[f"s{i}".encode()])),
    })).SerializeToString()


def _tf_sequence(tf, i):
    f = tf.train.Feature
    return tf.train.SequenceExample(
        context=tf.train.Features(feature={"id": f(int64_list=tf.train.Int64List(value=[i]))}),
        feature_lists=tf.train.FeatureLists(feature_list={"tok": tf.train.FeatureList(feature=[
            f(int64_list=tf.train.Int64List(value=list(range(j + 1)))) for j in range(i % 4)])}),
    ).SerializeToString()


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("kind", ["example", "sequence"])
def test_files_written_by_tensorflow_decode_identically(tf, tmp_path, compression, kind):
    path = str(tmp_path / "tf.tfrecord")
    make = _tf_example if kind == "example" else _tf_sequence
    records = [make(tf, i) for i in range(5)]
    with tf.io.TFRecordWriter(path, options=compression or "") as w:
        for r in records:
            w.write(r)
    got = list(iter_records(path))  # compression auto-detected
    assert got == records
    for data in got:
        if kind == "example":
            ours = decode_example(data)
            theirs = tf.train.Example.FromString(data).features.feature
            assert ours["ids"].tolist() == list(theirs["ids"].int64_list.value)
            assert ours["w"].tolist() == list(np.float32(theirs["w"].float_list.value))
            assert ours["s"] == list(theirs["s"].bytes_list.value)
        else:
            ctx, lists = decode_sequence_example(data)
            theirs = tf.train.SequenceExample.FromString(data)
            assert ctx["id"].tolist() == list(theirs.context.feature["id"].int64_list.value)
            assert [s.tolist() for s in lists.get("tok", [])] == [
                list(f.int64_list.value) for f in theirs.feature_lists.feature_list["tok"].feature]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_our_files_read_by_tf_data_and_parse_example(tf, tmp_path, compression):
    path = str(tmp_path / "ours.tfrecord")
    examples = [{"tok": np.arange(3) * i, "len": [i], "w": [i * 0.25], "v": ("int64", [i] * (i % 3)),
                 "name": f"n{i}"} for i in range(6)]
    with RecordFileWriter(path=path, compression=compression) as w:
        for ex in examples:
            w.write(encode_example(ex))
    raw = [t.numpy() for t in tf.data.TFRecordDataset(path, compression_type=compression or "")]
    assert raw == list(iter_records(path))
    tf_spec = {"tok": tf.io.FixedLenFeature([3], tf.int64), "len": tf.io.FixedLenFeature([], tf.int64),
               "w": tf.io.FixedLenFeature([], tf.float32), "v": tf.io.VarLenFeature(tf.int64),
               "name": tf.io.FixedLenFeature([], tf.string)}
    parsed = tf.io.parse_example(tf.constant(raw), tf_spec)
    spec = {"tok": FixedLenFeature((3,), "int64"), "len": FixedLenFeature((), "int64"),
            "w": FixedLenFeature((), "float32"), "v": VarLenFeature("int64"),
            "name": FixedLenFeature((), "bytes")}
    cols = ExampleDecoder(spec).decode_records(raw)
    np.testing.assert_array_equal(cols["tok"], parsed["tok"].numpy())
    np.testing.assert_array_equal(cols["len"], parsed["len"].numpy())
    np.testing.assert_array_equal(cols["w"], parsed["w"].numpy())
    assert cols["name"] == list(parsed["name"].numpy())
    dense = tf.sparse.to_dense(parsed["v"]).numpy()
    padded, lengths = cols["v"].padded(None, 0)
    np.testing.assert_array_equal(padded, dense[:, :padded.shape[1]])
    np.testing.assert_array_equal(lengths, [len(e["v"][1]) for e in examples])


def test_sequence_examples_parse_in_tensorflow(tf):
    data = encode_sequence_example({"id": 7}, {"tok": [[1, 2], [3, 4]], "w": [[0.5], [1.5]]})
    ctx, seq = tf.io.parse_single_sequence_example(
        data, context_features={"id": tf.io.FixedLenFeature([], tf.int64)},
        sequence_features={"tok": tf.io.FixedLenSequenceFeature([2], tf.int64),
                           "w": tf.io.FixedLenSequenceFeature([1], tf.float32)})
    assert int(ctx["id"]) == 7
    assert seq["tok"].numpy().tolist() == [[1, 2], [3, 4]]
    assert seq["w"].numpy().tolist() == [[0.5], [1.5]]


def test_fast_decoder_matches_parse_example_with_defaults(tf):
    rng = np.random.default_rng(3)
    raw = []
    for i in range(200):
        ex = {"tok": rng.integers(0, 2**20, 8), "neg": [int(rng.integers(-2**62, 2**62))]}
        if i % 3:
            ex["opt"] = [float(rng.random())]
        raw.append(encode_example(ex))
    spec = {"tok": FixedLenFeature((8,), "int64"), "neg": FixedLenFeature((), "int64"),
            "opt": FixedLenFeature((), "float32", default=-2.0)}
    dec = ExampleDecoder(spec)
    cols = dec.decode_records(raw)
    assert dec.slow_chunks == 0
    parsed = tf.io.parse_example(tf.constant(raw), {
        "tok": tf.io.FixedLenFeature([8], tf.int64), "neg": tf.io.FixedLenFeature([], tf.int64),
        "opt": tf.io.FixedLenFeature([], tf.float32, default_value=-2.0)})
    for k in spec:
        np.testing.assert_array_equal(cols[k], parsed[k].numpy(), err_msg=k)
