"""DDP on CPU: ``torchrun --nproc_per_node 2`` trains the vision kinds over gloo on image shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchrun_testlib import run_two_ranks
from vision_testlib import write_images

from models.checkpoint import load_checkpoint

# Runs on each rank: trains one kind (one process group per process, as under a real
# torchrun job: a second init_process_group in the same process can read the first group's
# stale gloo addresses from the store), keeps each rank's model and eval metrics.
RANK_SCRIPT = """
import dataclasses, json, sys
import torch
sys.path.insert(0, __TESTS__)
from vision_testlib import tiny_effnet, tiny_vqvae
from models.task_vision import VISION_MODELS, VisionTask
from models.train_config import TrainConfig
from models.trainer import train

dataset_uri, out_uri, report, kind = sys.argv[1:5]
torch.set_num_threads(1)
config = tiny_vqvae(restart_after=1) if kind == "vqvae" else tiny_effnet(drop_connect=0.2)
made = []
spec = VISION_MODELS[kind]
keeping = dataclasses.replace(spec, build=lambda c: made.append(spec.build(c)) or made[-1])
task = VisionTask(keeping, config, TrainConfig(kind=kind, steps=4, batch_size=4, warmup_steps=1,
                                               log_every=1, device="cpu", progress=False))
result = train(task, dataset_uri=dataset_uri, out_uri=f"{out_uri}/{kind}")
torch.save(made[0].state_dict(), f"{report}/{kind}-rank{result.rank}.pt")
with open(f"{report}/{kind}-rank{result.rank}.json", "w") as f:
    json.dump({"world_size": result.world_size, "eval": result.eval_metrics,
               "final_loss": result.final_loss}, f)
""".replace("__TESTS__", repr(str(Path(__file__).resolve().parent)))


@pytest.mark.slow
def test_torchrun_two_ranks_keep_one_codebook_and_one_evaluation(tmp_path):
    dataset_uri = write_images(tmp_path, train=20, eval=7)  # eval: 4 + 3 images on the ranks
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    report = tmp_path / "report"
    report.mkdir()
    out_uri = (tmp_path / "run").as_uri()
    for kind in ("vqvae", "efficientnet"):
        run_two_ranks(script, dataset_uri, out_uri, str(report), kind, timeout=180)

    for kind in ("vqvae", "efficientnet"):
        ranks = [json.loads((report / f"{kind}-rank{r}.json").read_text()) for r in range(2)]
        assert [r["world_size"] for r in ranks] == [2, 2]
        assert ranks[0]["final_loss"] == ranks[1]["final_loss"]  # averaged over ranks
        assert ranks[0]["eval"] == ranks[1]["eval"]  # one evaluation of both partitions
        if kind == "efficientnet":
            assert ranks[0]["eval"]["images"] == 7
        ckpt = load_checkpoint(f"{out_uri}/{kind}/ckpt.pt")
        assert ckpt["step"] == 4 and len(ckpt["data"]) == 2
        weights = [torch.load(report / f"{kind}-rank{r}.pt", weights_only=True) for r in range(2)]
        # Weights, codebook and (broadcast before the evaluation) BatchNorm statistics.
        for name, tensor in ckpt["model"].items():
            assert torch.equal(weights[0][name], tensor), name
            assert torch.equal(weights[1][name], tensor), name
        if kind == "vqvae":
            assert int(ckpt["model"]["quantizer.restarts"]) > 0  # restarts, identical on both
