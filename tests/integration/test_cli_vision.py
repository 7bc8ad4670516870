"""The image path through the CLI: images → encode --dataset images → train vqvae/efficientnet → tokens."""

from __future__ import annotations

import numpy as np
import pytest
from image_lake_testlib import image_lake

from shardforge.cli import main

VISION_MODELS = """
  vq:
    kind: vqvae
    model: {hidden_channels: 16, res_blocks: 1, res_channels: 8, codebook_size: 16, embedding_dim: 8}
    train: {steps: 3, batch_size: 8, warmup_steps: 1, log_every: 1}
  effnet:
    kind: efficientnet
    preset: b0
    model: {width: 0.25, depth: 0.1, resolution: 32}
    train: {steps: 2, batch_size: 8, warmup_steps: 1, log_every: 1}
"""


@pytest.fixture(scope="module")
def vision_lake(tmp_path_factory):
    return image_lake(tmp_path_factory.mktemp("vision"), VISION_MODELS)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("model", ["vq", "effnet"])
def test_vision_models_train_from_the_image_dataset(vision_lake, model):
    lake, common = vision_lake
    before = set((lake / "models" / model).glob("*/ckpt.pt"))
    assert main(["train", model, *common, "--device", "cpu"]) == 0
    [new] = set((lake / "models" / model).glob("*/ckpt.pt")) - before
    assert (new.parent / "metrics.jsonl").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.integration
def test_vq_tokens_export_one_sequence_per_image(vision_lake):
    from records.manifest import load_manifest
    from records.reader import RecordDataset
    from records.spec import VarLenFeature

    lake, common = vision_lake
    assert main(["train", "vq", *common, "--device", "cpu"]) == 0
    assert main(["tokens", "vq", *common]) == 0
    images = load_manifest(f"file://{lake}/records/images/v=1")
    [tokens_dir] = (lake / "records" / "vq-tokens").glob("v=*")
    tokens = load_manifest(f"file://{tokens_dir}")
    assert {s: i.records for s, i in tokens.splits.items()} == {
        s: i.records for s, i in images.splits.items()}
    batch = next(iter(RecordDataset(f"file://{tokens_dir}", "train", batch_size=4,
                                    feature_spec={"input_ids": VarLenFeature("int64")})))
    ids = batch["input_ids"].numpy()
    ids = ids[ids != 0]  # padding
    assert len(ids) and ids.min() >= 3 and ids.max() < 3 + 16  # codes + 3, K = 16
    assert len(np.unique(ids)) > 1
