"""benchmarks/long_context.py on the CPU with the tiny preset: the timing table and the
--profile mode that says where a step's time goes."""

from __future__ import annotations

import pytest
import torch

from benchmarks import long_context


@pytest.fixture(autouse=True)
def _keep_thread_count():
    """--tiny on the CPU sets one thread for the process; the tests after keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_table_times_every_mixer_and_relates_it_to_attention():
    result = long_context.main(["--device", "cpu", "--tiny", "--mixers",
                                "attention,mamba2_torch", "--lengths", "64"])
    cells = result["cells"]
    assert set(cells) == {"attention", "mamba2_torch"}
    assert all(c["64"]["status"] == "ok" and c["64"]["tokens_per_s"] > 0 for c in cells.values())
    ratio = result["ratio_vs_attention"]["mamba2_torch"]["64"]
    want = cells["mamba2_torch"]["64"]["tokens_per_s"] / cells["attention"]["64"]["tokens_per_s"]
    assert ratio == pytest.approx(want)
    assert result["overrides"]["mamba2_torch"]["ssm_kernel"] == "torch"


def test_profile_mode_reports_a_window_per_cell_instead_of_a_table(capsys):
    result = long_context.main(["--device", "cpu", "--tiny", "--profile", "--mixers",
                                "mamba2_torch", "--lengths", "64"])
    cell = result["profile"]["mamba2_torch"]["64"]
    assert cell["status"] == "ok" and cell["wall_ms_per_step"] > 0
    assert cell["profile"] == {} and cell["gpu_ms_per_step"] == 0  # no GPU kernels on a CPU
    assert "cells" not in result
    err = capsys.readouterr().err
    assert "mamba2_torch at T=64, batch 4: top kernels over 1 steps" in err
    assert "aten::" in err  # the profiler's own table of the CPU ops
