"""The image dataset's masks and boxes as TensorFlow reads them: parse_single_example with
the spec's parse_spec (VarLenFeature for the boxes) gives back what the feature layer encoded."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from features.exports import parse_spec
from features.spec import FeatureSpec, load_spec
from features.transform import encode, transform_batch

tf = pytest.importorskip("tensorflow")
pytestmark = [pytest.mark.tf, pytest.mark.integration]


def test_boxes_and_masks_parse_with_tf_as_encoded():
    spec = load_spec("conf/features/images.yaml")
    rng = np.random.default_rng(7)
    n = 6
    masks = [rng.integers(0, 4, 32 * 32, dtype=np.uint8).tobytes() if i % 3 else None
             for i in range(n)]
    boxes = [[int(v) for v in rng.integers(0, 32, 4 * (i % 4))] if i % 3 else None
             for i in range(n)]
    box_labels = [[int(v) for v in rng.integers(1, 4, i % 4)] if i % 3 else None
                  for i in range(n)]
    batch = pa.RecordBatch.from_pydict({
        "image_id": [f"img{i}" for i in range(n)],
        "image": pa.array([rng.integers(0, 256, 32 * 32 * 3, dtype=np.uint8).tobytes()
                           for _ in range(n)], pa.binary()),
        "mask": pa.array(masks, pa.binary()),
        "boxes": pa.array(boxes, pa.list_(pa.int64())),
        "box_labels": pa.array(box_labels, pa.list_(pa.int64())),
        "label": ["circle", "square", "triangle"] * 2,
    })
    encoded = transform_batch(batch, spec)
    examples = encode(batch, spec).examples
    features = parse_spec(spec)
    assert isinstance(features["boxes"], tf.io.VarLenFeature)
    assert features["boxes"].dtype == tf.int64 == features["box_labels"].dtype
    for i, (_, example) in enumerate(examples):
        parsed = tf.io.parse_single_example(example, features)
        assert tf.sparse.to_dense(parsed["boxes"]).numpy().tolist() == (boxes[i] or [])
        assert tf.sparse.to_dense(parsed["box_labels"]).numpy().tolist() == (box_labels[i] or [])
        assert parsed["mask"].numpy() == (masks[i] or b"")
        assert parsed["mask_shape"].numpy().tolist() == ([32, 32, 1] if masks[i] else [0, 0, 0])
        assert int(parsed["label"].numpy()[0]) == encoded.column("label")[i].as_py()
    # the boxes as the detector reads them: (N, 4) int64, x0 y0 x1 y1
    parsed = tf.io.parse_single_example(examples[1][1], features)
    as_boxes = tf.reshape(tf.sparse.to_dense(parsed["boxes"]), (-1, 4))
    assert as_boxes.shape == (1, 4)


def test_float_lists_parse_as_float32():
    spec = FeatureSpec.model_validate({"key": "k", "features": {
        "scores": {"kind": "numeric_list", "source": "s", "dtype": "float32"}}})
    values = [[0.5, -1.25, 3e-8], [], [7.0]]
    batch = pa.RecordBatch.from_pydict({"k": ["a", "b", "c"], "s": values})
    parsed = tf.io.parse_example([e for _, e in encode(batch, spec).examples], parse_spec(spec))
    dense = tf.sparse.to_dense(parsed["scores"]).numpy()
    for row, expected in zip(dense, values, strict=True):
        np.testing.assert_array_equal(row[: len(expected)], np.float32(expected))
