"""The promptable segmenter and the detector through the CLI: images (masks, the boxes of
their connected components) → encode → train sam / thundernet (preset tiny) → eval metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shardforge.cli import main

ROOT = Path(__file__).resolve().parents[2]
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
    tmp = tmp_path_factory.mktemp("dense")
    text = (ROOT / "conf" / "sample.yaml").read_text(encoding="utf-8")
    text = text.replace("feature_spec: features/posts.yaml",
                        f"feature_spec: {ROOT / 'conf/features/posts.yaml'}")
    text = text.replace("spec: features/images.yaml", f"spec: {ROOT / 'conf/features/images.yaml'}")
    assert "\nmodels:\n" in text
    text = text.replace("\nmodels:\n", "\nmodels:\n" + DENSE_MODELS.lstrip("\n"), 1)
    config = tmp / "dense.yaml"
    config.write_text(text, encoding="utf-8")
    common = ["--config", str(config), "--lake", str(tmp / "lake")]
    assert main(["sample", *common, "--posts", "40", "--images", "48"]) == 0
    assert main(["images", *common]) == 0
    assert main(["encode", *common, "--dataset", "images"]) == 0
    return tmp / "lake", common


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("model", ["promptable", "detector"])
def test_dense_kinds_train_from_the_image_shards(lake, model):
    root, common = lake
    assert main(["train", model, *common, "--device", "cpu"]) == 0
    [ckpt] = (root / "models" / model).glob("*/ckpt.pt")
    lines = [json.loads(line) for line in (ckpt.parent / "metrics.jsonl").open()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert EVAL_KEYS[model] <= set(lines[-1]["eval"])  # evaluated on the eval split
    assert lines[-1]["eval"]["objects"] > 0  # the eval split's boxes reached the model
