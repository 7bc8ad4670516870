"""The one declared stage sequence: its order, its edges, and what each config adds or drops."""

from __future__ import annotations

import pytest

from core.config import load_config
from shardforge.pipeline import SPARK_JOBS, declared_stages, stage_named
from shardforge.spark_jobs import JOBS

VISION = """
image_dataset: {}
models:
  heads: {model: {medusa_heads: 2}, train: {init_from: lm, freeze_backbone: true}}
  vq: {kind: vqvae}
  lm: {}
  net: {kind: efficientnet, preset: tiny}
"""


def _names(stages):
    return [s.name for s in stages]


@pytest.fixture
def vision_cfg(tmp_path):
    path = tmp_path / "vision.yaml"
    path.write_text("corpora:\n  feeds: {format: feed_dump}\n  images: {format: image_folder}\n"
                    + VISION, encoding="utf-8")
    return load_config(path)


def test_the_sequence_of_a_config_with_vision_models(vision_cfg):
    stages = declared_stages(vision_cfg)
    assert _names(stages) == [
        "ingest", "explode_clean", "validate_clean_posts", "images", "validate_clean_images",
        "encode", "validate_dataset", "drift_dataset", "encode_images", "drift_images",
        "train_lm", "train_heads", "train_vq", "train_net",  # train_order: heads after lm
        "report"]
    after = {s.name: s.after for s in stages}
    assert after["drift_dataset"] == ("validate_dataset",)
    assert after["drift_images"] == ("encode_images",)
    assert after["train_lm"] == ("drift_dataset",)  # no model trains on a drifted dataset
    assert after["train_heads"] == ("drift_dataset", "train_lm")
    assert after["train_vq"] == after["train_net"] == ("drift_images",)
    assert set(after["report"]) == {"train_heads", "train_vq", "train_net"}  # the leaves
    assert {s.name: s.engine for s in stages}["train_vq"] == "torch"


def test_every_stage_comes_after_what_it_waits_for(vision_cfg):
    seen: set[str] = set()
    for stage in declared_stages(vision_cfg):
        assert set(stage.after) <= seen, stage.name
        seen.add(stage.name)


def test_without_an_image_corpus_there_are_no_image_stages(tmp_path):
    path = tmp_path / "posts-only.yaml"
    path.write_text("corpora:\n  feeds: {format: feed_dump}\nmodels:\n  lm: {}\n", encoding="utf-8")
    names = _names(declared_stages(load_config(path)))
    assert names == ["ingest", "explode_clean", "validate_clean_posts", "encode",
                     "validate_dataset", "drift_dataset", "train_lm", "report"]


def test_the_spark_jobs_are_the_stages_that_run_on_spark():
    assert JOBS == SPARK_JOBS == ("ingest", "explode_clean", "encode", "encode_images")
    assert stage_named("encode").engine == "beam" and stage_named("encode").runs_on("spark")
    with pytest.raises(KeyError, match="no stage 'train_lm'"):
        stage_named("train_lm")  # a template, filled per model by declared_stages
