"""DDP plumbing for the trainer: process group setup under ``torchrun`` and small collectives.

``torchrun --nproc_per_node N`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
:func:`distributed` reads them, initializes the process group (NCCL on CUDA, gloo on
CPU) when ``WORLD_SIZE > 1`` and tears it down on exit. A group that is already
initialized (by the caller) is used as is and left alone. With one process every
helper here is a no-op, so the trainer has a single code path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "all_mean_", "barrier", "distributed", "gather_objects"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0  # global rank; rank 0 writes metrics and checkpoints
    local_rank: int = 0  # rank on this host: the CUDA device index
    world_size: int = 1  # processes in the job

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when collectives are needed (more than one process)."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={value!r} is not an int") from e


@contextmanager
def distributed(device_type: str) -> Iterator[DistInfo]:
    """Joins the torchrun job (if any) for the duration of the block.

    Args:
        device_type: "cuda" (NCCL, and ``torch.cuda.set_device(LOCAL_RANK)``) or "cpu" (gloo).

    Yields:
        This process's :class:`DistInfo`.

    Raises:
        ValueError: inconsistent ``RANK`` / ``WORLD_SIZE`` environment variables.
    """
    if dist.is_available() and dist.is_initialized():
        yield DistInfo(dist.get_rank(), _env_int("LOCAL_RANK", 0), dist.get_world_size())
        return
    world = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank} WORLD_SIZE={world}")
    info = DistInfo(rank, local, world)
    if world == 1:
        yield info
        return
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    log.info("joined %s process group: rank %d of %d", backend, rank, world)
    try:
        yield info
    finally:
        dist.destroy_process_group()


def all_mean_(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Averages ``tensor`` over ranks in place (no host sync on NCCL); returns it."""
    if info.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)  # gloo has no AVG
        tensor.div_(info.world_size)
    return tensor


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (picklable), indexed by rank, on every rank."""
    if not info.active:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    """Waits for every rank (e.g. until rank 0 has written a checkpoint)."""
    if info.active:
        dist.barrier()
