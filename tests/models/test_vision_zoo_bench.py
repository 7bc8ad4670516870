"""benchmarks/vision_zoo.py end to end on the CPU with tiny presets (the --smoke flag)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(tmp_path, *flags: str) -> tuple[dict, set[str], str]:
    code = (
        "import json, sys, runpy\n"
        f"sys.argv = ['vision_zoo.py', '--smoke', '--device', 'cpu', '--out', {str(tmp_path)!r},"
        f" *{list(flags)!r}]\n"
        "runpy.run_path('benchmarks/vision_zoo.py', run_name='__main__')\n"
        "print('MODULES ' + json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    tagged = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in out.stdout.splitlines()
              if line.split(" ", 1)[0] in ("RESULT", "MODULES")}
    return json.loads(tagged["RESULT"]), set(json.loads(tagged["MODULES"])), out.stderr


@pytest.mark.slow
def test_speed_smoke_times_the_kinds_through_the_trainer_and_the_models_alone(tmp_path):
    result, modules, stderr = run_bench(tmp_path, "--configs", "fp32,bf16", "--kinds",
                                        "mobilenet_v2,segmenter-deeplab")
    trainer = result["trainer"]
    assert set(trainer["rows"]) == {"mobilenet_v2", "segmenter-deeplab"}
    assert trainer["speedup_vs_fp32"]["segmenter-deeplab"]["fp32"] == 1.0
    assert "mean_iou" in trainer["rows"]["segmenter-deeplab"]["bf16"]["eval"]
    peers = result["peers"]
    assert {"ours mobilenet_v2", "ours efficientnet_b0"} <= set(peers["rows"])
    assert set(peers["mobilenet_over_effnet"]["ours"]) == {"fp32", "bf16"}
    # GPU hosts have torch, numpy, PIL, protobuf: nothing of the engines or the config layer
    # (numba, for the reader's kernels where installed, imports PyYAML for its own config)
    yaml = set() if "numba" in modules else {"yaml"}
    assert not modules & {"tensorflow", "pyspark", "apache_beam", "pydantic", "features",
                          "pipelines", *yaml}, modules
    assert "MobileNetV2 / EfficientNet-B0" in stderr


@pytest.mark.slow
def test_quality_smoke_reports_pa_mpa_miou_per_head_and_upsampling(tmp_path):
    result, _, stderr = run_bench(tmp_path, "--quality", "--heads", "unet,fcn",
                                  "--upsamples", "pixel_shuffle")
    rows = result["quality"]["rows"]
    assert set(rows) == {"unet/pixel_shuffle", "fcn/pixel_shuffle"}
    for row in rows.values():
        assert all(0.0 <= row[k] <= 1.0 for k in ("pixel_accuracy", "mean_accuracy",
                                                   "mean_iou"))
        assert row["receptive_field"] > 32
    assert "MIoU" in stderr
