"""The promptable segmenter and the detector through the CLI: images (masks, the boxes of
their connected components) → encode → train sam / thundernet (preset tiny) → eval metrics."""

from __future__ import annotations

import json

import pytest
from image_lake_testlib import image_lake

from shardforge.cli import main

TRAIN = "train: {steps: 3, batch_size: 8, warmup_steps: 1, log_every: 1}"
DENSE_MODELS = f"""
  promptable:
    kind: sam
    preset: tiny
    {TRAIN}
  detector:
    kind: thundernet
    preset: tiny
    {TRAIN}
"""
EVAL_KEYS = {"promptable": {"miou_point", "miou_point_oracle", "miou_box", "objects"},
             "detector": {"map", "map_50", "map_75", "images", "objects"}}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return image_lake(tmp_path_factory.mktemp("dense"), DENSE_MODELS)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("model", ["promptable", "detector"])
def test_dense_kinds_train_from_the_image_shards(lake, model):
    root, common = lake
    assert main(["train", model, *common, "--device", "cpu"]) == 0
    [ckpt] = (root / "models" / model).glob("*/ckpt.pt")
    lines = [json.loads(line) for line in (ckpt.parent / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert EVAL_KEYS[model] <= set(lines[-1]["eval"])  # evaluated on the eval split
    assert lines[-1]["eval"]["objects"] > 0  # the eval split's boxes reached the model
