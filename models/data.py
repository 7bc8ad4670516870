"""From record batches to language-model training windows.

The trainer reads documents through a :class:`TokenBatchSource` (in production
``records.reader.RecordDataset``): batches of padded ``input_ids`` (B, L) plus
``input_ids_lengths`` (B,). :func:`pack_documents` concatenates the documents,
each followed by an end-of-document token, and cuts the stream into fixed
``block_size + 1`` windows, so that no position is padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["TokenBatchSource", "loop_epochs", "pack_documents"]

IDS_KEY = "input_ids"
LENGTHS_KEY = "input_ids_lengths"


@runtime_checkable
class TokenBatchSource(Protocol):
    """What the trainer needs from a reader (``records.reader.RecordDataset`` is one).

    Iterating yields dicts with ``"input_ids"`` LongTensor (B, L), padded, and
    ``"input_ids_lengths"`` LongTensor (B,); other keys are ignored. The order of
    one epoch is a pure function of the seed given at construction and ``set_epoch``.
    """

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]: ...

    def set_epoch(self, epoch: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def loop_epochs(
    source: TokenBatchSource, start_epoch: int = 0
) -> Iterator[dict[str, torch.Tensor]]:
    """Yields the batches of ``source`` epoch after epoch, forever, calling ``set_epoch``.

    Raises:
        ValueError: an epoch yielded no batch (an empty split would loop forever).
    """
    epoch = start_epoch
    while True:
        source.set_epoch(epoch)
        empty = True
        for batch in source:
            empty = False
            yield batch
        if empty:
            raise ValueError(f"the data source yielded no batch in epoch {epoch}")
        epoch += 1


def _documents_with_eos(batch: dict[str, torch.Tensor], eos_id: int) -> torch.Tensor:
    """Flattens one padded batch into ``doc0 eos doc1 eos ...`` (1-D LongTensor)."""
    if IDS_KEY not in batch or LENGTHS_KEY not in batch:
        raise ValueError(f"batch needs keys {IDS_KEY!r} and {LENGTHS_KEY!r}, got {sorted(batch)}")
    ids, lengths = batch[IDS_KEY], batch[LENGTHS_KEY]
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        raise ValueError(
            f"{IDS_KEY!r} must be a 2-D tensor (B, L), got {getattr(ids, 'shape', ids)}"
        )
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{IDS_KEY!r} must hold integer token ids, got {ids.dtype}")
    if not isinstance(lengths, torch.Tensor) or lengths.shape != (ids.shape[0],):
        raise ValueError(
            f"{LENGTHS_KEY!r} must be a tensor of shape ({ids.shape[0]},), "
            f"got {getattr(lengths, 'shape', lengths)}"
        )
    lengths = lengths.long()
    if lengths.numel() and (lengths.min() < 0 or lengths.max() > ids.shape[1]):
        raise ValueError(f"{LENGTHS_KEY!r} must lie in [0, {ids.shape[1]}], got {lengths.tolist()}")
    B, L = ids.shape
    # One extra column holds each document's eos at index `length`.
    padded = torch.cat([ids.long(), ids.new_zeros((B, 1), dtype=torch.long)], dim=1)  # (B, L+1)
    padded.scatter_(1, lengths.reshape(B, 1), eos_id)
    positions = torch.arange(L + 1, device=ids.device).view(1, L + 1)  # (1, L+1)
    keep = positions <= lengths.reshape(B, 1)  # (B, L+1)
    keep &= (lengths > 0).view(B, 1)  # empty documents add nothing, not even an eos
    return padded[keep]  # row-major: doc0, eos, doc1, eos, ...


def pack_documents(
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    block_size: int,
    batch_size: int,
    eos_id: int,
    vocab_size: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Packs variable-length documents into next-token-prediction batches.

    Documents are concatenated in arrival order, each followed by ``eos_id``, and
    the stream is cut into non-overlapping windows of ``block_size + 1`` tokens;
    ``batch_size`` consecutive windows form one batch. Deterministic: the output is
    a pure function of the input order. Tokens that do not fill a last whole batch
    are dropped when ``batches`` ends.

    Args:
        batches: dicts with ``input_ids`` (B, L) padded and ``input_ids_lengths`` (B,).
        block_size: tokens per training sequence T.
        batch_size: sequences per yielded batch B.
        eos_id: end-of-document token id.
        vocab_size: when given, token ids outside ``[0, vocab_size)`` raise.

    Yields:
        ``(x, y)``: LongTensors (B, T), ``y[:, t] == x[:, t + 1]`` within the window.

    Raises:
        ValueError: non-positive sizes, malformed batches or out-of-vocabulary ids.
    """
    for name, value in (("block_size", block_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if vocab_size is not None and not 0 <= eos_id < vocab_size:
        raise ValueError(f"eos_id {eos_id} is outside the vocabulary [0, {vocab_size})")
    if eos_id < 0:
        raise ValueError(f"eos_id must be >= 0, got {eos_id}")
    window = block_size + 1
    need = batch_size * window  # tokens per yielded batch
    pending: list[torch.Tensor] = []
    n_pending = 0
    for batch in batches:
        tokens = _documents_with_eos(batch, eos_id)
        if vocab_size is not None and tokens.numel():
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= vocab_size:
                raise ValueError(f"token ids must lie in [0, {vocab_size}), got [{lo}, {hi}]")
        pending.append(tokens)
        n_pending += tokens.numel()
        if n_pending < need:
            continue
        stream = torch.cat(pending)
        n_full = stream.numel() // need
        for i in range(n_full):
            chunk = stream[i * need : (i + 1) * need].view(batch_size, window)  # (B, T+1)
            yield chunk[:, :-1].clone(), chunk[:, 1:].clone()  # (B, T) each
        rest = stream[n_full * need :]
        pending, n_pending = [rest], rest.numel()
