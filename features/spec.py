"""The feature spec: which column becomes which feature, and how.

A spec is YAML validated into typed objects (unknown keys and wrong types name the key)::

    key: doc_id              # the stable key column: split and shard assignment hash it
    on_error: raise          # or quarantine: bad rows come back apart, with their reason
    features:
      <name>: {kind: <kind>, ...}   # the kinds are in features.kinds

:func:`features.exports.decode_spec` gives what ``records/``'s PyTorch reader decodes with;
the TF side (``tf.io.parse_example`` specs, feature columns) is there too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.kinds import (
    BYTE_VOCAB_SIZE,
    ID_KINDS,
    RESERVED_IDS,
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

__all__ = [
    "BYTE_VOCAB_SIZE",
    "RESERVED_IDS",
    "BucketizedFeature",
    "CategoricalFeature",
    "CrossedFeature",
    "EmbeddingFeature",
    "Feature",
    "FeatureSpec",
    "HashedFeature",
    "IdentityFeature",
    "ImageFeature",
    "IndicatorFeature",
    "NumericFeature",
    "NumericListFeature",
    "SpecError",
    "TextFeature",
    "load_spec",
]

# A name becomes a tf.Example key and an artifact file name (a lake path segment).
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Kinds that can be a label; a weight is a float numeric (checked by the kind).
_CROSSABLE = (CategoricalFeature, HashedFeature, IdentityFeature, BucketizedFeature)
_LABEL_KINDS = (NumericFeature, CategoricalFeature, HashedFeature, IdentityFeature,
                BucketizedFeature)


class SpecError(ValueError):
    """A feature spec that cannot be used; the message names the file and key."""


Feature = Annotated[
    TextFeature | CategoricalFeature | NumericFeature | BucketizedFeature | HashedFeature
    | IdentityFeature | CrossedFeature | EmbeddingFeature | IndicatorFeature | ImageFeature
    | NumericListFeature,
    Field(discriminator="kind"),
]


def _outputs(name: str, feature) -> list[str]:
    """The Example keys a feature writes (and the reader's ``_lengths`` companions)."""
    if isinstance(feature, (EmbeddingFeature, IndicatorFeature)):
        return []
    if isinstance(feature, ImageFeature):
        return [name, f"{name}_shape"]
    if isinstance(feature, NumericListFeature) or (
            isinstance(feature, TextFeature) and feature.layout == "document"):
        return [name, f"{name}_lengths"]
    return [name]


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    key: str  # the stable key column: split and shard assignment hash it
    on_error: Literal["raise", "quarantine"] = "raise"
    features: dict[str, Feature] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_references(self) -> FeatureSpec:
        seen: dict[str, str] = {}
        for name, feature in self.features.items():
            if not _NAME.match(name):
                raise ValueError(f"features.{name}: a feature name is a letter, then letters, "
                                 "digits or _")
            for out in _outputs(name, feature):
                if out == self.key:
                    raise ValueError(f"features.{name}: output {out!r} would replace the key "
                                     "column in the encoded batch; rename the feature")
                if out in seen:
                    raise ValueError(f"features.{name}: output {out!r} collides with feature "
                                     f"{seen[out]!r}")
                seen[out] = name
            if feature.role == "label" and not isinstance(feature, _LABEL_KINDS):
                raise ValueError(f"features.{name}.role: a {feature.kind} cannot be a label")
            if feature.role == "weight" and not isinstance(feature, NumericFeature):
                raise ValueError(f"features.{name}.role: a weight is a numeric feature")
            if isinstance(feature, CrossedFeature):
                for column in feature.columns:
                    ref = self.features.get(column)
                    if ref is not None and not isinstance(ref, _CROSSABLE):
                        raise ValueError(f"features.{name}.columns: {column!r} is a {ref.kind} "
                                         "feature; crosses take categorical, hashed, identity "
                                         "or bucketized features, or raw input columns")
            if isinstance(feature, (EmbeddingFeature, IndicatorFeature)):
                ref = self.features.get(feature.categorical)
                if not isinstance(ref, ID_KINDS):
                    raise ValueError(f"features.{name}.categorical: {feature.categorical!r} is "
                                     "not a categorical, hashed, identity, bucketized or "
                                     "crossed feature of this spec")
        packed = [n for n, f in self.features.items()
                  if isinstance(f, TextFeature) and f.layout == "packed"]
        if packed and len(self.encoded()) > 1:
            raise ValueError(f"features.{packed[0]}.layout: a packed block holds many documents, "
                             "so packed text must be the spec's only encoded feature")
        weights = [n for n, f in self.features.items() if f.role == "weight"]
        if len(weights) > 1:
            raise ValueError(f"features: at most one weight, got {weights}")
        return self

    def encoded(self) -> dict[str, Feature]:
        """The features that write to the Example (embedding/indicator are model-side only)."""
        return {n: f for n, f in self.features.items()
                if not isinstance(f, (EmbeddingFeature, IndicatorFeature))}

    def with_role(self, role: str) -> list[str]:
        """Names of the features with ``role`` ("feature", "label" or "weight"), in order."""
        return [n for n, f in self.features.items() if f.role == role]

    def text_feature(self) -> tuple[str, TextFeature]:
        """The (name, feature) of the one text feature, which a language model trains on."""
        found = [(n, f) for n, f in self.features.items() if isinstance(f, TextFeature)]
        if len(found) != 1:
            raise SpecError(f"expected exactly one text feature, found {[n for n, _ in found]}")
        return found[0]


def _resolve_files(spec: FeatureSpec, folder: Path) -> FeatureSpec:
    """Vocabulary files relative to the spec's folder, made absolute."""
    features = {}
    for name, feature in spec.features.items():
        path = getattr(feature, "vocabulary_file", None)
        if path is not None and not Path(path).is_absolute():
            feature = feature.model_copy(update={"vocabulary_file": str(folder / path)})
        features[name] = feature
    return spec.model_copy(update={"features": features})


def load_spec(path: str | Path) -> FeatureSpec:
    """Load and validate a feature spec YAML file.

    Raises:
        SpecError: unreadable file, bad YAML, or a schema violation naming the key.
    """
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"{file}: cannot read feature spec: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{file}: not valid YAML: {exc}") from None
    try:
        spec = FeatureSpec.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        elif first["type"] == "value_error":
            message = str(first["ctx"]["error"])  # our own checks: no "Value error, " prefix
        else:
            message = first["msg"]
        raise SpecError(f"{file}: {key}: {message}" if key else f"{file}: {message}") from None
    return _resolve_files(spec, file.parent)
