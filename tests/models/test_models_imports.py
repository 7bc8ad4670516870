"""models/ (and the records/ modules it loads) never import TensorFlow, Spark or Beam."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import models

FORBIDDEN = ("tensorflow", "pyspark", "apache_beam")
ROOT = Path(__file__).resolve().parents[2]


def test_public_api_is_declared():
    assert sorted(models.__all__) == models.__all__
    assert all(hasattr(models, name) for name in models.__all__)


@pytest.mark.parametrize(
    "modules",
    [
        [
            "models",
            "models.lm",
            "models.data",
            "models.attention",
            "models.checkpoint",
            "models.train",
        ],
        ["models.train", "records.reader", "records.writer", "records.manifest"],
    ],
)
def test_no_engine_imports(modules):
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
