"""From record batches to language-model training windows.

The trainer reads documents through a :class:`TokenBatchSource` (in production
``records.reader.RecordDataset``): batches of padded ``input_ids`` (B, L) plus
``input_ids_lengths`` (B,). :class:`DocumentPacker` concatenates the documents,
each followed by an end-of-document token, and cuts the stream into fixed
``block_size + 1`` windows, so that no position is padding.

Exact resume: the packed stream is a pure function of the reader's batch order
and of the tokens carried over from the last reader batch into the next training
batch. So the trainer checkpoints both: the reader's ``state_dict()`` (kept current
by :func:`loop_epochs`, which calls ``source.advance()`` for every batch it hands
over) and :meth:`DocumentPacker.state_dict` (the carried-over tokens). Packing
stays stateful rather than per reader batch: dropping each batch's remainder would
throw away up to a window per reader batch and make the step count per epoch vary.
:class:`Prefetcher` packs (and pins) ahead in a thread and hands each batch over
with the state snapshot taken right after it, so checkpoints stay exact.

Elastic resume: a checkpoint also holds the reader's topology-free progress
(``records.reader.RecordDataset.elastic_state``). A job resumed with another world
size or ``num_workers`` reads only what the checkpointed job left of the epoch, and
:func:`rank_resume_state` hands the carried-over tokens of the old ranks to the new
ones (old rank ``i`` to new rank ``i % world_size``), so no document is lost or repeated;
the batches come in another order than the old job would have given.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import torch

__all__ = ["DocumentPacker", "Prefetcher", "TokenBatchSource", "loop_epochs", "loop_stream",
           "pack_documents", "rank_resume_state"]

T = TypeVar("T")

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
    source: TokenBatchSource,
    start_epoch: int = 0,
    *,
    iterable: Iterable[dict[str, torch.Tensor]] | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Yields the batches of ``source`` epoch after epoch, forever, calling ``set_epoch``.

    When ``source`` has ``advance()`` (``records.reader.RecordDataset``) it is called
    once per batch, just before the batch is handed over, so ``source.state_dict()``
    always counts the batches the consumer holds (not those a DataLoader prefetched).

    Args:
        source: the reader; receives ``set_epoch`` and ``advance``.
        start_epoch: first epoch. It may yield nothing when a resumed reader had
            already consumed all of it; any later empty epoch raises.
        iterable: what to iterate instead of ``source`` itself, e.g. a
            ``DataLoader(source, batch_size=None, num_workers=...)``.

    Raises:
        ValueError: an epoch yielded no batch (an empty split would loop forever).
    """
    advance = getattr(source, "advance", None)
    epoch = start_epoch
    while True:
        source.set_epoch(epoch)
        empty = True
        for batch in source if iterable is None else iterable:
            empty = False
            if advance is not None:
                advance()
            yield batch
        if empty and epoch != start_epoch:
            raise ValueError(f"the data source yielded no batch in epoch {epoch}")
        epoch += 1


def loop_stream(source: TokenBatchSource, items: Iterable[tuple[int, Any]]
                ) -> Iterator[dict[str, torch.Tensor]]:
    """The batches of an epoch-tagged stream, keeping ``source``'s state like :func:`loop_epochs`.

    ``items`` are ``(epoch, batch)`` and ``(epoch, None)`` markers, e.g. a DataLoader over
    ``records.epoch_stream.EpochStream(source)`` whose workers live across epochs. Markers
    are dropped; the first batch of a new epoch calls ``source.set_epoch``, and every batch
    calls ``source.advance()`` just before it is handed over, so ``source.state_dict()``
    counts the batches the consumer holds (not those the DataLoader prefetched) and
    resumes exactly as with :func:`loop_epochs`.

    Args:
        source: the reader (in this process); receives ``set_epoch`` and ``advance``.
        items: the tagged stream; it starts at ``source``'s state when it is iterated.
    """
    advance = getattr(source, "advance", None)
    epoch = None
    for tag, batch in items:
        if batch is None:
            continue
        if tag != epoch:
            source.set_epoch(tag)  # a no-op for the epoch the source already is in
            epoch = tag
        if advance is not None:
            advance()
        yield batch


def rank_resume_state(saved: list[dict[str, Any]], reader_global: dict[str, Any] | None, *,
                      rank: int, world_size: int, same_topology: bool) -> dict[str, Any]:
    """This rank's data state (``reader``, ``packer``, ``rng``) out of a checkpoint's.

    Args:
        saved: the checkpoint's per-rank states (index = old rank).
        reader_global: the checkpoint's topology-free reader state, or None.
        rank, world_size: this rank in the resuming job.
        same_topology: the job has the checkpointed job's world size and ``num_workers``:
            the rank continues exactly where its predecessor stopped.

    Returns:
        ``saved[rank]`` for the same topology. Otherwise ``reader`` is ``reader_global``,
        ``packer`` (when the ranks had one) carries the tokens of old ranks
        ``rank, rank + world_size, ...`` in that order, and ``rng`` is old rank ``rank``'s
        states, or None for a rank the old job did not have.

    Raises:
        ValueError: another topology and no ``reader_global`` (an older checkpoint).
    """
    if same_topology:
        return saved[rank]
    if reader_global is None:
        raise ValueError(f"the checkpoint was written by {len(saved)} ranks and holds no "
                         f"topology-free reader state: resume it with {len(saved)} ranks and "
                         "the same num_workers")
    state: dict[str, Any] = {"reader": reader_global,
                             "rng": saved[rank]["rng"] if rank < len(saved) else None}
    if all("packer" in s for s in saved):
        carries = [s["packer"]["carry"] for s in saved[rank::world_size]]
        state["packer"] = {"carry": torch.cat(carries) if carries
                           else torch.empty(0, dtype=torch.long)}
    return state


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


