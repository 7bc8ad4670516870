"""PyTorch datasets over a records dataset version folder.

:class:`RecordDataset` (iterable, already batched) is the training reader;
:class:`RecordIndexDataset` (map-style) gives random access through the ``.idx``
files of uncompressed shards.

Using RecordDataset with a DataLoader::

    ds = RecordDataset("file:///lake/records/posts/v=1", "train", batch_size=256,
                       shuffle=True, seed=1)
    loader = DataLoader(ds, batch_size=None, num_workers=3, pin_memory=True)
    ds.load_state_dict(ckpt["data"])                 # resume (optional)
    for epoch in range(ds.epoch, epochs):
        ds.set_epoch(epoch)
        for batch in loader:
            train_step(batch)
            ds.advance()                             # one batch consumed
            if time_to_checkpoint: save({"data": ds.state_dict(), ...})

Resume contract: ``state_dict()`` is ``{"epoch", "batches_consumed"}`` and the
trainer keeps it current by calling :meth:`RecordDataset.advance` once per batch it
consumed (per rank). Resumed with the same world size and ``num_workers`` (and the
same dataset, batch size, seed and shuffle settings), a rank continues exactly: with a
DataLoader (``batch_size=None``, the default ``in_order=True``,
``persistent_workers=False``) the batches arrive round-robin from the workers, so
after ``k`` batches worker ``w`` has delivered a deterministic share of them
(:func:`records.partition.resume_point`); on resume each worker skips its share,
the workers' round-robin is rotated to continue where it stopped, and the
remaining batches are exactly those of the uninterrupted run, in the same order.

Workers that live across epochs: :class:`records.epoch_stream.EpochStream` runs every
epoch through ONE DataLoader iteration (each worker pads its share of an epoch with
markers to the longest share, so the round-robin stays aligned) and gives the same
batches in the same order, resumable from the same ``state_dict()``; consume it with
``models.data.loop_stream``. The trainer uses it whenever ``num_workers > 0``.

Elastic resume (another world size or ``num_workers``): the gathered ``state_dict()``
of every rank goes through :meth:`RecordDataset.elastic_state`, which gives what the
job consumed as epoch positions, ``{"epoch", "consumed": {epoch: [[start, stop], ...]}}``,
whatever its topology. Every rank of the new job loads that same state and the ranks and
workers share what is left: the two jobs read every record of the epoch once (the rest
in another order). ``state_dict()`` then carries ``"consumed"`` along until the epoch
ends, so the new job can be resumed again, on any topology.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from records.batch_decode import ExampleDecoder, decode_slow
from records.errors import CorruptRecordError, check_on_corrupt
from records.manifest import Manifest, load_manifest
from records.partition import (
    job_consumed,
    normalize_spans,
    plan,
    rank_batches,
    resume_point,
    spans_size,
)
from records.scan import HEADER, OVERHEAD, check_frames
from records.spec import FeatureSpec, FixedLenFeature, VarLenFeature, validate_spec
from records.stream import ConsumerStream, IndexCache, ShardReader
from records.torch_batch import to_torch

__all__ = ["RecordDataset", "RecordIndexDataset", "to_torch"]


_LAYOUTS = {"bytes_as": ("list", "uint8"), "varlen_as": ("padded", "nested")}


def _open(uri_or_manifest_dir: str | Manifest, split: str, feature_spec):
    if not isinstance(uri_or_manifest_dir, str):
        raise TypeError("pass the dataset version folder URI (or its manifest.json path)")
    uri = uri_or_manifest_dir
    if uri.rstrip("/").endswith("manifest.json"):
        uri = uri.rstrip("/")[: -len("manifest.json")]
    manifest = load_manifest(uri)
    spec = validate_spec(feature_spec if feature_spec is not None else manifest.spec)
    return uri.rstrip("/"), manifest, manifest.split(split), spec


def _dist_defaults(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return (torch.distributed.get_rank() if rank is None else rank,
                torch.distributed.get_world_size() if world_size is None else world_size)
    return (0 if rank is None else rank), (1 if world_size is None else world_size)


class RecordDataset(IterableDataset):
    """Batched, partitioned, shuffled, resumable reader of one split.

    Args:
        uri_or_manifest_dir: dataset version folder (must hold ``_SUCCESS``).
        split: split name.
        batch_size: records per batch (use ``DataLoader(batch_size=None)``).
        feature_spec: decode spec; default: the manifest's.
        shuffle: shuffle shard order per epoch and records within windows.
        seed: shuffle seed (with the epoch).
        shuffle_buffer: window size of the record shuffle.
        drop_last: drop the final partial batch; then every rank gets
            ``(N // world_size) // batch_size`` batches (DDP-safe lockstep).
            Without it ranks may differ by one batch.
        verify_crc: check both CRCs of every record.
        on_corrupt: ``"raise"`` or ``"skip"`` (skipped records shrink the epoch).
        rank, world_size: this process's place in DDP; default from
            ``torch.distributed`` when initialized, else 0 / 1.
        report: callable receiving skipped :class:`~records.errors.CorruptRecordError` s.
        threads: decode threads in this process; default 2 in the main process,
            1 inside DataLoader workers.
        bytes_as, varlen_as: tensor layouts, see :func:`to_torch`.

    Batches are dicts: see :mod:`records.spec` for each feature's output.
    """

    # bytes_as="uint8": pack scalar bytes straight from the record buffers into one batch
    # array (shared memory in a worker); False = a bytes object per value, then a packed
    # copy (the earlier path, kept for comparison: benchmarks/vision_reader.py)
    byte_spans = True

    def __init__(self, uri_or_manifest_dir: str, split: str = "train", *, batch_size: int,
                 feature_spec: FeatureSpec | None = None, shuffle: bool = False, seed: int = 0,
                 shuffle_buffer: int = 10_000, drop_last: bool = False, verify_crc: bool = True,
                 on_corrupt: str = "raise", rank: int | None = None,
                 world_size: int | None = None, report=None, threads: int | None = None,
                 bytes_as: str = "list", varlen_as: str = "padded"):
        super().__init__()
        for option, value in (("bytes_as", bytes_as), ("varlen_as", varlen_as)):
            if value not in _LAYOUTS[option]:
                raise ValueError(f"{option} must be one of {_LAYOUTS[option]}, got {value!r}")
        self.bytes_as, self.varlen_as = bytes_as, varlen_as
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
        check_on_corrupt(on_corrupt)
        self.uri, self.manifest, self.split_info, self.spec = _open(
            uri_or_manifest_dir, split, feature_spec)
        self.split = split
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.shuffle_buffer, self.drop_last = shuffle_buffer, drop_last
        self.verify_crc, self.on_corrupt, self.report = verify_crc, on_corrupt, report
        self.rank, self.world_size = _dist_defaults(rank, world_size)
        self.threads = threads
        self._counts = [s.records for s in self.split_info.shards]
        # shard .idx arrays read in this process, kept across epochs (a worker that lives
        # across epochs reads each index once); filled lazily by the epoch's ConsumerStream
        self._indexes = IndexCache()
        self.epoch = 0
        self.batches_consumed = 0
        # epoch -> positions earlier jobs consumed (elastic resume); this job reads the rest
        self._consumed: dict[int, np.ndarray] = {}
        self._consumed_lists: dict[int, list] = {}  # the same, as state_dict() gives them
        plan(self._counts, epoch=0, seed=seed, shuffle=shuffle, rank=self.rank,
             world_size=self.world_size, worker=0, num_workers=1, batch_size=batch_size,
             drop_last=drop_last)  # validates rank/world_size now

    def _plan_args(self, epoch: int) -> dict[str, Any]:
        return dict(epoch=epoch, seed=self.seed, shuffle=self.shuffle,
                    batch_size=self.batch_size, drop_last=self.drop_last,
                    consumed=self._consumed.get(epoch))

    def __len__(self) -> int:
        """Batches this rank yields in the current epoch (from manifest counts)."""
        consumed = self._consumed.get(self.epoch)
        left = sum(self._counts) - (spans_size(consumed) if consumed is not None else 0)
        return rank_batches(left, rank=self.rank, world_size=self.world_size,
                            batch_size=self.batch_size, drop_last=self.drop_last)[2]

    def _keep_consumed(self, consumed: dict[int, np.ndarray]) -> None:
        self._consumed = {e: s for e, s in consumed.items() if e >= self.epoch and len(s)}
        self._consumed_lists = {e: s.tolist() for e, s in sorted(self._consumed.items())}

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch (its shard order and shuffle); a new epoch resets progress."""
        if epoch != self.epoch:
            self.epoch, self.batches_consumed = int(epoch), 0
            self._keep_consumed(self._consumed)

    def advance(self, n_batches: int = 1) -> None:
        """Records that the trainer consumed ``n_batches`` more batches of this epoch."""
        if n_batches < 0 or self.batches_consumed + n_batches > len(self):
            raise ValueError(f"advance({n_batches}) goes past the epoch's {len(self)} batches")
        self.batches_consumed += n_batches

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "batches_consumed"}`` (see the module docstring for the contract).

        After an elastic resume it also holds ``"consumed"``: ``{epoch: [[start, stop],
        ...]}``, the positions earlier jobs read of this epoch (and of later ones).
        """
        state: dict[str, Any] = {"epoch": self.epoch, "batches_consumed": self.batches_consumed}
        if self._consumed_lists:
            state["consumed"] = dict(self._consumed_lists)  # shared lists: do not modify
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`, or an :meth:`elastic_state` of any job.

        A ``state_dict()`` (it has ``"batches_consumed"``) continues this rank exactly; it
        must come from a job of the same world size and ``num_workers``. An
        ``elastic_state()`` makes this rank read its share of what the job left.

        Raises:
            ValueError: a position or batch count outside this dataset's epoch.
        """
        total = sum(self._counts)
        consumed = {int(e): normalize_spans(s, total)
                    for e, s in dict(state.get("consumed") or {}).items()}
        self.epoch, self.batches_consumed = int(state["epoch"]), 0
        self._keep_consumed(consumed)
        consumed_batches = int(state.get("batches_consumed", 0))
        if not 0 <= consumed_batches <= len(self):
            raise ValueError(f"batches_consumed={consumed_batches} outside 0..{len(self)}")
        self.batches_consumed = consumed_batches

    def elastic_state(self, states: list[dict[str, Any]], *, num_workers: int
                      ) -> dict[str, Any]:
        """The job's progress as epoch positions, whatever its topology (module docstring).

        Args:
            states: every rank's :meth:`state_dict`, index = rank, taken at the same step
                of a job of ``len(states)`` ranks reading this dataset with this
                dataset's batch size, seed and shuffle settings.
            num_workers: the DataLoader workers per rank of that job (0 = none).

        Returns:
            ``{"epoch": the earliest rank's epoch, "consumed": {epoch: [[start, stop],
            ...]}}``, for :meth:`load_state_dict` on every rank of any job.
        """
        if not states:
            raise ValueError("elastic_state needs the state of every rank, got none")
        before: dict[int, list] = {}  # what jobs before this one consumed (same on every rank)
        for s in states:
            for e, spans in dict(s.get("consumed") or {}).items():
                before.setdefault(int(e), []).extend(spans)
        progress = job_consumed(
            self._counts, [(int(s["epoch"]), int(s["batches_consumed"])) for s in states],
            before, num_workers=num_workers, window=self.shuffle_buffer, seed=self.seed,
            shuffle=self.shuffle, batch_size=self.batch_size, drop_last=self.drop_last)
        return {"epoch": min(progress), "consumed": {e: s.tolist() for e, s in progress.items()}}

    def worker_batches(self, epoch: int, num_workers: int) -> tuple[int, ...]:
        """Batches each of this rank's ``num_workers`` workers (0 = none) yields in ``epoch``."""
        return plan(self._counts, worker=0, rank=self.rank, world_size=self.world_size,
                    num_workers=max(int(num_workers), 1), **self._plan_args(epoch)).worker_batches

    def epoch_batches(self, epoch: int, *, worker: int, num_workers: int,
                      skip_batches: int = 0) -> Iterator[dict]:
        """The batches worker ``worker`` of ``num_workers`` (0 = none) yields in ``epoch``,
        after its first ``skip_batches``; what the DataLoader worker in that place reads."""
        workers = max(int(num_workers), 1)
        p = plan(self._counts, worker=worker, rank=self.rank, world_size=self.world_size,
                 num_workers=workers, **self._plan_args(epoch))
        threads = self.threads if self.threads is not None else (1 if get_worker_info() else 2)
        spans = [n for n, f in self.spec.items() if self.bytes_as == "uint8" and self.byte_spans
                 and isinstance(f, FixedLenFeature) and f.dtype == "bytes" and f.shape == ()]
        stream = ConsumerStream(
            root=self.uri, shards=self.split_info.shards, compression=self.manifest.compression,
            decoder=ExampleDecoder(self.spec, spans=spans), plan=p,
            consumer=self.rank * workers + worker, batch_size=self.batch_size,
            drop_last=self.drop_last, shuffle=self.shuffle, window=self.shuffle_buffer,
            seed=self.seed, epoch=epoch, skip_batches=skip_batches,
            verify_crc=self.verify_crc, on_corrupt=self.on_corrupt, report=self.report,
            threads=threads, index_cache=self._indexes)
        for batch in stream:
            yield to_torch(batch, self.spec, bytes_as=self.bytes_as, varlen_as=self.varlen_as)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        slot, num_workers = (info.id, info.num_workers) if info else (0, 1)
        shares, rotate = resume_point(self.batches_consumed,
                                      self.worker_batches(self.epoch, num_workers))
        # A resumed DataLoader starts its round-robin at slot 0: slot j continues the
        # stream of the worker that would have come j-th after the resume point.
        worker = (slot + rotate) % num_workers
        yield from self.epoch_batches(self.epoch, worker=worker, num_workers=num_workers,
                                      skip_batches=shares[worker])


