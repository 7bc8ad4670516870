"""FP8 matmuls for training: ``precision: fp8`` (torchao's float8 training on the Linear layers
where it pays).

An ``fp8`` run is a bf16-autocast run whose eligible ``nn.Linear`` layers become torchao's
``Float8Linear``: the forward and both backward matmuls run on FP8 tensor cores with dynamic
tensorwise scales (e4m3 for activations and weights, e5m2 for gradients), everything else
(norms, attention, the loss, the optimizer's FP32 master weights) as in ``bf16``. The swap keeps
every weight Parameter and every state-dict key, so checkpoints load into the same model in any
precision, and a resumed run converts again.

Which layers: torchao's tensorwise rule from its H100 measurements — both dims multiples of 16
(the FP8 GEMM's requirement), and not (K <= 4096 and N <= 1024), where quantising the inputs
costs more than the faster matmul saves — and not a layer the model keeps in high precision
(a module's ``fp8_keep``: names of its submodules; the LM keeps its output head, as FP8 recipes
keep the last layer). For the 124M LM that is the fused qkv and the SwiGLU gate and up
projections (48% of its matmul FLOPs); the attention output, the down projection and the tied
LM head stay bf16.

Needs torchao (``pip install -e ".[fp8]"``) and, on CUDA, compute capability 8.9 or newer (Ada,
Hopper). Elsewhere (the CPU: tests) torchao's emulation gives the same rounding to FP8 with the
matmuls in bf16 — torch's FP8 matmul on the CPU is a reference loop, ~280x slower.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

__all__ = ["FP8_MIN_CAPABILITY", "check_fp8_device", "convert_to_fp8", "fp8_eligible"]

log = logging.getLogger(__name__)

FP8_MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (sm_89) and Hopper (sm_90)


def fp8_eligible(module: nn.Module) -> bool:
    """True for an ``nn.Linear`` whose FP8 matmuls should beat bf16 (the module docstring's
    rule; weight shape (N, K) = (out_features, in_features))."""
    if not isinstance(module, nn.Linear):
        return False
    n, k = module.weight.shape
    if n % 16 or k % 16:
        return False
    return not (k <= 4096 and n <= 1024)


def check_fp8_device(device: torch.device) -> None:
    """Raises, naming the GPU and its capability, where FP8 matmuls cannot run."""
    if device.type != "cuda":
        return
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        raise RuntimeError(
            f"precision fp8 needs FP8 tensor cores (compute capability >= "
            f"{FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]}); "
            f"{torch.cuda.get_device_name(device)} is {capability[0]}.{capability[1]}: "
            f"use precision bf16")


def convert_to_fp8(model: nn.Module, device: torch.device) -> list[str]:
    """Swaps ``model``'s eligible Linear layers that no module's ``fp8_keep`` names for
    torchao's ``Float8Linear`` in place (before ``torch.compile`` and DDP); returns their names.
    A model with none stays as it is and the run is a bf16 run, which the log says. Off CUDA
    the FP8 matmuls are emulated (the module docstring)."""
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as err:  # the optional dependency, named with its install line
        raise RuntimeError("precision fp8 needs torchao: pip install -e '.[fp8]'") from err
    kept = {f"{prefix}.{name}" if prefix else name  # the modules' fp8_keep, as full names
            for prefix, module in model.named_modules()
            for name in getattr(module, "fp8_keep", ())}
    converted: list[str] = []

    def take(module: nn.Module, name: str) -> bool:
        if name not in kept and fp8_eligible(module):
            converted.append(name)
            return True
        return False

    config = dataclasses.replace(Float8LinearConfig.from_recipe_name("tensorwise"),
                                 emulate=device.type != "cuda")
    convert_to_float8_training(model, module_filter_fn=take, config=config)
    if converted:
        log.info("fp8: %d Linear layers on FP8 matmuls (%s%s)", len(converted),
                 ", ".join(converted[:4]), ", ..." if len(converted) > 4 else "")
    else:
        log.warning("fp8: no Linear layer is large enough for FP8 matmuls to pay; "
                    "this run is a bf16 run")
    return converted
