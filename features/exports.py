"""The spec seen from the readers: records/'s decode spec, tf.io parse specs, TF feature columns.

Three views of the same Examples (TensorFlow is imported inside the TF functions only):

- :func:`decode_spec`: ``records.spec`` FixedLen/VarLen features for the PyTorch reader.
- :func:`parse_spec`: the dict ``tf.io.parse_example`` takes.
- :func:`to_feature_columns`: ``tf.feature_column`` objects over the *encoded* Examples
  (ids are already ids, numbers already scaled): identity columns sized by the artifacts,
  wrapped by the spec's embedding/indicator entries; labels and weights are left out, as
  estimators took them by key. :func:`raw_feature_columns` gives the TF columns that would
  compute the same encoding from the *raw* input columns; the parity tests run them.

``tf.feature_column`` still exists in TF 2.21 (deprecated; ``DenseFeatures`` left with
Keras 2). Its columns still transform through ``get_sparse_tensors`` / ``get_dense_tensor``
and ``make_parse_example_spec``; a Keras 3 model uses the equivalent preprocessing layers:
``IntegerLookup``/``StringLookup`` (vocabulary, ``num_oov_indices``), ``Hashing``
(FarmHash Fingerprint64, the same ids), ``HashedCrossing``, ``Discretization``
(bucket boundaries), ``Normalization`` (z-score), ``CategoryEncoding`` (indicator) and
``Embedding``. Text and images have no feature column: text is a sequence of ids
(``sequence_categorical_column_with_identity`` for the document layout) and an image is
``tf.io.decode_raw(<name>, tf.uint8)`` reshaped by ``<name>_shape``.
"""

from __future__ import annotations

from features.artifacts import Artifacts, num_ids, resolve_artifacts
from features.kinds import (
    ID_KINDS,
    BucketizedFeature,
    CategoricalFeature,
    CrossedFeature,
    EmbeddingFeature,
    HashedFeature,
    IdentityFeature,
    ImageFeature,
    IndicatorFeature,
    NumericFeature,
    NumericListFeature,
    TextFeature,
)
from records.spec import FixedLenFeature, VarLenFeature

__all__ = ["decode_spec", "parse_spec", "raw_feature_columns", "to_feature_columns"]


def _layout(spec) -> dict[str, tuple]:
    """name → ("fixed", shape, dtype, default) | ("var", dtype) for every Example key."""
    out: dict[str, tuple] = {}
    for name, f in spec.encoded().items():
        if isinstance(f, TextFeature):
            out[name] = ("var", "int64") if f.layout == "document" else \
                ("fixed", (f.block_size,), "int64", None)
        elif isinstance(f, ImageFeature):
            optional = not f.required
            out[name] = ("fixed", (), "bytes", b"" if optional else None)
            out[f"{name}_shape"] = ("fixed", (3,), "int64", (0, 0, 0) if optional else None)
        elif isinstance(f, NumericFeature):
            out[name] = ("fixed", (1,), f.dtype, None)
        elif isinstance(f, NumericListFeature):
            out[name] = ("var", f.dtype)
        else:
            out[name] = ("fixed", (1,), "int64", None)
    return out


def decode_spec(spec, artifacts: Artifacts | None = None) -> dict[str, FixedLenFeature | VarLenFeature]:
    """The records/ decode spec of the examples ``spec`` produces (PyTorch reader).

    A document-layout text feature is ``VarLenFeature("int64")`` and a numeric list a
    ``VarLenFeature`` of its dtype: the reader pads them and adds ``<name>_lengths``. An optional image decodes to ``b""`` and shape ``(0, 0, 0)``
    when absent.
    """
    out: dict[str, FixedLenFeature | VarLenFeature] = {}
    for name, entry in _layout(spec).items():
        out[name] = VarLenFeature(entry[1]) if entry[0] == "var" else \
            FixedLenFeature(entry[1], entry[2], default=entry[3])
    return out


def parse_spec(spec, artifacts: Artifacts | None = None) -> dict:
    """The feature dict for ``tf.io.parse_example`` / ``parse_single_example``."""
    import tensorflow as tf

    dtypes = {"int64": tf.int64, "float32": tf.float32, "bytes": tf.string}
    out = {}
    for name, entry in _layout(spec).items():
        if entry[0] == "var":
            out[name] = tf.io.VarLenFeature(dtypes[entry[1]])
        else:
            out[name] = tf.io.FixedLenFeature(list(entry[1]), dtypes[entry[2]],
                                              default_value=entry[3])
    return out