class RecordIndexDataset(Dataset):
    """Map-style random access to one split of uncompressed shards via ``.idx``.

    ``ds[i]`` is record ``i`` of the split (shards in manifest order), decoded per
    the spec: FixedLen -> tensor of its shape; VarLen numeric -> 1-d tensor
    (padded/truncated to ``max_len`` when set) plus ``<name>_lengths`` (0-d);
    bytes -> ``bytes`` / ``list[bytes]``. Default ``collate`` batches these when
    every VarLen feature has ``max_len``.

    Args:
        uri_or_manifest_dir: dataset version folder.
        split: split name.
        feature_spec: decode spec; default: the manifest's.
        verify_crc: check both CRCs of every record read.

    Raises:
        ValueError: the dataset is compressed (no random access).
    """

    def __init__(self, uri_or_manifest_dir: str, split: str = "train", *,
                 feature_spec: FeatureSpec | None = None, verify_crc: bool = True) -> None:
        self.uri, self.manifest, self.split_info, self.spec = _open(
            uri_or_manifest_dir, split, feature_spec)
        if self.manifest.compression is not None:
            raise ValueError(f"{self.uri}: RecordIndexDataset needs uncompressed shards "
                             f"(dataset is {self.manifest.compression}); use RecordDataset")
        self.split, self.verify_crc = split, verify_crc
        self._cum = np.cumsum([0] + [s.records for s in self.split_info.shards])
        self._readers = [ShardReader(self.uri, s, None) for s in self.split_info.shards]
        self._files: dict[int, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self._cum[-1])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = {}  # open files do not travel to DataLoader workers
        return state

    def _file(self, shard: int):
        if self._pid != os.getpid():  # forked: never share file offsets with the parent
            self._files, self._pid = {}, os.getpid()
        if shard not in self._files:
            r = self._readers[shard]
            self._files[shard] = r.fs.open(r.path, "rb")
        return self._files[shard]

    def _raw(self, i: int) -> bytes:
        if not -len(self) <= i < len(self):
            raise IndexError(f"record {i} out of range for {len(self)} records")
        i %= len(self)
        shard = int(np.searchsorted(self._cum, i, side="right")) - 1
        local = i - int(self._cum[shard])
        reader = self._readers[shard]
        off, n = (int(x) for x in reader.index()[local])
        f = self._file(shard)
        f.seek(off)
        buf = f.read(n)
        starts = np.zeros(1, dtype=np.int64)
        check = check_frames(buf, starts, verify_crc=self.verify_crc,
                             expected_lengths=np.array([n - OVERHEAD])) if len(buf) == n \
            else None
        if check is None or check.bad_header is not None or check.bad_data.size:
            reason = ("truncated record" if check is None else check.header_reason
                      or "data CRC mismatch (damaged record payload)")
            raise CorruptRecordError(reader.uri, off, local, reason)
        return buf[HEADER:HEADER + n - OVERHEAD]

    def __getitem__(self, i: int) -> dict:
        cols = decode_slow([self._raw(i)], self.spec,
                           where=lambda _: f"{self.uri} split={self.split} record {i}")
        return self._row(cols)

    def _row(self, cols: dict, r: int = 0) -> dict:
        out = {}
        for name, f in self.spec.items():
            col = cols[name]
            if f.dtype == "bytes":
                out[name] = col[r]
                if isinstance(f, VarLenFeature):
                    out[f"{name}_lengths"] = torch.tensor(len(col[r]))
            elif isinstance(f, FixedLenFeature):
                out[name] = torch.from_numpy(np.array(col[r]))  # 0-d stays 0-d
            else:
                vals = col.values[col.offsets[r]:col.offsets[r + 1]]
                n = len(vals)
                if f.max_len is not None:
                    pad = np.full(f.max_len, f.pad_value, dtype=vals.dtype)
                    n = min(n, f.max_len)
                    pad[:n] = vals[:n]
                    vals = pad
                out[name] = torch.from_numpy(np.ascontiguousarray(vals))
                out[f"{name}_lengths"] = torch.tensor(n)
        return out

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """Batched fetch (used by DataLoader): one vectorized decode for all indices."""
        raws = [self._raw(i) for i in indices]
        cols = ExampleDecoder(self.spec).decode_records(raws)
        return [self._row(cols, r) for r in range(len(indices))]
