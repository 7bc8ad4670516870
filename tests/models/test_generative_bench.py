"""benchmarks/generative.py's quality mode on the CPU (--smoke): a run cut short by a time
limit continues on a rerun (--resume), and every FD is printed as soon as it is computed."""

from __future__ import annotations

from benchmarks import generative


def test_a_rerun_with_resume_reuses_finished_runs_and_each_fd_prints_its_own_line(
        tmp_path, capsys):
    argv = ["--smoke", "--quality", "--parts", "rf", "--resume", "--ckpt-every", "2",
            "--device", "cpu", "--out", str(tmp_path)]
    first = generative.main(argv)["quality"]
    printed = capsys.readouterr().out
    for label, names in (("rf_logit_normal", ("fd_euler_1", "fd_euler_32", "fd_dopri5")),
                         ("rf_uniform", ("fd_euler_1", "fd_dopri5")),
                         ("rf_2rf", ("fd_euler_1", "fd_euler_4", "fd_dopri5"))):
        for name in names:
            assert f"\n{label} {name} " in f"\n{printed}", (label, name)
    runs = sorted((tmp_path / "runs").glob("q-*"))
    assert {r.name for r in runs} == {"q-classifier-rf", "q-logit_normal", "q-uniform",
                                      "q-reflow"}
    assert all((r / "ckpt.pt").exists() for r in runs)
    logged = {r.name: (r / "metrics.jsonl").read_text() for r in runs}

    second = generative.main(argv)["quality"]
    # Finished runs are reloaded, not trained again: no step is logged a second time, and
    # the same weights give the same samples (seeded) and so the same FDs.
    assert {r.name: (r / "metrics.jsonl").read_text() for r in runs} == logged
    assert second["rf_2rf"] == first["rf_2rf"]
    assert second["rf_logit_normal"] == first["rf_logit_normal"]
