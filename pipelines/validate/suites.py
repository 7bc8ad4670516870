"""The expectation suites: what a clean table and an encoded dataset must satisfy.

Suites are built from the same config and feature spec the stages run with, so a bound
that changes in ``conf/`` changes the gate with it. An encoded dataset is checked as two
small frames: one row per shard (manifest counts against the ``.idx`` files written
beside the shards) and one row per decoded example of a sample (token ids inside the
vocabulary, labels inside their vocabulary, lengths positive).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.engines import require

__all__ = ["LANGUAGES", "Suite", "clean_images_suite", "clean_posts_suite", "dataset_suite",
           "example_frame", "shard_frame"]

LANGUAGES = ["zh", "en", "mixed"]  # what pipelines/spark's script-ratio detector emits


@dataclass(frozen=True)
class Suite:
    """A named list of GE expectations; :func:`~pipelines.validate.gate.run_gate` binds it
    to a context (GE 1.x suites cannot exist outside one)."""

    name: str
    expectations: list


def clean_posts_suite(*, min_chars: int, max_chars: int, topics: list[str]):
    """``clean_posts``: text present and within bounds, known language and topic, unique ids."""
    gx = require("great_expectations", for_what="the data quality gates")
    e = gx.expectations
    return Suite("clean_posts", [
        e.ExpectColumnValuesToNotBeNull(column="text"),
        e.ExpectColumnValuesToNotBeNull(column="doc_id"),
        e.ExpectColumnValuesToBeUnique(column="doc_id"),
        e.ExpectColumnValuesToBeBetween(column="length", min_value=min_chars, max_value=max_chars),
        e.ExpectColumnValuesToBeInSet(column="lang", value_set=LANGUAGES),
        e.ExpectColumnValuesToBeInSet(column="topic", value_set=sorted(topics)),
    ])


def clean_images_suite(*, height: int, width: int, channels: int = 3, labels: list[str]):
    """``clean_images``: unique ids, known labels, the configured size, pixel buffers that fit it.

    Checked on the frame :func:`~pipelines.validate.checks.check_clean_images` builds:
    the table's columns with ``image``/``mask`` replaced by their byte lengths
    (``image_bytes``, ``mask_bytes``; null where there is no mask, which GE skips).

    Args:
        height, width, channels: the configured output size (``images.height``/``width``; RGB).
        labels: the allowed labels; empty means any non-null label.
    """
    gx = require("great_expectations", for_what="the data quality gates")
    e = gx.expectations
    label = (e.ExpectColumnValuesToBeInSet(column="label", value_set=sorted(labels)) if labels
             else e.ExpectColumnValuesToNotBeNull(column="label"))
    return Suite("clean_images", [
        e.ExpectColumnValuesToNotBeNull(column="image_id"),
        e.ExpectColumnValuesToBeUnique(column="image_id"),
        e.ExpectColumnValuesToBeUnique(column="content_sha256"),
        label,
        e.ExpectColumnValuesToBeBetween(column="height", min_value=height, max_value=height),
        e.ExpectColumnValuesToBeBetween(column="width", min_value=width, max_value=width),
        e.ExpectColumnValuesToBeBetween(column="channels", min_value=channels, max_value=channels),
        e.ExpectColumnValuesToBeBetween(column="image_bytes", min_value=height * width * channels,
                                        max_value=height * width * channels),
        e.ExpectColumnValuesToBeBetween(column="mask_bytes", min_value=height * width,
                                        max_value=height * width),
        e.ExpectColumnValueLengthsToEqual(column="phash", value=16),
    ])


def dataset_suite(*, vocab_size: int, labels: dict[str, int]):
    """Suites of an encoded dataset: ``{"shards": suite, "examples": suite}``.

    Args:
        vocab_size: token ids must lie in ``[0, vocab_size)``.
        labels: categorical feature -> number of ids (vocabulary + OOV buckets).
    """
    gx = require("great_expectations", for_what="the data quality gates")
    e = gx.expectations
    shards = Suite("dataset_shards", [
        e.ExpectColumnPairValuesToBeEqual(column_A="manifest_records", column_B="index_records"),
        e.ExpectColumnValuesToBeBetween(column="index_records", min_value=0),
    ])
    examples = Suite("dataset_examples", [
        e.ExpectTableRowCountToBeBetween(min_value=1),
        e.ExpectColumnValuesToBeBetween(column="min_token_id", min_value=0,
                                        max_value=vocab_size - 1),
        e.ExpectColumnValuesToBeBetween(column="max_token_id", min_value=0,
                                        max_value=vocab_size - 1),
        e.ExpectColumnValuesToBeBetween(column="tokens", min_value=1),
        *(e.ExpectColumnValuesToBeBetween(column=name, min_value=0, max_value=size - 1)
          for name, size in sorted(labels.items())),
    ])
    return {"shards": shards, "examples": examples}


def shard_frame(uri: str) -> pd.DataFrame:
    """One row per shard: the manifest's record count and the ``.idx`` file's."""
    from records.index import read_index
    from records.manifest import load_manifest
    from records.uri import join, resolve, to_uri

    manifest = load_manifest(uri)
    fs, root = resolve(uri)
    return pd.DataFrame([
        {"split": name, "shard": shard.path, "manifest_records": shard.records,
         "index_records": len(read_index(to_uri(fs, join(root, shard.index))))}
        for name, info in sorted(manifest.splits.items()) for shard in info.shards
    ])


def example_frame(uri: str, *, split: str, text_feature: str, labels: list[str],
                  sample: int = 2048) -> pd.DataFrame:
    """One row per decoded example of a sample: token id range, token count, label ids.

    Args:
        uri: the dataset version folder.
        split: the split to sample examples from.
        text_feature: the token-id feature.
        labels: categorical features to range-check.
        sample: examples decoded from the start of the split (shards in manifest order).
    """
    from records.reader import RecordDataset

    rows: dict[str, list] = {"min_token_id": [], "max_token_id": [], "tokens": []}
    rows.update({name: [] for name in labels})
    for batch in RecordDataset(uri, split, batch_size=min(sample, 512)):
        ids, lengths = batch[text_feature], batch[f"{text_feature}_lengths"]
        valid = ids.new_tensor(range(ids.shape[1]))[None, :] < lengths[:, None]  # (B, L)
        big = ids.masked_fill(~valid, -1).amax(dim=1)
        small = ids.masked_fill(~valid, 2**62).amin(dim=1)
        rows["max_token_id"] += big.tolist()
        rows["min_token_id"] += small.tolist()
        rows["tokens"] += lengths.tolist()
        for name in labels:
            rows[name] += batch[name].reshape(len(lengths), -1)[:, 0].tolist()
        if len(rows["tokens"]) >= sample:
            break
    return pd.DataFrame(rows).head(sample)
