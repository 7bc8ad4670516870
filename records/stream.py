"""One consumer's epoch: read its record range, check, decode, shuffle, batch.

Torch-free so it can be tested and benchmarked alone; :mod:`records.reader`
wraps it in PyTorch datasets.

Pipeline (per consumer = rank x DataLoader worker):

1. *Read* the plan's segments shard by shard. Uncompressed shards with an index
   are read with one seek + one large read per piece (``read_records`` records);
   compressed shards are decompressed from the index offset (data before it is
   decompressed and discarded). Pieces keep file order.
2. *Check + decode* each piece (CRCs, then :class:`~records.batch_decode.ExampleDecoder`),
   optionally on a small thread pool: numpy and the numba kernels of
   :mod:`records.read_kernels` (CRCs, varints) release the GIL for most of it.
3. *Shuffle* (optional): the stream is cut into windows of ``window`` records;
   window ``i`` is permuted with a seed of ``(seed, epoch, consumer, i)``.
4. *Batch*: consecutive ``batch_size`` rows of the (permuted) stream.

Resume: skipping ``k`` batches skips whole windows without reading them and
drops the first rows of the window the resume point falls in, so the rest of the
epoch is identical to an uninterrupted run.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from records import errors
from records.batch_decode import ExampleDecoder
from records.columns import concat_columns, num_rows, slice_rows, take_rows, to_batch
from records.compression import normalize_compression
from records.errors import CorruptRecordError
from records.framing import RecordBlock, deliver_checked, iter_record_blocks
from records.index import read_index
from records.manifest import ShardInfo
from records.partition import Plan, Segment, window_permutation
from records.scan import FOOTER, HEADER, OVERHEAD, check_frames
from records.uri import join, resolve, to_uri

__all__ = ["ConsumerStream", "IndexCache", "ShardReader"]

READ_RECORDS = 8192  # records per read/decode piece: big enough to amortize numpy calls


class IndexCache:
    """Shard indexes kept across epochs by one process, up to ``max_bytes``.

    An index costs 16 bytes a record, so the bound keeps a worker's memory flat on large
    splits: past it, the remaining indexes are read afresh each epoch, as without a cache.
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, path: str) -> np.ndarray | None:
        return self._arrays.get(path)

    def put(self, path: str, index: np.ndarray) -> None:
        if path not in self._arrays and self.nbytes + index.nbytes <= self.max_bytes:
            self._arrays[path] = index
            self.nbytes += index.nbytes

    def __len__(self) -> int:
        return len(self._arrays)


