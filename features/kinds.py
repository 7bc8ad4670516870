"""The feature kinds of a spec: one typed, frozen model per kind, checked on load.

Each kind mirrors a TensorFlow feature column and encodes to exactly what TF would compute
(see :mod:`features.encoders` for the semantics, :mod:`features.exports` for the TF side):

============  ======================================================  ========================
kind          TF equivalent                                           Example gets
============  ======================================================  ========================
numeric       ``numeric_column`` (+ tf.Transform z-score / min-max)   ``[1]`` int64 / float32
bucketized    ``bucketized_column`` (explicit or quantile bounds)     ``[1]`` int64 bucket id
categorical   ``categorical_column_with_vocabulary_list/_file``       ``[1]`` int64 id
hashed        ``categorical_column_with_hash_bucket``                 ``[1]`` int64 id
identity      ``categorical_column_with_identity``                    ``[1]`` int64 id
crossed       ``crossed_column``                                      ``[1]`` int64 id
embedding     ``embedding_column`` (model-side metadata only)         nothing
indicator     ``indicator_column`` (model-side metadata only)         nothing
text          token ids (bytes or a trained byte-level BPE)           var-len or packed ids
image         raw uint8 HWC                                           bytes + ``_shape`` [3]
numeric_list  ``tf.io.VarLenFeature`` of int64 / float32 (boxes)      var-len int64 / float32
============  ======================================================  ========================

Labels and weights are a ``role``, not a kind: ``role: label`` marks any id or numeric
feature as a training target and ``role: weight`` one float numeric as the example weight.
They are encoded like any feature; :func:`features.exports.to_feature_columns` leaves them
out of the model's inputs, as TF's estimators took them by key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BYTE_VOCAB_SIZE",
    "ID_KINDS",
    "RESERVED_IDS",
    "BucketizedFeature",
    "CategoricalFeature",
    "ComputedVocabulary",
    "CrossedFeature",
    "EmbeddingFeature",
    "HashedFeature",
    "IdentityFeature",
    "ImageFeature",
    "IndicatorFeature",
    "NumericFeature",
    "NumericListFeature",
    "TextFeature",
]

RESERVED_IDS = {"pad": 0, "bos": 1, "eos": 2}  # the first ids of every tokenizer
BYTE_VOCAB_SIZE = 256 + len(RESERVED_IDS)

Role = Literal["feature", "label", "weight"]


class _Kind(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    role: Role = "feature"


class _Input(_Kind):
    source: str  # the input column


class TextFeature(_Input):
    """Text → token ids.

    ``tokenizer: bytes`` maps UTF-8 bytes to ``byte + 3`` (vocab 259); ``tokenizer: bpe``
    trains a byte-level BPE (HF ``tokenizers``) of ``vocab_size`` ids on the train split.
    Ids 0, 1, 2 are pad, bos, eos in both. ``layout: document`` gives each row its ids
    (at most ``max_tokens``, eos included); ``layout: packed`` concatenates the documents
    of a batch, eos after each, into ``block_size`` blocks (one Example per block).
    """

    kind: Literal["text"]
    tokenizer: Literal["bytes", "bpe"] = "bytes"
    vocab_size: int = Field(default=BYTE_VOCAB_SIZE, gt=BYTE_VOCAB_SIZE - 1)
    min_frequency: int = Field(default=2, ge=1)  # BPE: a merge must occur this often
    max_tokens: int = Field(default=512, gt=0)
    append_eos: bool = True
    layout: Literal["document", "packed"] = "document"
    block_size: int | None = Field(default=None, gt=1)

    @model_validator(mode="after")
    def _check(self) -> TextFeature:
        if self.tokenizer == "bytes" and self.vocab_size != BYTE_VOCAB_SIZE:
            raise ValueError(f"vocab_size is fixed at {BYTE_VOCAB_SIZE} with tokenizer: bytes")
        if self.tokenizer == "bpe" and "vocab_size" not in self.model_fields_set:
            raise ValueError("vocab_size is required with tokenizer: bpe")
        if (self.layout == "packed") != (self.block_size is not None):
            raise ValueError("block_size is required with layout: packed, and only there")
        if self.role != "feature":
            raise ValueError("text cannot be a label or a weight")
        return self


class ComputedVocabulary(BaseModel):
    """A vocabulary counted on the train split: most frequent first, ties by value."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    top_k: int | None = Field(default=None, gt=0)
    min_frequency: int = Field(default=1, ge=1)


class CategoricalFeature(_Input):
    """A string (or integer, as decimal text) → its index in a vocabulary.

    Exactly one of ``vocabulary`` (a list), ``vocabulary_file`` (one value per line, TF's
    format; relative to the spec file) or ``computed_vocabulary``. Values outside it get
    ``len(vocab) + Fingerprint64(v) % num_oov_buckets``, else ``default_value``; with
    neither the vocabulary is closed and such a value is a bad row.
    """

    kind: Literal["categorical"]
    vocabulary: list[str] | None = Field(default=None, min_length=1)
    vocabulary_file: str | None = None
    computed_vocabulary: ComputedVocabulary | None = None
    num_oov_buckets: int = Field(default=0, ge=0)
    default_value: int | None = None

    @model_validator(mode="after")
    def _check(self) -> CategoricalFeature:
        given = [k for k in ("vocabulary", "vocabulary_file", "computed_vocabulary")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of vocabulary, vocabulary_file, computed_vocabulary"
                             f" (got {given or 'none'})")
        if self.vocabulary is not None and len(set(self.vocabulary)) != len(self.vocabulary):
            dupes = sorted({v for v in self.vocabulary if self.vocabulary.count(v) > 1})
            raise ValueError(f"vocabulary has duplicates {dupes}")
        if self.num_oov_buckets and self.default_value is not None:
            raise ValueError("default_value cannot be combined with num_oov_buckets (as in TF)")
        return self

    @property
    def num_ids(self) -> int:
        """Ids of a list vocabulary; file and computed ones know it from the artifacts."""
        if self.vocabulary is None:
            raise ValueError("the vocabulary size is known from the artifacts "
                             "(features.artifacts.num_ids)")
        return len(self.vocabulary) + self.num_oov_buckets


