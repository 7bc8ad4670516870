"""Elastic resume: a training run checkpointed on one topology resumes on another and
still reads every example of the epoch exactly once.

Under DDP on CPU (gloo, torchrun): 3 ranks x 2 DataLoader workers, then 2 ranks x 3
workers. In one process: another ``num_workers``, for the LM and a vision kind. The runs
log what the training loop takes from the reader (in the training process: DataLoader
workers only decode); ``prefetch=0`` so that the first run takes nothing beyond its last
step, i.e. exactly what its checkpoint counts as consumed.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torchrun_testlib import run_ranks
from vision_testlib import tiny_effnet, write_images

import models.trainer as trainer
from models.checkpoint import load_checkpoint
from models.data import loop_epochs, loop_stream
from models.kinds import TrainConfig, train_model
from models.lm import LMConfig
from records.example_codec import encode_example
from records.spec import FixedLenFeature, VarLenFeature
from records.writer import DatasetWriter

V = 64
DOCS = 120

# Runs on each rank: trains the LM, logging (epoch, doc_id) of every reader batch the
# training loop takes, in the training process (DataLoader workers only decode).
RANK_SCRIPT = """
import json, sys
import torch
import models.trainer as trainer
from models.kinds import TrainConfig, train_model
from models.lm import LMConfig

def main(dataset_uri, out_uri, report, steps, workers, resume):
    torch.set_num_threads(1)
    seen = []

    def logging(loop):  # loop_epochs (fresh workers) or loop_stream (workers kept)
        def logged(source, *args, **kwargs):
            for batch in loop(source, *args, **kwargs):
                seen.extend([source.epoch, d] for d in batch["doc_id"].reshape(-1).tolist())
                yield batch
        return logged

    trainer.loop_epochs = logging(trainer.loop_epochs)
    trainer.loop_stream = logging(trainer.loop_stream)
    result = train_model(
        "lm", dataset_uri=dataset_uri, out_uri=out_uri, resume=resume == "resume",
        model_config=LMConfig.preset("tiny", vocab_size=__V__, block_size=32),
        # prefetch=0: the loop takes no reader batch beyond the last step's, so what the
        # first job logged is exactly what its checkpoint counts as consumed
        train_config=TrainConfig(steps=int(steps), batch_size=4, lr=3e-3, warmup_steps=1,
                                 min_lr=3e-4, log_every=1, device="cpu", progress=False,
                                 num_workers=int(workers), prefetch=0),
    )
    with open(f"{report}/rank{result.rank}.json", "w") as f:
        json.dump({"world_size": result.world_size, "start_step": result.start_step,
                   "seen": seen}, f)

if __name__ == "__main__":  # DataLoader workers (forkserver) import this file again
    main(*sys.argv[1:7])
