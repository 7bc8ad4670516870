"""What a dataset version is built from: the one answer both encode engines and the CLI use.

- ``posts``: the ``documents`` table (every post once, however many dts brought it; see
  :mod:`pipelines.spark.documents`), never per-dt ``clean_posts`` rows. The documents'
  snapshot (its dts and counts, ``_SNAPSHOT.json`` beside the table) goes into the
  manifest's ``config.documents_snapshot``.
- ``images``: the ``clean_images`` partitions of the image corpus's dts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["DATASETS", "DatasetInputs", "dataset_inputs", "documents_snapshot_uri", "read_documents_snapshot",
           "write_documents_snapshot"]

DATASETS = ("posts", "images")


def documents_snapshot_uri(lake, db: str) -> str:
    """``_SNAPSHOT.json`` in the documents table folder (its ``_`` hides it from table readers)."""
    return f"{lake.table(db, 'documents')}/_SNAPSHOT.json"


def write_documents_snapshot(lake, db: str, snapshot: dict) -> None:
    with lake.fs.open(lake.fs_path(documents_snapshot_uri(lake, db)), "w") as out:
        json.dump(snapshot, out, indent=1, sort_keys=True)


def read_documents_snapshot(lake, db: str) -> dict:
    """The snapshot the documents table was last built from.

    Raises:
        FileNotFoundError: no documents yet (``shardforge clean`` builds them).
    """
    path = lake.fs_path(documents_snapshot_uri(lake, db))
    if not lake.fs.exists(path):
        raise FileNotFoundError(f"no documents under {lake.table(db, 'documents')}: run `shardforge clean` first")
    with lake.fs.open(path) as f:
        return json.load(f)


@dataclass(frozen=True)
class DatasetInputs:
    """A dataset's config entry, feature spec path, source table and Parquet globs."""

    entry: object  # the config's DatasetConfig
    spec_path: str
    table: str
    dts: list[str]
    inputs: list[str]
    config: dict = field(default_factory=dict)  # the manifest's config: the run's, plus the snapshot


def dataset_inputs(cfg, lake, dataset: str, *, image_dts: Sequence[str] = ()) -> DatasetInputs:
    """The inputs of dataset ``posts`` or ``images`` (``image_dts``: the image partitions).

    Raises:
        ConfigError: ``images`` without an ``image_dataset`` section.
        FileNotFoundError: ``posts`` before any documents were built.
        ValueError: an unknown dataset.
    """
    from core.config import ConfigError

    db = cfg.spark.database
    config = cfg.model_dump(mode="json")
    if dataset == "posts":
        snapshot = read_documents_snapshot(lake, db)
        config["documents_snapshot"] = snapshot
        return DatasetInputs(cfg.dataset, cfg.feature_spec, "documents", list(snapshot["dts"]),
                             [f"{lake.table(db, 'documents')}/first_seen_dt=*/*.parquet"], config)
    if dataset == "images":
        if cfg.image_dataset is None:
            raise ConfigError(f"{cfg.source}: image_dataset: not configured (needed to encode images)")
        dts = list(image_dts)
        return DatasetInputs(cfg.image_dataset, cfg.image_dataset.spec, "clean_images", dts,
                             [f"{lake.table(db, 'clean_images', dt)}/*.parquet" for dt in dts], config)
    raise ValueError(f"encode: dataset must be one of {DATASETS}, got {dataset!r}")