class ShardReader:
    """Reads record ranges of one shard as checked :class:`RecordBlock` s.

    Args:
        root: the dataset version folder URI.
        info: the shard's manifest entry.
        compression: the dataset's compression.
    """

    def __init__(self, root: str, info: ShardInfo, compression: str | None,
                 index_cache: IndexCache | None = None) -> None:
        fs, base = resolve(root)
        self.fs = fs
        self.path = join(base, info.path)
        self.index_path = join(base, info.index)
        self.uri = to_uri(fs, self.path)
        self.info = info
        self.compression = normalize_compression(compression)
        self._index: np.ndarray | None = None
        self._index_cache = index_cache

    def index(self) -> np.ndarray | None:
        """The shard's ``(offset, framed_length)`` index, or None if the file is missing.

        A checked index goes into ``index_cache`` when one was given, and is taken from there
        by later readers of the same shard (the next epoch's).
        """
        cache = self._index_cache
        if self._index is None and cache is not None:
            self._index = cache.get(self.index_path)
        if self._index is None:
            if not self.fs.exists(self.index_path):
                return None
            idx = read_index(to_uri(self.fs, self.index_path))
            if len(idx) != self.info.records:
                raise CorruptRecordError(self.uri, 0, 0, f"index lists {len(idx)} records "
                                         f"but the manifest says {self.info.records}",
                                         errors.INDEX_MISMATCH)
            self._index = idx
            if cache is not None:
                cache.put(self.index_path, idx)
        return self._index

    def pieces(self, start: int, stop: int, read_records: int) -> Iterator[Callable]:
        """Yields, in order, callables that check a piece and return ``(block, errors, ended)``.

        Reading happens when the generator advances (in order); the returned
        callable does the CPU work and may run on another thread.
        """
        idx = self.index()
        if self.compression is not None or idx is None:
            yield from self._stream_pieces(start, stop, idx, read_records)
            return
        with self.fs.open(self.path, "rb") as f:
            for p0 in range(start, stop, read_records):
                p1 = min(p0 + read_records, stop)
                off = int(idx[p0, 0])
                end = int(idx[p1 - 1, 0] + idx[p1 - 1, 1])
                f.seek(off)
                buf = f.read(end - off)
                yield _IndexedPiece(self.uri, buf, idx[p0:p1], off, p0)

    def _stream_pieces(self, start, stop, idx, read_records):
        first = start if idx is not None else 0
        offset = int(idx[start, 0]) if idx is not None and start < len(idx) else 0
        blocks = iter_record_blocks(self.uri, compression=self.compression,
                                    verify_crc=self._verify, on_corrupt=self._on_corrupt,
                                    report=self._report, start_offset=offset,
                                    count=stop - first, first_index=first)
        for block in blocks:
            keep = block.indices >= start  # without an index we scanned from record 0
            block = block if keep.all() else block.take(keep)
            for lo in range(0, len(block), read_records):
                yield _ReadyPiece(block.take(slice(lo, lo + read_records)))

    # set by ConsumerStream before pieces() is used on a compressed shard
    _verify = True
    _on_corrupt = "raise"
    _report = None


@dataclass
class _ReadyPiece:
    """A block already read and checked (compressed shards are checked while streaming)."""

    block: RecordBlock

    @property
    def size(self) -> int:
        return len(self.block)

    def __call__(self):
        return self.block, [], False


@dataclass
class _IndexedPiece:
    path: str
    buf: bytes
    idx: np.ndarray
    offset: int
    first_index: int
    verify_crc: bool = True

    @property
    def size(self) -> int:
        return len(self.idx)

    def __call__(self):
        starts = self.idx[:, 0] - self.offset
        complete = starts + self.idx[:, 1] <= len(self.buf)
        errs: list[CorruptRecordError] = []
        n_ok = int(np.argmin(complete)) if not complete.all() else len(starts)
        check = check_frames(self.buf, starts[:n_ok], verify_crc=self.verify_crc,
                             expected_lengths=self.idx[:n_ok, 1] - OVERHEAD)
        collected = []
        gen = deliver_checked(self.path, self.buf, starts[:n_ok], check, self.offset,
                              self.first_index, "collect", errs.append,
                              header_skippable=True)
        while True:
            try:
                collected.append(next(gen))
            except StopIteration:
                break
        ended = False
        if n_ok < len(starts):
            errs.append(CorruptRecordError(
                self.path, self.offset + int(starts[n_ok]), self.first_index + n_ok,
                "truncated record (file is shorter than its index says)", errors.TRUNCATED))
            ended = True
        blocks = [b for b in collected if len(b)]
        if not blocks:
            return None, errs, ended
        block = blocks[0] if len(blocks) == 1 else RecordBlock(
            self.buf, *(np.concatenate([getattr(b, f) for b in blocks])
                        for f in ("starts", "lengths", "indices", "offsets")))
        return block, errs, ended


