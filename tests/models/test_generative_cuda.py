"""The generative kinds on a GPU: BF16 and FP16 (with loss scaling), compiled, channels-last.

Run on a CUDA host: ``pytest -m cuda tests/models/test_generative_cuda.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from vision_testlib import write_images

from models.kinds import build_configs, train_model

KINDS = [("vqgan", {"disc_start": 2}), ("vae", {}), ("vae", {"latent": "gumbel"}),
         ("flow", {"coupling": "additive"}), ("flow", {"coupling": "affine"}),
         ("rectified_flow", {})]


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("kind, model", KINDS)
def test_trains_under_autocast_compiled(tmp_path, kind, model, precision):
    images = write_images(tmp_path, train=16, eval=8)
    m, t = build_configs(kind, preset="tiny", model=model, train={
        "steps": 6, "batch_size": 8, "warmup_steps": 1, "device": "cuda", "precision": precision,
        "compile": True, "log_every": 1, "progress": False}, context={"num_classes": 3})
    result = train_model(kind, dataset_uri=images, out_uri=(tmp_path / "run").as_uri(),
                         model_config=m, train_config=t)
    assert result.device == "cuda" and result.precision == precision
    assert math.isfinite(result.final_loss) and result.skipped_steps < 6
    assert result.eval_metrics["fd"] is None or math.isfinite(result.eval_metrics["fd"])
    if kind == "vqgan":
        assert result.train_metrics["d_loss"] > 0  # the discriminator stepped (own scaler)
    torch._dynamo.reset()
