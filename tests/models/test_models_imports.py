"""What importing models/ loads: never TensorFlow, Spark or Beam; no torch for the configs."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

FORBIDDEN = ("tensorflow", "pyspark", "apache_beam")
ROOT = Path(__file__).resolve().parents[2]

PUBLIC = ["models.kinds", "models.train_config", "models.config_fields", "models.lm_config",
          "models.vqvae_config", "models.efficientnet_config", "models.trainer",
          "models.train_common", "models.task_lm", "models.task_vision", "models.lm",
          "models.vqvae", "models.efficientnet", "models.runlog", "models.vq_tokens"]


def loaded_after(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """The modules under ``prefixes`` that importing ``modules`` loads, in a fresh process."""
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {prefixes!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return ast.literal_eval(out.stdout.strip())


@pytest.mark.parametrize("module", PUBLIC)
def test_public_api_is_declared(module):
    mod = importlib.import_module(module)
    assert all(hasattr(mod, name) for name in mod.__all__), module


def test_the_kind_registry_and_the_configs_load_without_torch():
    """Config files are checked before any engine or torch loads (in well under 2 s)."""
    modules = ["models", "models.kinds", "models.train_config", "models.lm_config",
               "models.vqvae_config", "models.efficientnet_config", "models.config_fields"]
    assert loaded_after(modules, ("torch", "numpy", "records")) == []


@pytest.mark.parametrize(
    "modules",
    [
        ["models", "models.lm", "models.data", "models.attention", "models.checkpoint",
         "models.trainer", "models.task_lm"],
        ["models.trainer", "records.reader", "records.writer", "records.manifest"],
        ["models.vqvae", "models.efficientnet", "models.vision_data", "models.task_vision",
         "models.vq_tokens", "models.kinds"],
    ],
)
def test_no_engine_imports(modules):
    assert loaded_after(modules, FORBIDDEN) == []


# What a GPU host lacks besides the engines: the benchmark may import none of it.
NOT_ON_GPU_HOSTS = (*FORBIDDEN, "pydantic", "yaml", "features", "pipelines", "airflow",
                    "airflow_dags", "great_expectations", "pyspark")


def test_vision_benchmark_imports_only_models_and_records():
    code = (
        "import runpy, sys\n"
        "runpy.run_path('benchmarks/train_vision.py', run_name='bench')\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({NOT_ON_GPU_HOSTS!r})))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'shardforge'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, cwd=ROOT)
    assert out.stdout.split("\n")[:2] == ["[]", "[]"], out.stdout
