"""Masks and boxes through the CLI: images (Beam) -> encode --dataset images -> train
mobilenet_v2 and a segmenter -> eval metrics in the run's output and report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from image_lake_testlib import image_lake

from shardforge.cli import main

DENSE_MODELS = """
  mnv2:
    kind: mobilenet_v2
    preset: tiny
    train: {steps: 3, batch_size: 8, warmup_steps: 1, log_every: 1}
  seg:
    kind: segmenter
    preset: tiny
    model: {head: unet, upsample: pixel_shuffle}
    train: {steps: 3, batch_size: 8, warmup_steps: 1, log_every: 1}
"""


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from threads; on a shared 2-core box they only contend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dense_lake(tmp_path_factory):
    return image_lake(tmp_path_factory.mktemp("dense"), DENSE_MODELS)


@pytest.mark.slow
@pytest.mark.integration
def test_clean_images_and_the_dataset_carry_masks_and_their_boxes(dense_lake):
    import pyarrow.parquet as pq

    from pipelines.beam.image_boxes import mask_boxes
    from records.reader import RecordDataset

    lake, _ = dense_lake
    rows = pq.read_table(next((lake / "warehouse").rglob("clean_images/dt=*"))).to_pylist()
    assert rows and all(r["mask"] is not None for r in rows)
    for r in rows:  # every sample image holds one shape of its label's class
        mask = np.frombuffer(r["mask"], np.uint8).reshape(r["height"], r["width"])
        assert (r["boxes"], r["box_labels"]) == mask_boxes(mask) and r["box_labels"]
    [dataset] = (lake / "records" / "images").glob("v=*")
    batch = next(iter(RecordDataset(dataset.as_uri(), "train", batch_size=4, shuffle=False)))
    assert batch["boxes_lengths"].tolist() == (4 * batch["box_labels_lengths"]).tolist()
    labels = batch["label"][:, 0].tolist()
    for i, label in enumerate(labels):  # mask class id = label id + 1
        assert label + 1 in batch["box_labels"][i, : batch["box_labels_lengths"][i]].tolist()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(("model", "metrics"), [
    ("mnv2", {"accuracy", "loss", "images"}),
    ("seg", {"pixel_accuracy", "mean_accuracy", "mean_iou", "class_iou", "erf", "erf_radius"}),
])
def test_dense_kinds_train_through_the_cli(dense_lake, model, metrics):
    lake, common = dense_lake
    assert main(["train", model, *common, "--device", "cpu"]) == 0
    [run] = (lake / "models" / model).glob("*/metrics.jsonl")
    lines = [json.loads(line) for line in run.read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2, 3]
    evaluation = lines[-1]["eval"]  # on the dataset's eval split, at the end of the run
    assert metrics <= set(evaluation) and evaluation["step"] == 3 and evaluation["images"] > 0
    if model == "seg":
        assert len(evaluation["class_iou"]) == 4  # background + the 3 sample shapes
        assert lines[-1]["receptive_field"] > 32
