"""The feature spec: which column becomes which feature, and how.

A spec is YAML validated into typed objects (unknown keys and wrong types name
the key). Kinds at this depth:

- ``text``: a string column → var-len int64 token ids (``tokenizer: bytes``: UTF-8
  bytes shifted past the reserved ids 0 pad, 1 bos, 2 eos);
- ``categorical``: a string column → int64 id from a closed vocabulary list, plus
  ``num_oov_buckets`` ids after it for unknown values (TF's OOV convention);
- ``numeric``: a number column passed through as int64 or float32.

``decode_spec()`` is what ``records/``'s PyTorch reader decodes with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from records.spec import FixedLenFeature, VarLenFeature

__all__ = [
    "BYTE_VOCAB_SIZE",
    "CategoricalFeature",
    "FeatureSpec",
    "NumericFeature",
    "SpecError",
    "TextFeature",
    "load_spec",
]

RESERVED_IDS = {"pad": 0, "bos": 1, "eos": 2}
BYTE_VOCAB_SIZE = 256 + len(RESERVED_IDS)


class SpecError(ValueError):
    """A feature spec that cannot be used; the message names the file and key."""


class _Kind(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    source: str  # the input column


class TextFeature(_Kind):
    kind: Literal["text"]
    tokenizer: Literal["bytes"] = "bytes"
    max_tokens: int = Field(default=512, gt=0)
    append_eos: bool = True

    @property
    def vocab_size(self) -> int:
        return BYTE_VOCAB_SIZE


class CategoricalFeature(_Kind):
    kind: Literal["categorical"]
    vocabulary: list[str] = Field(min_length=1)
    num_oov_buckets: int = Field(default=0, ge=0)

    @property
    def num_ids(self) -> int:
        return len(self.vocabulary) + self.num_oov_buckets


class NumericFeature(_Kind):
    kind: Literal["numeric"]
    dtype: Literal["int64", "float32"] = "float32"


Feature = Annotated[TextFeature | CategoricalFeature | NumericFeature, Field(discriminator="kind")]


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    key: str  # the stable key column: split and shard assignment hash it
    features: dict[str, Feature] = Field(min_length=1)

    def decode_spec(self) -> dict[str, FixedLenFeature | VarLenFeature]:
        """The records/ decode spec of the examples this spec produces."""
        out: dict[str, FixedLenFeature | VarLenFeature] = {}
        for name, feature in self.features.items():
            if isinstance(feature, TextFeature):
                out[name] = VarLenFeature("int64")
            elif isinstance(feature, CategoricalFeature):
                out[name] = FixedLenFeature((1,), "int64")
            else:
                out[name] = FixedLenFeature((1,), feature.dtype)
        return out

    def text_feature(self) -> tuple[str, TextFeature]:
        """The (name, feature) of the one text feature, which a language model trains on."""
        found = [(n, f) for n, f in self.features.items() if isinstance(f, TextFeature)]
        if len(found) != 1:
            raise SpecError(f"expected exactly one text feature, found {[n for n, _ in found]}")
        return found[0]


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
        return FeatureSpec.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise SpecError(f"{file}: {key}: {message}") from None
