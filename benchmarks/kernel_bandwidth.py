"""How close a compiled step's fused kernels run to the memory's speed.

Inductor can time every Triton kernel it generates on its own and divide the bytes the kernel
must move (its inputs and outputs, as Inductor counts them) by that time
(``torch._inductor.config.profile_bandwidth``). This module switches that on around a training
run, reads the log back, and sets the result beside a measured device-to-device copy: a fused
elementwise kernel near the copy's GB/s is memory-bound at the hardware's limit, and only
moving fewer bytes makes it faster.

Caveat (why this is a separate run, never a timed one): with bandwidth profiling on, Inductor
benchmarks each kernel on copies of its arguments and no longer writes the real outputs, so the
run's numbers (losses, weights) are meaningless; only the kernel timings are kept.

Imported as ``benchmarks.kernel_bandwidth`` by ``lm_vs_nanogpt.py --bandwidth``; torch only.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["KernelTiming", "copy_bandwidth_gbps", "file_size", "inductor_bandwidth_log",
           "read_blocks", "summarize"]

_HEADER = re.compile(r"^TRITON KERNELS BANDWIDTH INFO \((?P<graph>.*)\)$")
# One kernel line as torch/_inductor/runtime/runtime_utils.create_bandwidth_info_str writes it
# with the end_graph suffix: "0.123ms \t0.456 GB \t 3456.78GB/s \t 12.34% \t triton_poi_fused_…"
_LINE = re.compile(r"^(?P<ms>[\d.]+)ms\s+(?P<gb>[\d.]+) GB\s+(?P<gbps>[\d.]+)GB/s"
                   r"\s+[\d.]+%\s+(?P<name>\S+)\s*$")


@dataclass(frozen=True)
class KernelTiming:
    """One Triton kernel of one graph call: its time alone on the GPU and the bytes it moves."""

    graph: str
    name: str
    ms: float
    gb: float

    @property
    def gbps(self) -> float:
        return self.gb / (self.ms / 1e3) if self.ms > 0 else 0.0


@contextlib.contextmanager
def inductor_bandwidth_log(path: str) -> Iterator[str]:
    """Within: graphs compiled anew time each Triton kernel alone and append one block per
    graph call to ``path`` (created empty). Dynamo is reset on entry and exit and the compile
    caches (FX graph, AOT autograd, autotuning; on disk too) are off within, so no graph
    compiled without the timing is reused inside, and none compiled inside leaks out."""
    import torch._inductor.config as inductor_config

    open(path, "w").close()
    torch._dynamo.reset()
    try:
        with inductor_config.patch(profile_bandwidth=True, profile_bandwidth_regex="",
                                   profile_bandwidth_output=path,
                                   force_disable_caches=True):
            yield path
    finally:
        torch._dynamo.reset()


def read_blocks(path: str, start: int = 0, end: int | None = None) -> list[list[KernelTiming]]:
    """The graph-call blocks of an ``inductor_bandwidth_log`` file between byte offsets
    ``start`` and ``end`` (default: to the end), oldest first; one list of kernels per call.

    Raises ValueError naming the file and line for a line of a block that is not a kernel
    line in the format torch writes (a torch whose format moved must fail loudly, not read 0).
    """
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read(None if end is None else max(0, end - start)).decode()
    blocks: list[list[KernelTiming]] = []
    graph = None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("===="):
            continue
        if header := _HEADER.match(line):
            graph = header["graph"]
            blocks.append([])
        elif line.startswith("SUMMARY") or (graph is not None and line.endswith("GB/s")):
            continue  # the block's summary: its path line, then "ms GB GB/s"
        elif graph is not None and (kernel := _LINE.match(line)):
            blocks[-1].append(KernelTiming(graph, kernel["name"], float(kernel["ms"]),
                                           float(kernel["gb"])))
        else:
            raise ValueError(f"{path}: line {number} after offset {start} is not a kernel "
                             f"timing of torch's bandwidth log: {line[:120]!r}")
    return blocks


def summarize(kernels: list[KernelTiming], copy_gbps: float | None) -> dict:
    """Totals of one step's kernels: ms, GB, the GB/s they reach together, and that as a
    fraction of the measured copy bandwidth; the ten slowest kernels with their own GB/s."""
    ms = sum(k.ms for k in kernels)
    gb = sum(k.gb for k in kernels)
    gbps = gb / (ms / 1e3) if ms > 0 else 0.0
    top = sorted(kernels, key=lambda k: k.ms, reverse=True)[:10]
    return {"kernels": len(kernels), "ms": ms, "gb": gb, "gbps": gbps,
            "of_copy": gbps / copy_gbps if copy_gbps else None,
            "slowest": [{"name": k.name, "ms": k.ms, "gb": k.gb, "gbps": k.gbps} for k in top]}


def copy_bandwidth_gbps(device: torch.device, mib: int = 1024, iters: int = 20) -> float | None:
    """GB/s of a device-to-device copy of ``mib`` MiB (read + write counted), the memory's
    practical ceiling for an elementwise kernel; None off CUDA."""
    if device.type != "cuda":
        return None
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        dst.copy_(src)
    stop.record()
    torch.cuda.synchronize(device)
    seconds = start.elapsed_time(stop) / 1e3 / iters
    return 2 * src.numel() / seconds / 1e9


def file_size(path: str) -> int:
    """Bytes in ``path`` so far (0 before it exists): the offsets that cut one step's blocks."""
    return os.path.getsize(path) if os.path.exists(path) else 0
