"""Training stages: a configured model trained on its dataset, and the VQ-VAE token export.

Every model kind goes through the same path: its entry's configs
(:func:`core.model_entries.model_configs`, already checked when the config was loaded), the
dataset its kind trains on (the posts dataset or the image dataset) and
:func:`models.kinds.train_model`, the one training loop. torch is imported only when a
model trains.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from core.config import ConfigError, ShardforgeConfig
from core.lake import Lake
from shardforge.stages import StageReport

__all__ = [
    "dataset_uri_of",
    "export_tokens",
    "image_dataset_uri",
    "latest_model_run",
    "resolve_init_from",
    "tokens_dataset_uri",
    "train",
]


def latest_model_run(lake: Lake, name: str) -> str:
    """The newest run id of model ``name`` (run ids sort by time).

    Raises:
        FileNotFoundError: the model has no runs in this lake.
    """
    folder = lake.fs_path(lake.model_runs(name))
    runs = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in lake.fs.ls(folder, detail=False)
                  ) if lake.fs.exists(folder) else []
    if not runs:
        raise FileNotFoundError(f"no run of model {name!r} under {lake.root}/models/{name}")
    return runs[-1]


def image_dataset_uri(cfg: ShardforgeConfig, lake: Lake) -> str:
    """The image dataset version folder (``encode --dataset images`` writes it)."""
    if cfg.image_dataset is None:
        raise ConfigError(f"{cfg.source}: image_dataset: not configured (the vision models train on it)")
    return lake.records(cfg.image_dataset.name, cfg.image_dataset.version)


def dataset_uri_of(cfg: ShardforgeConfig, lake: Lake, name: str, *, run_id: str | None = None
                   ) -> str:
    """The dataset ``models.<name>`` trains on: the posts dataset, the image dataset, or
    (``tokens_of``) the code shards of its VQ model (:func:`tokens_dataset_uri`)."""
    from models.kinds import KINDS

    if cfg.models[name].tokens_of is not None:
        return tokens_dataset_uri(lake, cfg.models[name].tokens_of, run_id=run_id)
    if KINDS[cfg.models[name].kind].dataset == "images":
        return image_dataset_uri(cfg, lake)
    return lake.records(cfg.dataset.name, cfg.dataset.version)


def tokens_dataset_uri(lake: Lake, vq: str, *, run_id: str | None = None) -> str:
    """``records/<vq>-tokens/v=<run_id>`` when that export is committed, else the newest
    committed export of model ``vq``'s codes.

    Raises:
        FileNotFoundError: no committed export (run ``shardforge tokens <vq>`` first).
    """
    dataset = f"{vq}-tokens"
    versions = lake.committed_versions(dataset)
    if not versions:
        raise FileNotFoundError(f"no code shards of model {vq!r} under {lake.root}/records/"
                                f"{dataset}: train {vq} and run `shardforge tokens {vq}` first")
    return lake.records(dataset, run_id if run_id in versions else versions[-1])


def resolve_init_from(cfg: ShardforgeConfig, lake: Lake, name: str, *, run_id: str) -> str | None:
    """The checkpoint ``models.<name>.train.init_from`` means, for the run ``run_id``.

    A model entry's name means that model's checkpoint of the same run id when there is one
    (``shardforge run`` and the DAG train both models under one run id, parent first), else
    of its latest run. Anything else is a checkpoint URI or run folder, returned as written.

    Raises:
        FileNotFoundError: the named model has no run, or its run no ``ckpt.pt``, yet.
    """
    ref = cfg.models[name].train.get("init_from") if name in cfg.models else None
    parent = cfg.init_from_model(name)
    if parent is None:
        return ref
    same_run = f"{lake.model_run(parent, run_id)}/ckpt.pt"
    if lake.fs.exists(lake.fs_path(same_run)):
        return same_run
    try:
        latest = latest_model_run(lake, parent)
    except FileNotFoundError:
        raise FileNotFoundError(f"models.{name}.train.init_from: model {parent!r} has no run yet "
                                f"under {lake.model_runs(parent)}; train it first "
                                f"(shardforge train {parent})") from None
    uri = f"{lake.model_run(parent, latest)}/ckpt.pt"
    if not lake.fs.exists(lake.fs_path(uri)):
        raise FileNotFoundError(f"models.{name}.train.init_from: the latest run of {parent!r} "
                                f"has no checkpoint ({uri}); did it finish?")
    return uri


def train(cfg: ShardforgeConfig, lake: Lake, name: str, *, run_id: str, device: str | None = None,
          on_step: Callable[[dict], None] | None = None, resume: bool = False) -> StageReport:
    """PyTorch: train ``models.<name>`` on its dataset's train split; checkpoint under ``models/``.

    With ``resume``, the run ``run_id`` continues from its ``ckpt.pt`` (same data order,
    RNG and optimizer state, so the loss curve is the one the uninterrupted run would have
    had). A model whose ``train.init_from`` names another entry starts from that model's
    checkpoint (:func:`resolve_init_from`), e.g. Medusa-1 heads on a frozen ``lm``.

    Raises:
        ConfigError: no such model entry.
        FileNotFoundError: ``resume`` without a checkpoint of ``run_id``, or no dataset yet.
    """
    from core.model_entries import model_configs
    from models.kinds import train_model

    model_cfg, train_cfg = model_configs(cfg, name)
    if device is not None:
        train_cfg = dataclasses.replace(train_cfg, device=device)
    if on_step is not None:  # the caller draws its own progress: no second bar (tqdm) under it
        train_cfg = dataclasses.replace(train_cfg, progress=False)
    if getattr(train_cfg, "init_from", None) is not None:  # the run records the checkpoint
        train_cfg = dataclasses.replace(
            train_cfg, init_from=resolve_init_from(cfg, lake, name, run_id=run_id))
    out = lake.model_run(name, run_id)
    if resume and not lake.fs.exists(lake.fs_path(f"{out}/ckpt.pt")):
        raise FileNotFoundError(f"train {name}: nothing to resume, {out}/ckpt.pt does not exist")
    kind = cfg.models[name].kind
    vq = cfg.models[name].tokens_of
    if vq is not None and lake.fs.exists(lake.fs_path(f"{lake.model_run(vq, run_id)}/ckpt.pt")) \
            and run_id not in lake.committed_versions(f"{vq}-tokens"):
        # `shardforge run` trained the VQ model in this run: its codes come first
        from models.train_common import resolve_device

        export_tokens(cfg, lake, vq, run_id=run_id, device=resolve_device(train_cfg.device).type)
    dataset_uri = dataset_uri_of(cfg, lake, name, run_id=run_id)
    if vq is not None:
        _check_codes_vocabulary(dataset_uri, name, model_cfg.vocab_size)
    result = train_model(kind, dataset_uri=dataset_uri, out_uri=out, model_config=model_cfg,
                         train_config=train_cfg, on_step=on_step, resume=resume)
    details = {"kind": kind, **result.details()}
    if vq is not None:
        details["tokens_of"] = dataset_uri
    from models.sample_grid import GRID_KINDS, write_sample_grid

    if kind in GRID_KINDS and result.rank == 0:  # what the report shows of an image model
        details["samples"] = write_sample_grid(result.checkpoint_uri, dataset_uri,
                                               device=result.device)
    return StageReport(f"train {name}", outputs=[result.checkpoint_uri], details=details)


def _check_codes_vocabulary(dataset_uri: str, name: str, vocab_size: int) -> None:
    """The code shards' vocabulary must be the one the LM is built with (the VQ entry's
    codebook may have changed since they were exported)."""
    from records.manifest import load_manifest

    exported = load_manifest(dataset_uri).config.get("vocab_size")
    if exported != vocab_size:
        raise ValueError(f"models.{name}: the code shards {dataset_uri} have vocab_size {exported}, "
                         f"the model is built for {vocab_size}: re-export them "
                         f"(shardforge tokens) with the VQ model's current codebook")


def export_tokens(cfg: ShardforgeConfig, lake: Lake, name: str, *, run_id: str,
                  device: str = "cpu") -> StageReport:
    """The code indices of the image dataset under VQ-VAE/VQGAN ``models.<name>`` run ``run_id``.

    Writes ``records/<name>-tokens/v=<run_id>``: ``input_ids`` per image (codes + 3, ids
    0/1/2 reserved like the posts dataset), which the LM trains on (VQGAN's second stage).
    """
    from models.vq_tokens import export_vq_tokens

    if cfg.models.get(name) is None or cfg.models[name].kind not in ("vqvae", "vqgan"):
        raise ConfigError(f"{cfg.source}: models.{name}: not a vqvae or vqgan model "
                          f"(configured: {sorted(cfg.models)})")
    dataset = f"{name}-tokens"
    out = lake.records(dataset, run_id)
    manifest = export_vq_tokens(checkpoint_uri=f"{lake.model_run(name, run_id)}/ckpt.pt",
                                dataset_uri=image_dataset_uri(cfg, lake), out_uri=out,
                                dataset=dataset, version=run_id, device=device)
    records = {split: info.records for split, info in manifest.splits.items()}
    return StageReport(f"tokens {name}", rows_in=sum(records.values()), rows_out=sum(records.values()),
                       outputs=[out], details={"records": records})
