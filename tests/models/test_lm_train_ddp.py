"""DDP on CPU: ``torchrun --nproc_per_node 2`` trains an lm over gloo on shards in tmp_path."""

from __future__ import annotations

import json

import pytest
import torch
from torchrun_testlib import run_two_ranks

from models.checkpoint import load_checkpoint
from records.example_codec import encode_example
from records.spec import FixedLenFeature, VarLenFeature
from records.writer import DatasetWriter

V = 64
STEPS = 3

# Runs on each rank: records which documents this rank read and keeps its model.
RANK_SCRIPT = """
import json, sys
import torch
import models.task_lm as task_lm
from models.kinds import TrainConfig, train_model
from models.lm import LMConfig
from records.reader import RecordDataset

dataset_uri, out_uri, report = sys.argv[1:4]
torch.set_num_threads(1)
seen, made = [], []
read = RecordDataset.__iter__

def recording_iter(self):
    for batch in read(self):
        seen.extend([self.epoch, d] for d in batch["doc_id"].reshape(-1).tolist())
        yield batch

def keeping_model(config):
    made.append(task_lm.DecoderLM_(config))
    return made[-1]

RecordDataset.__iter__ = recording_iter
task_lm.DecoderLM_, task_lm.DecoderLM = task_lm.DecoderLM, keeping_model
result = train_model(
    "lm", dataset_uri=dataset_uri, out_uri=out_uri,
    model_config=LMConfig.preset("tiny", vocab_size=__V__, block_size=32),
    train_config=TrainConfig(steps=__STEPS__, batch_size=4, lr=3e-3, warmup_steps=1,
                             min_lr=3e-4, log_every=1, device="cpu", progress=False),
)
torch.save(made[0].state_dict(), f"{report}/rank{result.rank}.pt")
with open(f"{report}/rank{result.rank}.json", "w") as f:
    json.dump({"world_size": result.world_size, "seen": seen,
               "final_loss": result.final_loss, "eval": result.eval_metrics}, f)
""".replace("__V__", str(V)).replace("__STEPS__", str(STEPS))


@pytest.mark.slow
def test_torchrun_two_ranks_split_the_data_and_agree_on_weights(tmp_path, toy_docs):
    dataset_uri = (tmp_path / "records" / "toy" / "v=1").as_uri()
    spec = {"input_ids": VarLenFeature("int64"), "doc_id": FixedLenFeature((1,), "int64")}
    with DatasetWriter(uri=dataset_uri, dataset="toy", version="1", feature_spec=spec,
                       max_records_per_shard=16) as writer:
        for i, doc in enumerate(toy_docs(80, V)):
            writer.write("train", encode_example({"input_ids": doc, "doc_id": [i]}))
        for i, doc in enumerate(toy_docs(24, V, seed=1)):  # each rank evaluates its part
            writer.write("eval", encode_example({"input_ids": doc, "doc_id": [100 + i]}))
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    report = tmp_path / "report"
    report.mkdir()
    out_uri = (tmp_path / "run").as_uri()
    run_two_ranks(script, dataset_uri, out_uri, str(report), timeout=120)

    ranks = [json.loads((report / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]  # both ranks ran, in one job
    # Each rank reads its own partition of an epoch (read-ahead may reach into epoch 1,
    # whose shuffled shard order partitions the documents differently).
    seen = [{d for epoch, d in r["seen"] if epoch == 0 and d < 100} for r in ranks]
    assert seen[0] and seen[1] and seen[0].isdisjoint(seen[1])
    assert ranks[0]["final_loss"] == ranks[1]["final_loss"]  # the logged loss is averaged
    assert ranks[0]["eval"] == ranks[1]["eval"] and ranks[0]["eval"]["step"] == STEPS
    eval_tokens = sum(len(d) + 1 for d in toy_docs(24, V, seed=1))  # documents and their eos
    assert 0.5 * eval_tokens < ranks[0]["eval"]["tokens"] <= eval_tokens  # both ranks' windows

    ckpt = load_checkpoint(f"{out_uri}/ckpt.pt")
    assert ckpt["step"] == STEPS and len(ckpt["data"]) == 2
    assert all(d["reader"]["batches_consumed"] > 0 for d in ckpt["data"])  # per-rank positions
    weights = [torch.load(report / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, tensor in ckpt["model"].items():
        assert torch.equal(weights[0][name], tensor) and torch.equal(weights[1][name], tensor)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, STEPS + 1))  # rank 0 only
    assert all(json.loads(line)["tokens_per_s"] > 0 for line in lines)