class ConsumerStream:
    """Batches of one consumer for one epoch (numpy arrays / lists).

    Args:
        root: dataset version folder URI.
        shards: the split's shards (manifest order).
        compression: the dataset's compression.
        decoder: decodes record bytes per the spec.
        plan: this consumer's records (:func:`records.partition.plan`).
        consumer: global consumer number (seeds the window shuffle).
        batch_size, drop_last: batching; a final partial batch is dropped with
            ``drop_last``.
        shuffle, window, seed, epoch: the window shuffle.
        skip_batches: batches already consumed (resume).
        verify_crc, on_corrupt, report: corruption handling (see
            :func:`records.framing.iter_records`).
        threads: decode threads (1 = decode inline).
        read_records: records per read/decode piece.
        index_cache: shard indexes already read, shared with the next epoch's stream by
            the dataset that makes them; None reads every index afresh.
    """

    def __init__(self, *, root: str, shards: list[ShardInfo], compression: str | None,
                 decoder: ExampleDecoder, plan: Plan, consumer: int, batch_size: int,
                 drop_last: bool, shuffle: bool, window: int, seed: int, epoch: int,
                 skip_batches: int = 0, verify_crc: bool = True, on_corrupt: str = "raise",
                 report: Callable | None = None, threads: int = 1,
                 read_records: int | None = None,
                 index_cache: IndexCache | None = None) -> None:
        errors.check_on_corrupt(on_corrupt)
        self.root, self.shards, self.compression = root, shards, compression
        self.decoder, self.plan, self.consumer = decoder, plan, consumer
        self.batch_size, self.drop_last = batch_size, drop_last
        self.shuffle, self.window = shuffle, max(int(window), 1)
        self.seed, self.epoch = seed, epoch
        self.skip_rows = skip_batches * batch_size
        self.verify_crc, self.on_corrupt, self.report = verify_crc, on_corrupt, report
        self.threads = max(int(threads), 1)
        self.read_records = read_records or READ_RECORDS
        self._index_cache = index_cache
        self._readers: dict[int, ShardReader] = {}
        self._ended: set[str] = set()  # shards whose tail is unreadable (skip mode)

    def _reader(self, shard: int) -> ShardReader:
        if shard not in self._readers:
            r = ShardReader(self.root, self.shards[shard], self.compression,
                            index_cache=self._index_cache)
            r._verify, r._on_corrupt, r._report = self.verify_crc, self.on_corrupt, self.report
            self._readers[shard] = r
        return self._readers[shard]

    def _segments(self, skip: int) -> list[Segment]:
        out = []
        for seg in self.plan.segments:
            n = seg.stop - seg.start
            if skip >= n:
                skip -= n
                continue
            out.append(Segment(seg.shard, seg.start + skip, seg.stop))
            skip = 0
        return out

    def _tasks(self, segments: list[Segment]) -> Iterator[Callable]:
        """Groups of read pieces worth ~``read_records`` records, as decode tasks.

        Pieces of several shards go into one task so that small shards still get
        large vectorized decodes (the decode cost per call is mostly fixed).
        """
        group: list = []
        size = 0
        for seg in segments:
            reader = self._reader(seg.shard)
            for piece in reader.pieces(seg.start, seg.stop, self.read_records):
                if isinstance(piece, _IndexedPiece):
                    piece.verify_crc = self.verify_crc
                group.append((reader.uri, piece))
                size += piece.size
                if size >= self.read_records:
                    yield self._decode_task(group)
                    group, size = [], 0
                if reader.uri in self._ended:
                    break  # framing lost in this shard: stop reading it
        if group:
            yield self._decode_task(group)

    def _decode_task(self, group: list) -> Callable:
        def run():
            checked = [(uri, *piece()) for uri, piece in group]  # (uri, block, errs, ended)
            blocks = [(uri, b) for uri, b, _, _ in checked if b is not None and len(b)]
            parts = []
            for run_blocks in _runs(blocks, self.read_records // 2):
                block, uris, which = _merge(run_blocks)
                ids = block.indices
                parts += self.decoder.decode_chunks(
                    block.buf, block.starts, block.lengths,
                    where=lambda i, uris=uris, which=which, ids=ids:
                        f"{uris[which[i]]}: record #{int(ids[i])}")
            return [(uri, errs, ended) for uri, _, errs, ended in checked], parts
        return run

    def _decoded(self, segments: list[Segment]) -> Iterator[dict]:
        """Decoded columns per piece, in stream order (corruption handled in order)."""
        tasks = self._tasks(segments)
        if self.threads == 1:
            results = (t() for t in tasks)
            yield from self._handle(results)
            return
        with ThreadPoolExecutor(self.threads, thread_name_prefix="records-decode") as pool:
            pending: collections.deque = collections.deque()

            def results():
                for t in tasks:
                    pending.append(pool.submit(t))
                    if len(pending) > self.threads:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            try:
                yield from self._handle(results())
            finally:
                for f in pending:
                    f.cancel()

    def _handle(self, results) -> Iterator[dict]:
        for outcomes, parts in results:
            for uri, errs, ended in outcomes:
                if uri in self._ended:
                    continue  # read ahead before we learnt the shard's framing was lost
                for err in errs:
                    errors.handle_corruption(err, self.on_corrupt, self.report)
                if ended:
                    self._ended.add(uri)
            yield from (cols for cols in parts if num_rows(cols))

    def _ordered(self) -> Iterator[tuple[dict, np.ndarray | None]]:
        """(columns, row order) pieces of the permuted stream, resume skip applied."""
        if not self.shuffle:
            yield from ((c, None) for c in self._decoded(self._segments(self.skip_rows)))
            return
        first_window = self.skip_rows // self.window
        drop = self.skip_rows - first_window * self.window
        decoded = self._decoded(self._segments(first_window * self.window))
        for w, window in enumerate(_windows(decoded, self.window), start=first_window):
            n = num_rows(window)
            order = window_permutation(n, seed=self.seed, epoch=self.epoch,
                                       consumer=self.consumer, window=w)
            if drop:
                order, drop = order[drop:], max(drop - n, 0)
            if len(order):
                yield window, order

    def __iter__(self) -> Iterator[dict]:
        spec, bs = self.decoder.spec, self.batch_size
        parts: list[dict] = []
        have = 0
        for cols, order in self._ordered():
            n = num_rows(cols) if order is None else len(order)
            pos = 0
            while pos < n:
                take = min(bs - have, n - pos)
                parts.append(slice_rows(cols, pos, pos + take) if order is None
                             else take_rows(cols, order[pos:pos + take]))
                have += take
                pos += take
                if have == bs:
                    yield to_batch(concat_columns(parts), spec)
                    parts, have = [], 0
        if have and not self.drop_last:
            yield to_batch(concat_columns(parts), spec)


def _windows(decoded: Iterator[dict], size: int) -> Iterator[dict]:
    """Regroups decoded pieces into windows of exactly ``size`` rows (last may be short)."""
    parts: list[dict] = []
    have = 0
    for cols in decoded:
        n, pos = num_rows(cols), 0
        while pos < n:
            take = min(size - have, n - pos)
            parts.append(slice_rows(cols, pos, pos + take))
            have += take
            pos += take
            if have == size:
                yield concat_columns(parts)
                parts, have = [], 0
    if have:
        yield concat_columns(parts)


def _runs(blocks: list, size: int) -> Iterator[list]:
    """Consecutive blocks grouped so that each group but the last holds >= ``size`` records.

    A large block is decoded from its own read buffer; only small ones (small shards, the
    tail of a shard) are copied together by :func:`_merge` for a decode large enough.
    """
    group, have = [], 0
    for item in blocks:
        group.append(item)
        have += len(item[1])
        if have >= size:
            yield group
            group, have = [], 0
    if group:
        yield group


def _merge(blocks: list[tuple[str, RecordBlock]]) -> tuple[RecordBlock, list[str], np.ndarray]:
    """One block (one buffer) from several; also each row's source uri (index into uris)."""
    uris = [uri for uri, _ in blocks]
    which = np.repeat(np.arange(len(blocks)), [len(b) for _, b in blocks])
    if len(blocks) == 1:
        return blocks[0][1], uris, which
    views, starts, base = [], [], 0
    for _, b in blocks:
        lo = int(b.starts[0]) - HEADER
        hi = int(b.starts[-1] + b.lengths[-1]) + FOOTER
        views.append(memoryview(b.buf)[lo:hi])
        starts.append(b.starts - lo + base)
        base += hi - lo
    merged = RecordBlock(b"".join(views), np.concatenate(starts),
                         *(np.concatenate([getattr(b, f) for _, b in blocks])
                           for f in ("lengths", "indices", "offsets")))
    return merged, uris, which