""".replace("__V__", str(V))


@pytest.mark.slow
def test_three_ranks_two_workers_resume_on_two_ranks_three_workers(tmp_path, toy_docs):
    dataset_uri = (tmp_path / "records" / "toy" / "v=1").as_uri()
    spec = {"input_ids": VarLenFeature("int64"), "doc_id": FixedLenFeature((1,), "int64")}
    with DatasetWriter(uri=dataset_uri, dataset="toy", version="1", feature_spec=spec,
                       max_records_per_shard=16) as writer:
        for i, doc in enumerate(toy_docs(DOCS, V)):
            writer.write("train", encode_example({"input_ids": doc, "doc_id": [i]}))
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    out_uri = (tmp_path / "run").as_uri()
    jobs = {"first": (3, 2, 3, "fresh"), "resumed": (2, 3, 16, "resume")}  # ranks, workers, steps
    for name, (ranks, workers, steps, resume) in jobs.items():
        (tmp_path / name).mkdir()
        run_ranks(script, dataset_uri, out_uri, str(tmp_path / name), str(steps), str(workers),
                  resume, nproc=ranks, timeout=240)
        if name == "first":
            ckpt = load_checkpoint(f"{out_uri}/ckpt.pt")
            assert ckpt["step"] == 3 and len(ckpt["data"]) == 3
            assert ckpt["reader_global"]["epoch"] == 0

    first, resumed = ([json.loads((tmp_path / name / f"rank{r}.json").read_text())
                       for r in range(jobs[name][0])] for name in jobs)
    assert [r["world_size"] for r in first] == [3, 3, 3]
    assert [(r["world_size"], r["start_step"]) for r in resumed] == [(2, 3), (2, 3)]
    read_first = [d for r in first for e, d in r["seen"] if e == 0]
    read_after = [d for r in resumed for e, d in r["seen"] if e == 0]
    assert 0 < len(read_first) < DOCS and all(len(r["seen"]) for r in first)
    assert sorted(read_first + read_after) == list(range(DOCS))  # each document once
    # The resumed job ran on into epoch 1, which starts whole again.
    assert any(e == 1 for r in resumed for e, _ in r["seen"])
    ckpt = load_checkpoint(f"{out_uri}/ckpt.pt")
    assert ckpt["step"] == 16 and len(ckpt["data"]) == 2
    assert ckpt["reader_global"]["epoch"] >= 1
    assert all(isinstance(d["packer"]["carry"], torch.Tensor) for d in ckpt["data"])


def _logging_loop(seen: list, loop=loop_epochs):
    """The trainer's ``loop_epochs`` (or ``loop_stream``), logging ``(epoch, example id)``
    of every batch taken."""
    def logged(source, *args, **kwargs):
        for batch in loop(source, *args, **kwargs):
            if "doc_id" in batch:
                ids = batch["doc_id"].reshape(-1).tolist()
            else:  # images: their pixels name them
                ids = [hashlib.sha256(row.numpy().tobytes()).hexdigest() for row in batch["image"]]
            seen.extend((source.epoch, i) for i in ids)
            yield batch
    return logged


@pytest.mark.parametrize("kind", ["lm", "efficientnet"])
def test_resume_with_other_num_workers_reads_the_rest_of_the_epoch(tmp_path, toy_docs,
                                                                    monkeypatch, kind):
    if kind == "lm":
        dataset_uri = (tmp_path / "records" / "toy" / "v=1").as_uri()
        spec = {"input_ids": VarLenFeature("int64"), "doc_id": FixedLenFeature((1,), "int64")}
        with DatasetWriter(uri=dataset_uri, dataset="toy", version="1", feature_spec=spec,
                           max_records_per_shard=16) as writer:
            for i, doc in enumerate(toy_docs(40, V)):
                writer.write("train", encode_example({"input_ids": doc, "doc_id": [i]}))
        model, examples, steps = LMConfig.preset("tiny", vocab_size=V, block_size=32), 40, 12
    else:  # 20 images, batches of 4, drop_last: 5 steps an epoch
        dataset_uri, model, examples, steps = write_images(tmp_path, train=20, eval=0), \
            tiny_effnet(), 20, 5
    out_uri = (tmp_path / "run").as_uri()
    seen: dict[str, list] = {"first": [], "resumed": []}
    for name, workers, run_steps in (("first", 0, 2), ("resumed", 2, steps)):
        monkeypatch.setattr(trainer, "loop_epochs", _logging_loop(seen[name]))
        monkeypatch.setattr(trainer, "loop_stream", _logging_loop(seen[name], loop_stream))
        cfg = TrainConfig(kind=kind, steps=run_steps, batch_size=4, lr=3e-3, warmup_steps=1,
                          log_every=1, device="cpu", progress=False, num_workers=workers,
                          prefetch=0)
        result = train_model(kind, dataset_uri=dataset_uri, out_uri=out_uri, model_config=model,
                             train_config=cfg, resume=name == "resumed")
    assert result.start_step == 2 and result.steps == steps
    first = [i for e, i in seen["first"] if e == 0]
    rest = [i for e, i in seen["resumed"] if e == 0]
    assert first and rest and len(set(first + rest)) == examples == len(first + rest)
    ckpt = load_checkpoint(f"{out_uri}/ckpt.pt")
    assert ckpt["train_config"]["num_workers"] == 2 and ckpt["reader_global"] is not None