def _wrap(spec, columns: dict, fc) -> dict:
    """Add the spec's embedding/indicator columns around the id columns they name."""
    for name, f in spec.features.items():
        if isinstance(f, EmbeddingFeature):
            columns[name] = fc.embedding_column(columns[f.categorical], dimension=f.dimension,
                                                combiner=f.combiner)
        elif isinstance(f, IndicatorFeature):
            columns[name] = fc.indicator_column(columns[f.categorical])
    return columns


def to_feature_columns(spec, artifacts: Artifacts | None = None) -> dict:
    """``tf.feature_column`` objects reading the encoded Examples, keyed by feature name.

    Numerics → ``numeric_column``; every id feature → ``categorical_column_with_identity``
    (``num_buckets`` = its id count); embedding/indicator → ``embedding_column`` /
    ``indicator_column`` over it; document text → ``sequence_categorical_column_with_identity``.
    Labels and weights are not model inputs and are left out (``spec.with_role``).

    Raises:
        ValueError: an artifact the id counts need is missing.
    """
    import tensorflow as tf

    fc = tf.feature_column
    artifacts = resolve_artifacts(spec, artifacts)
    columns: dict = {}
    for name, f in spec.features.items():
        if isinstance(f, NumericFeature):
            columns[name] = fc.numeric_column(name, shape=(1,), dtype=getattr(tf, f.dtype))
        elif isinstance(f, ID_KINDS):
            columns[name] = fc.categorical_column_with_identity(
                name, num_buckets=num_ids(spec, name, artifacts))
        elif isinstance(f, TextFeature) and f.layout == "document":
            columns[name] = fc.sequence_categorical_column_with_identity(
                name, num_buckets=f.vocab_size)
    columns = _wrap(spec, columns, fc)
    return {n: c for n, c in columns.items() if spec.features[n].role == "feature"}


def raw_feature_columns(spec, artifacts: Artifacts | None = None) -> dict:
    """The ``tf.feature_column`` objects that compute this spec's encoding from raw inputs.

    Keyed by feature name; each reads its ``source`` column (crosses: the raw columns and
    the columns of the features they name). Text and images have none. Normalized numerics
    carry the artifacts' statistics in a ``normalizer_fn``.
    """
    import tensorflow as tf

    fc = tf.feature_column
    artifacts = resolve_artifacts(spec, artifacts)
    columns: dict = {}
    for name, f in spec.features.items():
        if isinstance(f, NumericFeature):
            columns[name] = fc.numeric_column(f.source, dtype=getattr(tf, f.dtype),
                                              normalizer_fn=_normalizer(f, artifacts.stats.get(name)))
        elif isinstance(f, BucketizedFeature):
            columns[name] = fc.bucketized_column(fc.numeric_column(f.source),
                                                 list(artifacts.boundaries[name]))
        elif isinstance(f, CategoricalFeature):
            if f.vocabulary_file is not None:  # TF's "no default" is None here, -1 below
                columns[name] = fc.categorical_column_with_vocabulary_file(
                    f.source, f.vocabulary_file, vocabulary_size=len(artifacts.vocabularies[name]),
                    num_oov_buckets=f.num_oov_buckets, default_value=f.default_value)
            else:
                columns[name] = fc.categorical_column_with_vocabulary_list(
                    f.source, artifacts.vocabularies[name], num_oov_buckets=f.num_oov_buckets,
                    default_value=-1 if f.default_value is None else f.default_value)
        elif isinstance(f, HashedFeature):
            columns[name] = fc.categorical_column_with_hash_bucket(f.source, f.hash_bucket_size)
        elif isinstance(f, IdentityFeature):
            columns[name] = fc.categorical_column_with_identity(
                f.source, f.num_buckets, default_value=f.default_value)
    for name, f in spec.features.items():
        if isinstance(f, CrossedFeature):
            keys = [columns.get(c, c) if c in spec.features else c for c in f.columns]
            columns[name] = fc.crossed_column(keys, f.hash_bucket_size, hash_key=f.hash_key)
    return _wrap(spec, columns, fc)


def _normalizer(feature: NumericFeature, stats: dict | None):
    if feature.normalize == "none":
        return None
    if feature.normalize == "z_score":
        mean, std = stats["mean"], stats["std"]
        return (lambda x: (x - mean) / std) if std > 0 else (lambda x: x - mean)
    low, span = stats["min"], stats["max"] - stats["min"]
    return (lambda x: (x - low) / span) if span > 0 else (lambda x: x * 0 + 0.5)
