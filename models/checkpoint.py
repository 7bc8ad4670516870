"""Self-describing, atomically written training checkpoints.

A checkpoint is one ``torch.save`` file holding only plain containers, numbers,
strings and tensors, so ``torch.load(weights_only=True)`` can read it without
trusting arbitrary pickles:

    {
      "format_version": 1,
      "step": int,
      "model": state_dict,             # unwrapped from torch.compile
      "optimizer": state_dict,
      "scaler": dict,                  # GradScaler state ({} when not fp16)
      "model_config": dict,            # dataclasses.asdict(LMConfig)
      "train_config": dict,            # dataclasses.asdict(TrainConfig)
      "dataset_manifest_sha256": str,  # which data made these weights
      "reader": dict | None,           # rank 0's reader state_dict (what it had read)
      "data": list[dict] | None,       # per rank: {"reader", "packer", "rng"}, to resume exactly
      "reader_global": dict | None,    # the job's reader progress, topology-free (elastic resume)
      "rng": {"torch_cpu", "torch_cuda", "numpy", "python"},
      "extra": dict,
      "peft": dict,                    # PEFT runs only: see below
    }

A parameter-efficient fine-tuning run (``TrainConfig.peft``, :mod:`models.peft`) keeps in
``"model"`` only its trainable tensors, and under ``"peft"`` where the rest comes from:
``{"base_uri": the base checkpoint file, "base_sha256": its bytes' sha256, ...}``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle  # only for its UnpicklingError: checkpoints load with weights_only=True
import posixpath
import random
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

import numpy as np
import torch
from fsspec.implementations.local import LocalFileSystem
from torch import nn

from records.uri import open_uri, resolve

__all__ = [
    "FORMAT_VERSION",
    "capture_rng_state",
    "checkpoint_file",
    "checkpoint_sha256",
    "load_checkpoint",
    "load_model_weights",
    "restore_rng_state",
    "resume_checkpoint",
    "save_checkpoint",
]

FORMAT_VERSION = 1

log = logging.getLogger(__name__)


def _plain_config(config: Any, name: str) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config)
    raise TypeError(
        f"{name} must be a dataclass instance or a mapping, got {type(config).__name__}"
    )


def capture_rng_state() -> dict[str, Any]:
    """Returns torch (CPU, CUDA), numpy and python ``random`` states as plain values."""
    algorithm, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, py_state, gauss_next = random.getstate()
    return {
        "torch_cpu": torch.get_rng_state(),
        "torch_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "algorithm": str(algorithm),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),  # uint32 in int64
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": int(version), "state": list(py_state), "gauss_next": gauss_next},
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restores what :func:`capture_rng_state` returned (CUDA only where present here)."""
    torch.set_rng_state(state["torch_cpu"])
    cuda = state.get("torch_cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    np.random.set_state(
        (
            n["algorithm"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def _atomic_write(uri: str, write: Callable[[IO[bytes]], None]) -> None:
    """Writes ``uri`` through a temporary name in the same folder, then renames it."""
    fs, path = resolve(uri)
    parent = (
        posixpath.dirname(path) if not isinstance(fs, LocalFileSystem) else os.path.dirname(path)
    )
    tmp_name = f".{posixpath.basename(path)}.tmp-{uuid.uuid4().hex}"
    if isinstance(fs, LocalFileSystem):
        tmp = os.path.join(parent, tmp_name)
        os.makedirs(parent or ".", exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # atomic on POSIX
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    tmp = posixpath.join(parent, tmp_name)
    fs.makedirs(parent, exist_ok=True)
    try:
        with fs.open(tmp, "wb") as f:
            write(f)
        fs.mv(tmp, path)  # a rename on HDFS; copy + delete on object stores
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def save_checkpoint(
    uri: str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    model_config: Any,
    train_config: Any,
    dataset_manifest_sha256: str,
    reader_state: Mapping[str, Any] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    extra: Mapping[str, Any] | None = None,
    data_state: Sequence[Mapping[str, Any]] | None = None,
    model_state: Mapping[str, torch.Tensor] | None = None,
    peft: Mapping[str, Any] | None = None,
    reader_global: Mapping[str, Any] | None = None,
) -> str:
    """Saves a checkpoint to ``uri`` (local path, ``file://`` or any fsspec URI) atomically.

    Args:
        uri: destination file.
        model: the model; a ``torch.compile`` wrapper is unwrapped.
        optimizer: its state is saved.
        step: optimizer steps done.
        model_config, train_config: dataclass instances or mappings; stored as dicts.
        dataset_manifest_sha256: hex sha256 of the training dataset's manifest.json.
        reader_state: the reader's ``state_dict()``.
        scaler: fp16 GradScaler, if any.
        extra: more plain values to keep (must be ``weights_only``-loadable).
        data_state: one mapping per DDP rank (index = rank) with what that rank needs
            to continue its data stream exactly: reader and packer states, RNG states.
        model_state: the tensors to keep instead of ``model.state_dict()`` (a PEFT run
            keeps only its trainable ones).
        peft: a PEFT run's reference to its base checkpoint (kept under ``"peft"``).
        reader_global: every rank's reader progress as one topology-free state
            (``records.reader.RecordDataset.elastic_state``): what a job of another world
            size or ``num_workers`` resumes from.

    Returns:
        ``uri``.

    Raises:
        TypeError: a config that is neither a dataclass nor a mapping.
        ValueError: a negative step or an empty manifest hash.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    if not isinstance(dataset_manifest_sha256, str) or not dataset_manifest_sha256:
        raise ValueError("dataset_manifest_sha256 must be a non-empty hex string")
    raw_model = getattr(model, "_orig_mod", model)
    payload = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "model": raw_model.state_dict() if model_state is None else dict(model_state),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "model_config": _plain_config(model_config, "model_config"),
        "train_config": _plain_config(train_config, "train_config"),
        "dataset_manifest_sha256": dataset_manifest_sha256,
        "reader": dict(reader_state) if reader_state is not None else None,
        "rng": capture_rng_state(),
        "extra": dict(extra or {}),
        "data": [dict(d) for d in data_state] if data_state is not None else None,
        "reader_global": dict(reader_global) if reader_global is not None else None,
    }
    if peft is not None:
        payload["peft"] = dict(peft)
    _atomic_write(uri, lambda f: torch.save(payload, f))
    return uri


def load_checkpoint(uri: str, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Loads a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises:
        ValueError: the file is empty, truncated or not a checkpoint (copied half-way, or
            written in place by another tool: ours are atomic), or has a different
            ``format_version``; the message names the file.
    """
    with open_uri(uri, "rb") as f:
        try:
            ckpt = torch.load(f, map_location=map_location, weights_only=True)
        except (EOFError, OSError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{uri}: not a readable checkpoint (empty or truncated?): "
                             f"{type(exc).__name__}: {exc}") from None
    version = ckpt.get("format_version") if isinstance(ckpt, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(f"{uri}: checkpoint format_version {version!r}, expected {FORMAT_VERSION}")
    return ckpt


def checkpoint_file(uri: str) -> str:
    """``uri`` when it is a file, ``<uri>/ckpt.pt`` when it is a run folder.

    Raises:
        FileNotFoundError: neither a file nor a folder holding ``ckpt.pt``.
    """
    fs, path = resolve(uri)
    if fs.isdir(path):
        uri = posixpath.join(uri.rstrip("/"), "ckpt.pt")
        fs, path = resolve(uri)
    if not fs.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {uri}")
    return uri


def checkpoint_sha256(uri: str) -> str:
    """Hex sha256 of the bytes of checkpoint file ``uri`` (what a PEFT run refers to)."""
    digest = hashlib.sha256()
    with open_uri(uri, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def load_model_weights(
    model: nn.Module, uri: str, *, may_miss: Sequence[str] = ()
) -> dict[str, Any]:
    """Copies the model weights of checkpoint ``uri`` into ``model``; nothing else of it.

    Every tensor of ``model``'s state dict must come from the checkpoint with the same
    shape, except those whose names start with a prefix in ``may_miss``: absent from the
    checkpoint, they keep their current values. Checkpoint tensors ``model`` has no place
    for are left out and listed. Nothing is copied when a check fails.

    Args:
        model: the model (a ``torch.compile`` wrapper is unwrapped).
        uri: a checkpoint written by :func:`save_checkpoint`, or its run folder.
        may_miss: name prefixes of tensors the checkpoint may lack (e.g. new heads).

    Returns:
        ``{"checkpoint": file URI, "loaded": [...], "missing": [...], "unused": [...],
        "model_config": the checkpoint's model config dict}``; the lists hold tensor names.

    Raises:
        FileNotFoundError: no checkpoint at ``uri``.
        ValueError: a tensor of another shape or a missing one (the message names it),
            another ``format_version``, or a PEFT checkpoint (it holds its adapters only).
    """
    uri = checkpoint_file(uri)
    source = load_checkpoint(uri)
    if source.get("peft") is not None:
        raise ValueError(f"{uri} is a PEFT checkpoint: it holds only its trainable tensors "
                         f"over base {source['peft'].get('base_uri')}; load it with "
                         "models.peft.load_peft_checkpoint")
    weights = source["model"]
    raw_model = getattr(model, "_orig_mod", model)
    target = raw_model.state_dict()
    for name, tensor in target.items():
        if name in weights and weights[name].shape != tensor.shape:
            raise ValueError(
                f"{uri}: {name} has shape {tuple(weights[name].shape)} there but "
                f"{tuple(tensor.shape)} in this model"
            )
    missing = [name for name in target if name not in weights]
    required = [name for name in missing if not name.startswith(tuple(may_miss))]
    if required:
        more = f" (and {len(required) - 1} more)" if len(required) > 1 else ""
        raise ValueError(f"{uri} lacks {required[0]}{more}, which this model needs")
    loaded = [name for name in target if name in weights]
    raw_model.load_state_dict({name: weights[name] for name in loaded}, strict=False)
    return {
        "checkpoint": uri,
        "loaded": loaded,
        "missing": missing,
        "unused": [name for name in weights if name not in target],
        "model_config": source["model_config"],
    }


def resume_checkpoint(
    resume: bool | str,
    out_uri: str,
    *,
    model_config: Any,
    train_config: Any,
    dataset_manifest_sha256: str,
    world_size: int,
    must_match: Sequence[str] = (),
) -> dict[str, Any] | None:
    """The checkpoint a run resumes from, checked against the run; None = start afresh.

    Args:
        resume: False = no resume; True = ``<out_uri>/ckpt.pt`` if it exists (else None,
            so a restarted job that never checkpointed starts over); a URI = that file.
        out_uri: the run folder.
        model_config: must equal the checkpoint's.
        train_config: its fields named in ``must_match`` must equal the checkpoint's.
        dataset_manifest_sha256: must equal the checkpoint's.
        world_size: must equal the number of per-rank data states saved, unless the
            checkpoint holds ``reader_global`` (then any world size can resume it).
        must_match: train_config fields that decide the data stream.

    Raises:
        TypeError: ``resume`` is neither a bool nor a string.
        FileNotFoundError: an explicit checkpoint URI that does not exist.
        ValueError: the checkpoint belongs to another dataset, model, data stream or
            world size, or holds no per-rank data states.
    """
    if resume is False:
        return None
    if resume is True:
        uri = posixpath.join(out_uri, "ckpt.pt")
        fs, path = resolve(uri)
        if not fs.exists(path):
            log.info("resume: no checkpoint at %s yet, starting from step 0", uri)
            return None
    elif isinstance(resume, str):
        uri = resume
    else:
        raise TypeError(f"resume must be a bool or a checkpoint URI, got {resume!r}")
    ckpt = load_checkpoint(uri)
    if ckpt["dataset_manifest_sha256"] != dataset_manifest_sha256:
        raise ValueError(f"{uri} was trained on another dataset (manifest sha256 differs)")
    if ckpt["model_config"] != _plain_config(model_config, "model_config"):
        raise ValueError(f"{uri} holds another model config: {ckpt['model_config']}")
    saved, wanted = ckpt["train_config"], _plain_config(train_config, "train_config")
    diff = [f for f in must_match if saved.get(f) != wanted.get(f)]
    if diff:
        raise ValueError(f"cannot resume {uri}: TrainConfig fields {diff} differ from the run's")
    data = ckpt.get("data")
    if not data or (len(data) != world_size and not ckpt.get("reader_global")):
        n = len(data) if data else 0
        raise ValueError(f"{uri} holds data states for {n} ranks, this job has {world_size}")
    log.info("resuming from %s at step %d", uri, ckpt["step"])
    return ckpt
