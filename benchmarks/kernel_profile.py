"""Where a training step's GPU time goes: torch.profiler kernels grouped into families.

Imported as ``benchmarks.kernel_profile`` by the benchmarks that profile
(``lm_vs_nanogpt.py --profile``, ``long_context.py --profile``); torch only.
"""

from __future__ import annotations

import re
import sys

import torch

__all__ = ["KERNEL_FAMILIES", "kernel_families", "print_top_kernels"]

# Kernel families of a profile, first match wins: where a step's GPU time goes.
KERNEL_FAMILIES = (
    ("attention", re.compile(r"flash|fmha|attention|sdpa", re.I)),
    ("matmul", re.compile(r"gemm|cutlass|nvjet|sm90_xmma|cublas|matmul|wgmma", re.I)),
    ("convolution", re.compile(r"conv|cudnn", re.I)),
    ("optimizer", re.compile(r"multi_tensor|adam|foreach", re.I)),
    ("fused (inductor)", re.compile(r"^triton_", re.I)),
    ("copy / memset", re.compile(r"copy|memcpy|memset|fill", re.I)),
)


def kernel_families(prof, steps: int) -> dict[str, float]:
    """GPU milliseconds per step by kernel family (KERNEL_FAMILIES, else "other").

    Only device-side events count, and not the annotations on the GPU timeline
    ("ProfilerStep#3", "Optimizer.step#AdamW.step"): those span kernels already counted.
    """
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        us = getattr(event, "self_device_time_total", 0) or getattr(event,
                                                                    "self_cuda_time_total", 0)
        if us <= 0 or event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        if getattr(event, "is_user_annotation", False) or event.key.startswith("ProfilerStep"):
            continue
        family = next((f for f, rx in KERNEL_FAMILIES if rx.search(event.key)), "other")
        totals[family] = totals.get(family, 0.0) + us / 1000 / steps
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def print_top_kernels(prof, title: str, cuda: bool, rows: int = 20) -> None:
    """The profile's top ``rows`` events by self GPU time (CPU time off CUDA), to stderr."""
    print(f"--- {title}", file=sys.stderr)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=80),
          file=sys.stderr)
