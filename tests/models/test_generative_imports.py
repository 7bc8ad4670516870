"""The generative kinds' modules: declared APIs, torch-free configs, no engine, a GPU-host benchmark."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
from test_models_imports import FORBIDDEN, NOT_ON_GPU_HOSTS, ROOT, loaded_after

from models.kinds import ConfigFieldError, build_configs

MODULES = ["models.vqgan", "models.vqgan_config", "models.vae", "models.vae_config",
           "models.flows", "models.flow_config", "models.dit", "models.rectified_flow",
           "models.rectified_flow_config", "models.frechet", "models.perceptual",
           "models.vision_generative", "models.vq_sample", "models.png", "models.sample_grid"]
CONFIGS = ["models.vqgan_config", "models.vae_config", "models.flow_config",
           "models.rectified_flow_config"]


@pytest.mark.parametrize("module", MODULES)
def test_public_api_is_declared(module):
    mod = importlib.import_module(module)
    assert mod.__all__ and all(hasattr(mod, name) for name in mod.__all__), module


def test_configs_load_without_torch_and_models_without_engines():
    assert loaded_after(CONFIGS, ("torch", "numpy", "records")) == []
    assert loaded_after(MODULES, FORBIDDEN) == []


@pytest.mark.parametrize(
    "kind, model, path, message",
    [
        ("vae", {"latent": "normal"}, "model.latent", "gaussian"),
        ("vae", {"tau_min": 2.0}, "model.tau_min", "tau_start"),
        ("flow", {"coupling": "affine", "image_size": 18}, "model.image_size", "divisible"),
        ("flow", {"levls": 2}, "model.levls", "did you mean 'levels'"),
        ("rectified_flow", {"timesteps": "cosine"}, "model.timesteps", "logit_normal"),
        ("rectified_flow", {"dim": 66}, "model.dim", "heads"),
        ("vqgan", {"disc_start": -1}, "model.disc_start", ">= 0"),
        ("vqgan", {"rec_loss": "l3"}, "model.rec_loss", "l1"),
    ],
)
def test_bad_fields_are_named(kind, model, path, message):
    with pytest.raises(ConfigFieldError, match=message) as info:
        build_configs(kind, preset="tiny", model=model, train={}, context={"num_classes": 3})
    assert info.value.path == path


def test_generative_benchmark_imports_only_models_and_records():
    code = (
        "import runpy, sys\n"
        "runpy.run_path('benchmarks/generative.py', run_name='bench')\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({NOT_ON_GPU_HOSTS!r})))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, cwd=ROOT)
    assert out.stdout.split("\n")[0] == "[]", out.stdout
