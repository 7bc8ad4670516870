"""End to end: records.DatasetWriter shards in tmp_path -> train_lm -> checkpoint."""

from __future__ import annotations

import hashlib
import json

import pytest

from models.checkpoint import load_checkpoint
from models.lm import LMConfig
from models.train import TrainConfig, train_lm
from records.example_codec import encode_example
from records.spec import FixedLenFeature, VarLenFeature
from records.writer import DatasetWriter

V = 64
SPEC = {
    "input_ids": VarLenFeature("int64"),
    "topic": FixedLenFeature((1,), "int64"),
    "length": FixedLenFeature((1,), "int64"),
}


@pytest.fixture
def dataset_uri(tmp_path, toy_docs):
    uri = (tmp_path / "records" / "toy" / "v=1").as_uri()
    with DatasetWriter(
        uri=uri, dataset="toy", version="1", feature_spec=SPEC, max_records_per_shard=16
    ) as writer:
        for i, doc in enumerate(toy_docs(60, V)):
            writer.write(
                "train", encode_example({"input_ids": doc, "topic": [i % 3], "length": [len(doc)]})
            )
    return uri


def test_train_lm_from_records(tmp_path, dataset_uri):
    out_uri = (tmp_path / "models" / "lm" / "run-1").as_uri()
    train_config = TrainConfig(
        steps=20, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=2, log_every=5, device="cpu"
    )
    runs = [
        train_lm(
            dataset_uri=dataset_uri,
            out_uri=f"{out_uri}-{i}",
            model_config=LMConfig.preset("tiny", vocab_size=V, block_size=32),
            train_config=train_config,
        )
        for i in range(2)
    ]
    result = runs[0]
    assert result.final_loss < 0.8 * result.first_loss, result
    assert runs[1].final_loss == result.final_loss  # seeded reader shuffle + init: repeatable
    assert result.tokens == 20 * 4 * 32 and result.device == "cpu"

    manifest = (tmp_path / "records" / "toy" / "v=1" / "manifest.json").read_bytes()
    ckpt = load_checkpoint(result.checkpoint_uri)
    assert ckpt["dataset_manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert ckpt["reader"] is not None and ckpt["step"] == 20
    metrics = (tmp_path / "models" / "lm" / "run-1-0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [1, 5, 10, 15, 20]
