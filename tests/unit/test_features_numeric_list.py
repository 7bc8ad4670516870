"""The numeric_list kind: Arrow lists of numbers -> variable-length tf.Example lists (boxes)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from features.exports import decode_spec
from features.spec import FeatureSpec, load_spec
from features.transform import encode, transform
from records.example_codec import encode_example
from records.reader import RecordDataset
from records.spec import VarLenFeature
from records.writer import DatasetWriter

BOXES = {"kind": "numeric_list", "source": "b", "group": 4, "required": False}


def _spec(**features) -> FeatureSpec:
    return FeatureSpec.model_validate({"key": "k", "on_error": "quarantine",
                                       "features": features})


def _batch(**columns) -> pa.RecordBatch:
    n = len(next(iter(columns.values())))
    return pa.RecordBatch.from_pydict({"k": [f"r{i}" for i in range(n)], **columns})


def test_lists_encode_as_encode_example_does_and_bad_rows_name_their_fault():
    spec = _spec(boxes=BOXES, score={"kind": "numeric_list", "source": "f", "dtype": "float32"})
    boxes = pa.array([[1, 2, 3, 4], None, [], [1, 2, 3], [0, 0, 5, 5, 1, 1, 2, 2], [1, 2, 3, 4]],
                     pa.list_(pa.int32()))
    scores = pa.array([[1.5], [2, 3], [], [1.0], [0.25], [None]], pa.list_(pa.float64()))
    result = encode(_batch(b=boxes, f=scores), spec)
    q = result.quarantined.to_pydict()
    assert (q["_row"], q["_feature"]) == ([3, 5], ["boxes", "score"])
    assert q["_reason"] == ["has 3 values, not a multiple of group 4", "the list holds a null"]
    expected = [
        {"boxes": [1, 2, 3, 4], "score": np.array([1.5], np.float32)},
        {"score": np.array([2, 3], np.float32)},  # a null optional list: no feature at all
        {"boxes": ("int64", []), "score": ("float32", [])},  # an empty list is kept, empty
        {"boxes": [0, 0, 5, 5, 1, 1, 2, 2], "score": np.array([0.25], np.float32)},
    ]
    assert [key for key, _ in result.examples] == ["r0", "r1", "r2", "r4"]
    assert [ex for _, ex in result.examples] == [encode_example(e) for e in expected]


@pytest.mark.parametrize(
    ("column", "entry", "reason"),
    [
        (pa.array([[1.0, 2.5]], pa.list_(pa.float64())), {"dtype": "int64"},
         "holds a value that is not an integer"),
        (pa.array([None], pa.list_(pa.int64())), {}, "value is null"),  # required by default
    ],
)
def test_bad_values_are_bad_rows(column, entry, reason):
    spec = _spec(v={"kind": "numeric_list", "source": "v", **entry})
    quarantined = transform(_batch(v=column), spec).quarantined.to_pydict()
    assert reason in quarantined["_reason"][0]


def test_a_column_that_is_not_a_list_of_numbers_raises():
    spec = _spec(v={"kind": "numeric_list", "source": "v"})
    with pytest.raises(ValueError, match="'v' \\(column 'v'\\): expected a list of numbers"):
        transform(_batch(v=pa.array([["a"]])), spec)
    with pytest.raises(ValueError, match="expected a list of numbers"):
        transform(_batch(v=pa.array([1, 2])), spec)


def test_spec_checks_the_readers_lengths_output_and_the_role():
    with pytest.raises(ValueError, match="output 'b_lengths' collides"):
        _spec(b={"kind": "numeric_list", "source": "x"},
              b_lengths={"kind": "numeric", "source": "y"})
    with pytest.raises(ValueError, match="a numeric_list cannot be a label"):
        _spec(b={"kind": "numeric_list", "source": "x", "role": "label"})
    with pytest.raises(ValueError, match="group"):
        _spec(b={"kind": "numeric_list", "source": "x", "group": 0})


def test_the_image_spec_reads_boxes_back_through_records(tmp_path):
    spec = load_spec("conf/features/images.yaml")
    reader_spec = decode_spec(spec)
    assert reader_spec["boxes"] == VarLenFeature("int64") == reader_spec["box_labels"]
    pixels = bytes(32 * 32 * 3)
    batch = _batch(image=pa.array([pixels] * 3, pa.binary()),
                   mask=pa.array([bytes(32 * 32), None, bytes(32 * 32)], pa.binary()),
                   boxes=pa.array([[1, 2, 5, 6, 0, 0, 32, 32], None, []], pa.list_(pa.int64())),
                   box_labels=pa.array([[1, 3], None, []], pa.list_(pa.int64())),
                   label=["circle", "square", "triangle"]).rename_columns(
        ["image_id", "image", "mask", "boxes", "box_labels", "label"])
    result = encode(batch, spec)
    assert result.quarantined.num_rows == 0
    uri = (tmp_path / "ds").as_uri()
    with DatasetWriter(uri=uri, dataset="ds", version="1", feature_spec=reader_spec) as writer:
        for _, example in result.examples:
            writer.write("train", example)
    [read] = list(RecordDataset(uri, "train", batch_size=3, shuffle=False,
                                feature_spec=reader_spec))
    assert read["boxes_lengths"].tolist() == [8, 0, 0]
    assert read["box_labels_lengths"].tolist() == [2, 0, 0]
    assert torch.equal(read["boxes"][0], torch.tensor([1, 2, 5, 6, 0, 0, 32, 32]))
    assert read["mask_shape"].tolist() == [[32, 32, 1], [0, 0, 0], [32, 32, 1]]
