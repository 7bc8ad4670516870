"""records: TFRecord shards for shardforge, written by pipelines and read by PyTorch.

TFRecord framing + tf.Example codec + sharded atomic writer + ``.idx`` index +
``manifest.json``, and a PyTorch reader (rank x worker partitioning, shuffle,
resume, CRC checks). Nothing here imports TensorFlow, Spark or Beam; the torch
reader is imported lazily, so ``import records`` does not pull in torch.

The inspect/verify CLI functions live in :mod:`records.inspect`
(``from records.inspect import inspect, verify``); they are not re-exported so
``records.inspect`` stays the module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from records.batch_decode import ExampleDecoder
from records.crc import masked_crc32c
from records.errors import CorruptionReport, CorruptRecordError
from records.example_codec import (
    decode_example,
    decode_sequence_example,
    encode_example,
    encode_sequence_example,
)
from records.framing import RecordFileWriter, frame_record, iter_records
from records.index import read_index, write_index
from records.manifest import (
    Manifest,
    ShardInfo,
    SplitInfo,
    load_manifest,
    manifest_sha256,
    write_manifest,
)
from records.spec import (
    FeatureSpec,
    FixedLenFeature,
    VarLenFeature,
    spec_from_dict,
    spec_to_dict,
)
from records.writer import (
    DatasetWriter,
    commit_staged,
    finalize_shards,
    list_shards,
    shard_name,
    staging_uri_for,
    write_shard,
)

if TYPE_CHECKING:  # pragma: no cover
    from records.epoch_stream import EpochStream
    from records.reader import RecordDataset, RecordIndexDataset

__all__ = [
    "CorruptRecordError",
    "CorruptionReport",
    "DatasetWriter",
    "EpochStream",
    "ExampleDecoder",
    "FeatureSpec",
    "FixedLenFeature",
    "Manifest",
    "RecordDataset",
    "RecordFileWriter",
    "RecordIndexDataset",
    "ShardInfo",
    "SplitInfo",
    "VarLenFeature",
    "commit_staged",
    "decode_example",
    "decode_sequence_example",
    "encode_example",
    "encode_sequence_example",
    "finalize_shards",
    "frame_record",
    "iter_records",
    "list_shards",
    "load_manifest",
    "manifest_sha256",
    "masked_crc32c",
    "read_index",
    "shard_name",
    "spec_from_dict",
    "spec_to_dict",
    "staging_uri_for",
    "write_index",
    "write_manifest",
    "write_shard",
]

_LAZY = {"RecordDataset", "RecordIndexDataset"}


def __getattr__(name: str):
    # The torch reader is only needed on training hosts; import it on first use.
    if name in _LAZY:
        from records import reader

        return getattr(reader, name)
    if name == "EpochStream":
        from records.epoch_stream import EpochStream

        return EpochStream
    raise AttributeError(f"module 'records' has no attribute {name!r}")
