"""benchmarks/lm_vs_nanogpt.py on the CPU with tiny shapes: our trainer's variants beside the
nanoGPT-style reference, each run's ratio to the reference of the same run."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from benchmarks import lm_vs_nanogpt


def test_variants_name_their_attention_and_compile_mode():
    assert lm_vs_nanogpt.parse_variants(
            "auto,cudnn,cudnn:reduce-overhead,auto:max-autotune,auto:default:fp8,"
            "flash:max-autotune-no-cudagraphs:bf16") == {
        "ours": ("auto", "default", ""),
        "ours-cudnn": ("cudnn", "default", ""),
        "ours-cudnn-reduce-overhead": ("cudnn", "reduce-overhead", ""),
        "ours-max-autotune": ("auto", "max-autotune", ""),
        "ours-fp8": ("auto", "default", "fp8"),
        "ours-flash-max-autotune-no-cudagraphs-bf16": ("flash", "max-autotune-no-cudagraphs",
                                                       "bf16"),
    }
    for bad in ("flash3", "cudnn:fast", "auto:default:fp4"):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(bad)):
            lm_vs_nanogpt.parse_variants(bad)


def test_two_variants_and_the_reference_train_side_by_side(tmp_path):
    result = lm_vs_nanogpt.main(["--tiny", "--device", "cpu", "--repeats", "2",
                                 "--ours", "auto,math:default:fp8", "--out", str(tmp_path)])
    for name in ("ours", "ours-math-fp8", "nanogpt"):
        row = result[name]
        assert row["tokens_per_s"]["min"] > 0, name
        assert row["val_loss"]["median"] < math.log(512), name  # below uniform: they learned
    config = json.loads((tmp_path / "runs" / "ours-math-fp8-0" / "config.json").read_text())
    assert config["train_config"]["precision"] == "fp8"  # the variant's precision reached it
    assert config["train_config"]["attention"] == "math"
    ratio = result["ours-math-fp8"]["ratio_to_nanogpt"]
    assert ratio["min"] <= ratio["median"] <= ratio["max"]
    assert ratio["of_medians"] == pytest.approx(
        result["ours-math-fp8"]["tokens_per_s"]["median"] / result["nanogpt"]["tokens_per_s"]["median"])
    assert result["nanogpt"]["ratio_to_nanogpt"]["median"] == 1.0
    assert result["tokens_per_s_ratio"] == result["ours"]["ratio_to_nanogpt"]["of_medians"]
