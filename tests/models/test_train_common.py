"""models.train_common: the device / precision / optimizer policy both trainers share."""

import pytest
import torch

from models.train_common import make_optimizer, matmul_precision, resolve_device, resolve_precision


def test_fp32_runs_get_ieee_matmuls_and_mixed_runs_tf32_on_cuda_and_the_setting_is_restored():
    before = torch.get_float32_matmul_precision()
    cuda = torch.device("cuda")  # the context only sets a global flag: no GPU needed
    with matmul_precision(cuda, "fp32"):
        assert torch.get_float32_matmul_precision() == "highest"
    with matmul_precision(cuda, "bf16"):
        assert torch.get_float32_matmul_precision() == "high"
    with matmul_precision(torch.device("cpu"), "bf16"):
        assert torch.get_float32_matmul_precision() == before  # CPU runs are left alone
    assert torch.get_float32_matmul_precision() == before


def test_auto_choices_and_refusals():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(RuntimeError, match="cuda"):
            resolve_device("cuda")


def test_optimizer_decays_matrices_only_and_skips_frozen_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    model[2].requires_grad_(False)

    class Cfg:
        lr, beta1, beta2, weight_decay = 1e-3, 0.9, 0.95, 0.1

    opt = make_optimizer(model, Cfg, torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [(3, 4)] and decay["weight_decay"] == 0.1
    assert sorted(tuple(p.shape) for p in no_decay["params"]) == [(3,), (3,), (3,)]
    assert no_decay["weight_decay"] == 0.0