class DocumentPacker:
    """Packs variable-length documents into next-token-prediction batches; resumable.

    Documents are concatenated in arrival order, each followed by ``eos_id``, and
    the stream is cut into non-overlapping windows of ``block_size + 1`` tokens;
    ``batch_size`` consecutive windows form one batch. Deterministic: the output is
    a pure function of the input order and of the carried-over tokens, which
    :meth:`state_dict` returns. Tokens that do not fill a last whole batch are
    dropped when ``batches`` ends.

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

    def __init__(
        self,
        batches: Iterable[dict[str, torch.Tensor]],
        *,
        block_size: int,
        batch_size: int,
        eos_id: int,
        vocab_size: int | None = None,
    ) -> None:
        for name, value in (("block_size", block_size), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if vocab_size is not None and not 0 <= eos_id < vocab_size:
            raise ValueError(f"eos_id {eos_id} is outside the vocabulary [0, {vocab_size})")
        if eos_id < 0:
            raise ValueError(f"eos_id must be >= 0, got {eos_id}")
        self._batches = iter(batches)
        self.block_size, self.batch_size = block_size, batch_size
        self.eos_id, self.vocab_size = eos_id, vocab_size
        self._need = batch_size * (block_size + 1)  # tokens per yielded batch
        self._carry = torch.empty(0, dtype=torch.long)  # stream tokens not yet yielded

    def __iter__(self) -> DocumentPacker:
        return self

    def _tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = _documents_with_eos(batch, self.eos_id)
        if self.vocab_size is not None and tokens.numel():
            lo, hi = int(tokens.min()), int(tokens.max())
            if lo < 0 or hi >= self.vocab_size:
                raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got [{lo}, {hi}]")
        return tokens

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        parts, n = [self._carry], self._carry.numel()
        try:
            while n < self._need:
                tokens = self._tokens(next(self._batches))  # StopIteration ends the packing
                parts.append(tokens)
                n += tokens.numel()
        finally:
            stream = torch.cat(parts) if len(parts) > 1 else parts[0]
            self._carry = stream
        chunk = stream[: self._need].view(self.batch_size, self.block_size + 1)  # (B, T+1)
        self._carry = stream[self._need :]
        return chunk[:, :-1].clone(), chunk[:, 1:].clone()  # (B, T) each

    def state_dict(self) -> dict[str, Any]:
        """``{"carry": LongTensor}``: the tokens read but not yet yielded."""
        return {"carry": self._carry.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`; pair it with the reader state saved at the same time.

        Raises:
            ValueError: ``carry`` is not a 1-D integer tensor.
        """
        carry = state.get("carry") if isinstance(state, dict) else None
        if not isinstance(carry, torch.Tensor) or carry.dim() != 1 or carry.is_floating_point():
            raise ValueError(f"packer state needs a 1-D integer 'carry' tensor, got {state!r}")
        self._carry = carry.long().clone()


def pack_documents(
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    block_size: int,
    batch_size: int,
    eos_id: int,
    vocab_size: int | None = None,
) -> DocumentPacker:
    """A :class:`DocumentPacker` over ``batches`` (same arguments)."""
    return DocumentPacker(
        batches, block_size=block_size, batch_size=batch_size, eos_id=eos_id, vocab_size=vocab_size
    )


class Prefetcher(Generic[T]):
    """Runs an iterator ``depth`` items ahead in a background thread.

    Each item travels with ``snapshot()`` taken right after it was produced, and
    :attr:`state` is the snapshot of the last item handed out: the state to checkpoint,
    whatever the thread has read ahead. ``transform`` (e.g. pinning host memory) runs in
    the thread too. Exceptions of the iterator are raised by ``next()`` in the consumer.

    Args:
        items: the iterator (e.g. a :class:`DocumentPacker`).
        snapshot: returns the producer's resumable state; called in the thread.
        depth: items kept ready (>= 1).
        transform: applied to each item in the thread.
    """

    _END = object()

    def __init__(
        self,
        items: Iterator[T],
        *,
        snapshot: Callable[[], Any],
        depth: int = 2,
        transform: Callable[[T], T] | None = None,
    ) -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive int, got {depth!r}")
        self._items, self._snapshot, self._transform = items, snapshot, transform
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.state = snapshot()  # nothing handed out yet
        self._thread = threading.Thread(target=self._run, name="shardforge-prefetch", daemon=True)
        self._thread.start()

    def _put(self, entry: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if self._transform is not None:
                    item = self._transform(item)
                if not self._put((item, self._snapshot(), None)):
                    return
            self._put((self._END, None, None))
        except BaseException as e:
            self._put((self._END, None, e))

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        item, state, error = self._queue.get()
        if item is self._END:
            self._queue.put((item, state, error))  # later calls end (or raise) the same way
            if error is not None:
                raise error
            raise StopIteration
        self.state = state
        return item

    def close(self) -> None:
        """Stops the thread (it finishes the item it is producing) and waits for it."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=30)