class NumericFeature(_Input):
    """A number, as is or scaled with train-split statistics (tf.Transform's scalers).

    ``z_score``: ``(x - mean) / std`` (population std; ``x - mean`` where std is 0, as
    ``tft.scale_to_z_score``). ``min_max``: ``(x - min) / (max - min)``, 0.5 where
    ``max == min`` (the middle of the range, as ``tft.scale_by_min_max``).
    """

    kind: Literal["numeric"]
    dtype: Literal["int64", "float32"] = "float32"
    normalize: Literal["none", "z_score", "min_max"] = "none"

    @model_validator(mode="after")
    def _check(self) -> NumericFeature:
        if self.normalize != "none" and self.dtype != "float32":
            raise ValueError(f"normalize: {self.normalize} gives float32; set dtype: float32")
        if self.role == "weight" and (self.dtype != "float32" or self.normalize != "none"):
            raise ValueError("a weight is a float32 numeric without normalization")
        return self


class BucketizedFeature(_Input):
    """A number → the count of boundaries <= it (``bucketized_column``; left-inclusive).

    Exactly one of ``boundaries`` (strictly increasing, compared as float32 as TF's
    ``Bucketize`` does) or ``num_buckets`` (quantiles of the train split).
    """

    kind: Literal["bucketized"]
    boundaries: list[float] | None = Field(default=None, min_length=1)
    num_buckets: int | None = Field(default=None, ge=2)

    @model_validator(mode="after")
    def _check(self) -> BucketizedFeature:
        if (self.boundaries is None) == (self.num_buckets is None):
            raise ValueError("give exactly one of boundaries, num_buckets")
        b = self.boundaries or []
        if any(lo >= hi for lo, hi in zip(b, b[1:], strict=False)):
            raise ValueError(f"boundaries must be strictly increasing, got {b}")
        return self


class HashedFeature(_Input):
    """A string (or integer, as decimal text) → ``Fingerprint64(v) % hash_bucket_size``."""

    kind: Literal["hashed"]
    hash_bucket_size: int = Field(gt=0)


class IdentityFeature(_Input):
    """An integer in ``[0, num_buckets)`` as its own id; others get ``default_value`` or are bad."""

    kind: Literal["identity"]
    num_buckets: int = Field(gt=0)
    default_value: int | None = None

    @model_validator(mode="after")
    def _check(self) -> IdentityFeature:
        if self.default_value is not None and not 0 <= self.default_value < self.num_buckets:
            raise ValueError(f"default_value must be in [0, {self.num_buckets})")
        return self


class CrossedFeature(_Kind):
    """The hashed cross of ``columns`` (``crossed_column``).

    A name that is a feature of the spec crosses that feature's id (categorical, hashed,
    identity or bucketized); any other name is a raw input column (strings fingerprinted,
    integers as they are, as TF's ``sparse_cross_hashed``). ``hash_key`` None or 0 means
    TF's default key.
    """

    kind: Literal["crossed"]
    columns: list[str] = Field(min_length=2)
    hash_bucket_size: int = Field(gt=0)
    hash_key: int | None = None


class EmbeddingFeature(_Kind):
    """Model-side: embed the ids of ``categorical`` (``embedding_column``); encodes nothing."""

    kind: Literal["embedding"]
    categorical: str
    dimension: int = Field(gt=0)
    combiner: Literal["mean", "sqrtn", "sum"] = "mean"


class IndicatorFeature(_Kind):
    """Model-side: one-hot the ids of ``categorical`` (``indicator_column``); encodes nothing."""

    kind: Literal["indicator"]
    categorical: str


class ImageFeature(_Input):
    """Raw uint8 HWC bytes of a declared shape → ``<name>`` bytes + ``<name>_shape`` int64[3].

    A row whose byte length is not ``height * width * channels`` is bad. With
    ``required: false`` a null input leaves both features out of the Example.
    """

    kind: Literal["image"]
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: int = Field(gt=0, le=4)
    required: bool = True

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    @model_validator(mode="after")
    def _check(self) -> ImageFeature:
        if self.role != "feature":
            raise ValueError("an image cannot be a label or a weight")
        return self


class NumericListFeature(_Input):
    """A list of numbers → a variable-length int64 or float32 list (``tf.io.VarLenFeature``).

    The input column is an Arrow list of numbers (``list<int64>``, ``list<float>``, ...);
    each row's values are written as they are, in order: an int64 list must hold integers.
    ``group: n`` says the values come in n-tuples (a box is 4 numbers), so a row whose
    length is not a multiple of ``n`` is bad, as is a null value inside a list. A null row
    is bad unless ``required: false``: then the row's Example leaves the feature out, which
    ``tf.io.VarLenFeature`` and the records/ reader read as an empty list, like an empty row.
    """

    kind: Literal["numeric_list"]
    dtype: Literal["int64", "float32"] = "int64"
    group: int = Field(default=1, gt=0)
    required: bool = True


# Kinds whose Example value is one int64 id, which crosses, embeddings and indicators take.
ID_KINDS = (CategoricalFeature, HashedFeature, IdentityFeature, BucketizedFeature, CrossedFeature)
