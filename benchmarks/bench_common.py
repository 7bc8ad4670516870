"""What several benchmarks share: cached synthetic datasets and parameter-matched LM configs.

Imported as ``benchmarks.bench_common`` (each benchmark puts the project root on the path);
it imports only records/ and models/, like the benchmarks that use it.
"""

from __future__ import annotations

import os
import shutil

from records.manifest import load_manifest

__all__ = ["TINY_MIXER_OVERRIDES", "count_params", "matched_config", "reusable_dataset"]

# Mixer settings that fit the tiny preset (CPU smoke runs of the mixer benchmarks).
TINY_MIXER_OVERRIDES = {"gau": {"chunk_size": 16, "gau_qk_dim": 32},
                        "sliding_window": {"window": 32}, "linear": {"chunk_size": 16},
                        "mamba2": {"chunk_size": 16, "ssm_head_dim": 16, "ssm_state": 16},
                        "s4d": {"ssm_state": 16}}


def reusable_dataset(uri: str, config: dict) -> bool:
    """True when ``uri`` (a ``file://`` dataset version) was committed with ``config``;
    otherwise whatever lies there is removed, so the caller writes it afresh."""
    try:
        if load_manifest(uri).config == config:
            return True
    except FileNotFoundError:
        pass
    local = uri[len("file://"):]
    if os.path.exists(local):
        shutil.rmtree(local)
    return False


def count_params(cfg):
    """Parameters of a DecoderLM(cfg), built on the meta device (CPU when that fails)."""
    import torch

    from models.lm import DecoderLM

    try:
        with torch.device("meta"):
            return DecoderLM(cfg).num_params()
    except Exception:  # a mixer whose init needs real values
        return DecoderLM(cfg).num_params()


def matched_config(mixer: str, base: dict, target: int, **overrides):
    """``base`` with ``mixer`` and the n_layer whose parameter count is nearest ``target``.

    Parameters grow linearly with n_layer (embedding + L x per-layer), so two counts fix it.
    """
    from models.lm import LMConfig

    fields = {**base, **overrides, "mixer": mixer}
    one = count_params(LMConfig(**{**fields, "n_layer": 1}))
    per_layer = count_params(LMConfig(**{**fields, "n_layer": 2})) - one
    n_layer = max(1, round((target - (one - per_layer)) / per_layer))
    return LMConfig(**{**fields, "n_layer": n_layer})
