"""precision: fp8 — torchao's FP8 Linear layers where they pay, bf16 autocast for the rest.

On the CPU torchao emulates the FP8 matmuls (the same rounding to FP8): the rule, the swap
(weights, the kept output head and checkpoint keys), the refusals, and a run that learns; the
cuda test runs the FP8 tensor cores, compiled.
"""

from __future__ import annotations

import sys

import pytest
import torch
from lm_testlib import counting, toy_dataset
from torch import nn

from models.checkpoint import load_checkpoint
from models.fp8 import FP8_MIN_CAPABILITY, check_fp8_device, convert_to_fp8, fp8_eligible
from models.kinds import train_model
from models.lm import DecoderLM, LMConfig
from models.train_common import DTYPES, resolve_precision
from models.train_config import PRECISIONS, TrainConfig

# Wide enough for the fused qkv to take FP8 matmuls (N = 1152 > 1024), with a vocabulary
# large enough for the LM head to be eligible by size (kept in bf16 by the model all the same);
# the toy documents use its first 64 ids.
V = 2048


def wide_tiny() -> LMConfig:
    return LMConfig.preset("tiny", vocab_size=V, block_size=32, n_embd=384, n_head=6)


@pytest.mark.parametrize(("in_features", "out_features", "eligible"), [
    (768, 2304, True),     # the 124M LM's fused qkv
    (768, 2048, True),     # its SwiGLU gate and up projections
    (768, 50304, True),    # its tied LM head
    (768, 768, False),     # attention output: K <= 4096 and N <= 1024, the cast costs more
    (2048, 768, False),    # the down projection, likewise
    (8192, 768, True),     # K > 4096: the matmul outweighs the cast
    (760, 4096, False),    # K not a multiple of 16: no FP8 GEMM
])
def test_the_rule_takes_the_layers_where_fp8_matmuls_pay(in_features, out_features, eligible):
    with torch.device("meta"):
        layer = nn.Linear(in_features, out_features)
    assert fp8_eligible(layer) is eligible
    assert not fp8_eligible(nn.Conv2d(16, 2048, 1))  # Linear layers only


def test_the_swap_keeps_weights_the_output_head_and_checkpoint_keys():
    torch.manual_seed(0)
    model = DecoderLM(wide_tiny())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qkv = model.blocks[0].attn.qkv.weight
    assert fp8_eligible(model.lm_head)  # by its size; the model keeps it (fp8_keep)
    assert convert_to_fp8(model, torch.device("cpu")) == ["blocks.0.attn.qkv",
                                                           "blocks.1.attn.qkv"]
    assert model.blocks[0].attn.qkv.config.emulate  # off CUDA: emulated
    assert type(model.blocks[0].attn.qkv).__name__ == "Float8Linear"
    assert model.blocks[0].attn.qkv.weight is qkv  # the same Parameter: optimizer state holds
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight is model.tok_emb.weight
    assert type(model.blocks[0].attn.proj) is nn.Linear  # too small to pay
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    plain = DecoderLM(wide_tiny())
    plain.load_state_dict(after)  # an fp8 model's weights load into the plain model

    idx = torch.randint(0, V, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fp8_logits, plain_logits = model(idx)[0].float(), plain(idx)[0].float()
    # the same function to FP8's rounding (e4m3: 3 mantissa bits), not another one
    assert (fp8_logits - plain_logits).abs().mean() < 0.1 * plain_logits.abs().mean()


def test_fp8_is_bf16_autocast_and_refused_where_it_cannot_run(monkeypatch):
    assert "fp8" in PRECISIONS
    assert DTYPES["fp8"] is torch.bfloat16
    assert resolve_precision("fp8", torch.device("cpu")) == "fp8"
    TrainConfig(precision="fp8")  # a known precision
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp4")

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(RuntimeError, match=r"NVIDIA A100 is 8\.0: use precision bf16"):
        check_fp8_device(torch.device("cuda", 0))
    assert FP8_MIN_CAPABILITY == (8, 9)

    monkeypatch.setitem(sys.modules, "torchao.float8", None)  # as if torchao were absent
    with pytest.raises(RuntimeError, match=r"needs torchao: pip install -e '\.\[fp8\]'"):
        convert_to_fp8(nn.Linear(768, 2304), torch.device("cpu"))


def test_an_fp8_run_learns_and_its_checkpoint_loads_into_the_plain_model(tmp_path):
    uri = toy_dataset(tmp_path, counting(60, 64))
    model_config = wide_tiny()
    result = train_model(
        "lm", dataset_uri=uri, out_uri=(tmp_path / "run").as_uri(), model_config=model_config,
        train_config=TrainConfig(steps=20, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=2,
                                 log_every=5, device="cpu", precision="fp8", progress=False))
    assert result.precision == "fp8" and result.extras["fp8_layers"] == 2
    assert result.final_loss < 0.8 * result.first_loss, result
    plain = DecoderLM(model_config)
    plain.load_state_dict(load_checkpoint(result.checkpoint_uri)["model"])
    assert type(plain.blocks[0].attn.qkv) is nn.Linear


@pytest.mark.cuda
def test_cuda_fp8_compiled_run_learns(tmp_path):
    if torch.cuda.get_device_capability() < FP8_MIN_CAPABILITY:
        pytest.fail("the cuda tests run on an H100 (sm_90): FP8 tensor cores expected")
    uri = toy_dataset(tmp_path, counting(200, 64))
    result = train_model(
        "lm", dataset_uri=uri, out_uri=(tmp_path / "run").as_uri(),
        model_config=wide_tiny(),
        train_config=TrainConfig(steps=30, batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=2,
                                 log_every=5, device="cuda", precision="fp8", compile=True,
                                 num_workers=0, progress=False))
    assert (result.precision, result.extras["fp8_layers"]) == ("fp8", 2)
    assert result.final_loss < 0.8 * result.first_loss
