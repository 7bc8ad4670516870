"""benchmarks/kernel_bandwidth.py: reading Inductor's bandwidth log as torch itself writes it.

The log is written here by torch's own ``end_graph`` (the function a compiled graph calls
with ``profile_bandwidth`` on), so a change of its format in a new torch fails these tests
instead of reading as zero kernels on the GPU.
"""

from __future__ import annotations

import pytest
import torch
from torch._inductor.runtime import triton_heuristics

from benchmarks import lm_vs_nanogpt
from benchmarks.kernel_bandwidth import (
    copy_bandwidth_gbps,
    file_size,
    read_blocks,
    summarize,
)


def write_call(path: str, graph_kernels: list[tuple[float, float, str]]) -> None:
    """One graph call's block, through torch's writer: (ms, GB, kernel name) each."""
    triton_heuristics.collected_calls.clear()
    for ms, gb, name in graph_kernels:
        triton_heuristics.collected_calls.append((ms, gb, gb / (ms / 1e3), name))
    triton_heuristics.end_graph(path)
    triton_heuristics.collected_calls.clear()


def test_the_blocks_between_two_offsets_are_one_steps_calls(tmp_path):
    log = str(tmp_path / "bw.log")
    step1 = [(0.5, 1.25, "triton_poi_fused_add_0")]
    step2_forward = [(0.25, 0.5, "triton_red_fused_rms_norm_1"),
                     (0.125, 0.25, "triton_poi_fused_mul_silu_2")]
    step2_backward = [(1.0, 2.5, "triton_red_fused_cross_entropy_3")]
    write_call(log, step1)
    start = file_size(log)
    write_call(log, step2_forward)
    write_call(log, step2_backward)
    end = file_size(log)
    write_call(log, [(9.0, 9.0, "triton_eval_only_9")])  # a later call (the final eval)

    blocks = read_blocks(log, start=start, end=end)
    assert [[k.name for k in b] for b in blocks] == [
        ["triton_red_fused_rms_norm_1", "triton_poi_fused_mul_silu_2"],  # slowest first
        ["triton_red_fused_cross_entropy_3"]]
    assert len(read_blocks(log)) == 4
    kernels = [k for b in blocks for k in b]
    assert [k.ms for k in kernels] == [0.25, 0.125, 1.0]
    assert kernels[0].gbps == pytest.approx(2000.0)

    s = summarize(kernels, copy_gbps=3000.0)
    assert s["kernels"] == 3
    assert s["ms"] == pytest.approx(1.375) and s["gb"] == pytest.approx(3.25)
    assert s["gbps"] == pytest.approx(3.25 / 1.375e-3)
    assert s["of_copy"] == pytest.approx(s["gbps"] / 3000.0)
    assert [k["name"] for k in s["slowest"]][0] == "triton_red_fused_cross_entropy_3"
    assert summarize(kernels, copy_gbps=None)["of_copy"] is None


def test_a_line_in_another_format_is_refused_by_file_and_line(tmp_path):
    log = tmp_path / "bw.log"
    write_call(str(log), [(0.5, 1.0, "triton_poi_fused_add_0")])
    log.write_text(log.read_text().replace("0.500ms", "0.500 msec"))
    with pytest.raises(ValueError, match=r"bw\.log: line 3 .*not a kernel timing"):
        read_blocks(str(log))


def test_no_copy_bandwidth_off_cuda_and_bandwidth_mode_refuses_the_cpu(tmp_path):
    assert copy_bandwidth_gbps(torch.device("cpu")) is None
    with pytest.raises(SystemExit, match="CUDA device: it cannot run with --device cpu"):
        lm_vs_nanogpt.main(["--tiny", "--device", "cpu", "--compile", "--bandwidth",
                            "--out", str(tmp_path)])


@pytest.mark.cuda
def test_bandwidth_mode_times_both_trainers_fused_kernels_on_a_gpu(tmp_path):
    # batch 64: the log prints GB to 3 decimals, and the tiny model's tensors at batch 2 are
    # all under 0.5 MB (every kernel would read as 0.000 GB)
    result = lm_vs_nanogpt.main(["--tiny", "--device", "cuda", "--bandwidth", "--batch-size",
                                 "64", "--out", str(tmp_path)])
    assert result["copy_gbps"] > 100  # any GPU of this decade
    for name in ("ours", "nanogpt"):
        row = result[name]
        assert row["kernels"] > 3, name  # norms, activation, cross-entropy at least
        assert row["ms"] > 0 and row["gb"] > 0, name
        assert 0 < row["of_copy"] < 2, name  # L2-resident tiny tensors may beat the HBM copy


def test_the_log_context_switches_timing_on_and_every_cache_off_within(tmp_path):
    import torch._inductor.config as inductor_config

    from benchmarks.kernel_bandwidth import inductor_bandwidth_log

    log = tmp_path / "bw.log"
    log.write_text("an older run's blocks\n")
    with inductor_bandwidth_log(str(log)):
        assert inductor_config.profile_bandwidth
        assert inductor_config.profile_bandwidth_output == str(log)
        assert torch.compiler.config.force_disable_caches  # no graph compiled untimed is reused
        assert log.read_text() == ""  # each run starts its own log
    assert not inductor_config.profile_bandwidth
    assert not torch.compiler.config.force_disable_caches
