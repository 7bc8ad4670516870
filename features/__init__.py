"""The feature layer: a YAML spec, pure transforms over ``pyarrow.RecordBatch``es, and the
``tf.Example`` bytes they end in. Engine-agnostic: Beam and Spark only move batches through it.
"""

from features.spec import FeatureSpec, load_spec
from features.transform import encode_batch, transform_batch

__all__ = ["FeatureSpec", "encode_batch", "load_spec", "transform_batch"]
