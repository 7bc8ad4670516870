"""Per-split, per-feature statistics of a dataset, as a combiner with an explicit accumulator.

What TensorFlow Data Validation's ``DatasetFeatureStatistics`` holds, computed on the rows an
encode writes (after the transform, quarantined rows left out), so every dataset version
carries its own profile (``statistics.json`` beside its manifest):

==============================  =================================================  ==========
feature kind                    statistics                                         drift
==============================  =================================================  ==========
numeric, bucketized             ``numeric`` of the input value (before scaling):   JS
                                count, min, max, mean, std, quantiles, histogram
categorical, hashed, identity,  ``values``: count of every id (categorical ids     L∞
crossed                         labelled with their vocabulary entry), distinct
text                            ``values`` (token ids) + ``lengths`` (tokens)      L∞, JS
image                           ``lengths`` (bytes), missing (optional images)     JS
numeric_list                    ``numeric`` of the values + ``lengths``            JS
==============================  =================================================  ==========

Every feature also has ``present`` and ``missing`` rows. The contract is the analyzers' one
(:mod:`features.analyzers`), so an engine maps it onto Beam's ``CombineFn`` or Spark's
partition-then-driver merge::

    stats = SpecStatistics(spec, ["train", "eval"])
    acc = stats.add_batch(stats.create(), rows, encoded, split_of)   # per batch, anywhere
    acc = stats.merge([acc1, acc2, ...])                              # exact, any order
    doc = stats.extract(acc, artifacts)                               # the statistics file

Accumulators travel as JSON (:meth:`SpecStatistics.to_json`), never as pickles, and are
checked field by field when read back. Every merge is exact (:mod:`features.statistics_blocks`),
so the same rows give the same file bit for bit, whichever engine or batching made it; only
the quantiles are approximate (within 1%, read from the fixed log-bucket histogram).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.artifacts import Artifacts, resolve_artifacts
from features.kinds import (
    BucketizedFeature,
    CategoricalFeature,
    CrossedFeature,
    HashedFeature,
    IdentityFeature,
    ImageFeature,
    NumericFeature,
    TextFeature,
)
from features.spec import FeatureSpec
from features.statistics_blocks import RELATIVE_ACCURACY, NumericBlock, ValueCounts, field

__all__ = ["ACCUMULATOR_FORMAT", "STATISTICS_FORMAT", "STATISTICS_NAME", "SpecStatistics",
           "read_statistics", "statistics_json"]

ACCUMULATOR_FORMAT = "shardforge.features.statistics-accumulator/1"
STATISTICS_FORMAT = "shardforge.features.statistics/1"
STATISTICS_NAME = "statistics.json"  # beside manifest.json in the dataset version folder
_IDS = (CategoricalFeature, HashedFeature, IdentityFeature, CrossedFeature)


def _blocks(feature) -> tuple[str, ...]:
    """Which blocks a feature's statistics have (see the module docstring)."""
    if isinstance(feature, NumericFeature | BucketizedFeature):
        return ("numeric",)
    if isinstance(feature, _IDS):
        return ("values",)
    if isinstance(feature, TextFeature):
        return ("values", "lengths")
    if isinstance(feature, ImageFeature):
        return ("lengths",)
    if getattr(feature, "kind", None) == "numeric_list":
        return ("numeric", "lengths")
    return ()  # a kind this module does not know yet: present and missing only


@functools.cache
def _kernel():
    """:func:`features.statistics_kernels.count_list_values`, or None without numba."""
    try:
        from features.statistics_kernels import count_list_values
    except ModuleNotFoundError as err:
        if err.name not in ("numba", "llvmlite"):
            raise
        return None
    return count_list_values


def _numbers(column: pa.Array) -> np.ndarray:
    """An input column of numbers (or text of numbers, as the encoders accept): int64 for
    integers, float64 for the rest."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.utf8_trim_whitespace(column)
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)


class _Feature:
    """The accumulator of one feature in one split."""

    def __init__(self, blocks: tuple[str, ...]) -> None:
        self.present = self.missing = 0
        self.values = ValueCounts() if "values" in blocks else None
        self.numeric = NumericBlock() if "numeric" in blocks else None
        self.lengths = NumericBlock() if "lengths" in blocks else None

    def merge(self, other: _Feature) -> None:
        self.present += other.present
        self.missing += other.missing
        for name in ("values", "numeric", "lengths"):
            if getattr(self, name) is not None:
                getattr(self, name).merge(getattr(other, name))


class SpecStatistics:
    """The statistics combiner of a spec over named splits.

    The accumulator is ``{split: {"examples": int, "features": {name: _Feature}}}`` for
    every split, in ``splits`` order.

    Args:
        spec: the feature spec (its encoded features get statistics).
        splits: the split names, in the order their indices in ``split_of`` refer to.
    """

    def __init__(self, spec: FeatureSpec, splits: Sequence[str]) -> None:
        self.spec, self.splits = spec, list(splits)
        self.plans = {name: _blocks(f) for name, f in spec.encoded().items()}
        # Token ids lie in [0, vocab_size): counted per split in one pass (a numba kernel).
        self.widths = {name: f.vocab_size for name, f in spec.encoded().items()
                       if isinstance(f, TextFeature)}

    def create(self) -> dict:
        return {s: {"examples": 0, "features": {n: _Feature(b) for n, b in self.plans.items()}}
                for s in self.splits}

    def add_batch(self, acc: dict, rows: pa.RecordBatch, encoded: pa.RecordBatch,
                  split_of: np.ndarray) -> dict:
        """Count one batch: ``rows`` (input rows) and ``encoded`` (their transform, same order).

        Args:
            split_of: each row's split, an index into ``splits``.

        Raises:
            ValueError: lengths that do not match, or a split index out of range.
        """
        split_of = np.asarray(split_of, np.int64)
        if not rows.num_rows == encoded.num_rows == len(split_of):
            raise ValueError(f"statistics: {rows.num_rows} input rows, {encoded.num_rows} encoded "
                             f"rows and {len(split_of)} split indices must be as many")
        if len(split_of) and (split_of.min() < 0 or split_of.max() >= len(self.splits)):
            raise ValueError(f"statistics: split index outside [0, {len(self.splits)})")
        sizes = np.bincount(split_of, minlength=len(self.splits))
        present = np.flatnonzero(sizes).tolist()
        if not present:
            return acc
        masks = {s: split_of == s for s in present}
        for s in present:
            acc[self.splits[s]]["examples"] += int(sizes[s])
        for name, blocks in self.plans.items():
            column = encoded.column(name)
            valid = np.asarray(column.is_valid()) if column.null_count else None
            parts = {s: acc[self.splits[s]]["features"][name] for s in present}
            for s, part in parts.items():
                kept = int(masks[s].sum() if valid is None else (masks[s] & valid).sum())
                part.present += kept
                part.missing += int(sizes[s]) - kept
            if "numeric" in blocks and "lengths" not in blocks:  # one number per row, as input
                values = _numbers(rows.column(self.spec.features[name].source))
                for s, part in parts.items():
                    part.numeric.add(values[masks[s]])
            if "values" in blocks and "lengths" not in blocks:  # one id per row
                ids = column.to_numpy(zero_copy_only=False)
                for s, part in parts.items():
                    part.values.add(ids[masks[s]])
            if "lengths" in blocks:
                self._add_lists(column, valid, masks, parts, blocks,
                                (split_of, self.widths.get(name)))
        return acc

    def _add_lists(self, column: pa.Array, valid, masks: dict, parts: dict, blocks,
                   widths: tuple) -> None:
        """Lengths (and the values) of a list or binary column, per split."""
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            lengths = pc.binary_length(column)
        else:
            lengths = pc.list_value_length(column)
        lengths = lengths.fill_null(0).to_numpy(zero_copy_only=False)
        for s, part in parts.items():
            part.lengths.add(lengths[masks[s] if valid is None else masks[s] & valid])
        counts = self._count_per_split(column, *widths) if "values" in blocks else None
        if counts is not None:
            for s, part in parts.items():
                part.values.add_counts(counts[s])
        elif "values" in blocks:  # numpy: one bincount, the biggest split by difference
            total = np.bincount(column.flatten().to_numpy(zero_copy_only=False))
            biggest = max(parts, key=lambda s: int(masks[s].sum()))
            for s, part in parts.items():
                if s != biggest:
                    ids = column.filter(pa.array(masks[s])).flatten()
                    counts = np.bincount(ids.to_numpy(zero_copy_only=False), minlength=len(total))
                    part.values.add_counts(counts)
                    total = total - counts
            parts[biggest].values.add_counts(total)
        elif "numeric" in blocks:
            flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
            row_of = np.repeat(np.arange(len(lengths)), lengths)
            for s, part in parts.items():
                part.numeric.add(flat[masks[s][row_of]])

    def _count_per_split(self, column: pa.Array, split_of: np.ndarray,
                         width: int | None) -> np.ndarray | None:
        """``(splits, width)`` counts of a list column's values, or None (no numba, no width,
        or a value outside ``[0, width)``): then the caller counts with numpy."""
        kernel = _kernel()
        if kernel is None or width is None or column.null_count:
            return None
        counts = np.zeros((len(self.splits), width), np.int64)
        values = column.values.to_numpy(zero_copy_only=False)
        if not kernel(values, column.offsets.to_numpy(), split_of, counts):
            return None
        return counts

    def merge(self, accs: Iterable[dict]) -> dict:
        """One accumulator holding all of ``accs`` (exact; any grouping or order)."""
        out = self.create()
        for acc in accs:
            for split, part in acc.items():
                out[split]["examples"] += part["examples"]
                for name, feature in part["features"].items():
                    out[split]["features"][name].merge(feature)
        return out

    def to_json(self, acc: dict) -> bytes:
        """The accumulator as JSON bytes (what workers send; never a pickle)."""
        splits = {}
        for split, part in acc.items():
            features = {}
            for name, f in part["features"].items():
                features[name] = {"present": f.present, "missing": f.missing, **{
                    k: getattr(f, k).to_data() for k in ("values", "numeric", "lengths")
                    if getattr(f, k) is not None}}
            splits[split] = {"examples": part["examples"], "features": features}
        return json.dumps({"format": ACCUMULATOR_FORMAT, "splits": splits},
                          sort_keys=True, separators=(",", ":")).encode("utf-8")

    def from_json(self, data: bytes, *, source: str = "statistics accumulator") -> dict:
        """What :meth:`to_json` wrote, checked against this spec and these splits.

        Raises:
            ValueError: not this format, or a split, feature or field that does not fit;
                the message names ``source`` and the field.
        """
        doc = _parse(data, source, ACCUMULATOR_FORMAT)
        splits = field(doc, "splits", dict, source)
        if sorted(splits) != sorted(self.splits):
            raise ValueError(f"{source}: splits {sorted(splits)}, expected {self.splits}")
        acc = self.create()
        for split in self.splits:
            where = f"{source}: splits.{split}"
            part = field(splits, split, dict, f"{source}: splits")
            acc[split]["examples"] = field(part, "examples", int, where)
            features = field(part, "features", dict, where)
            if sorted(features) != sorted(self.plans):
                raise ValueError(f"{where}.features: {sorted(features)}, expected "
                                 f"{sorted(self.plans)}")
            for name, blocks in self.plans.items():
                data_f, f = features[name], acc[split]["features"][name]
                at = f"{where}.features.{name}"
                f.present, f.missing = field(data_f, "present", int, at), field(data_f, "missing", int, at)
                for block in ("values", "numeric", "lengths"):
                    if block in blocks:
                        kind = ValueCounts if block == "values" else NumericBlock
                        raw = field(data_f, block, list if block == "values" else dict, at)
                        setattr(f, block, kind.from_data(raw, f"{at}.{block}"))
                    elif block in data_f:
                        raise ValueError(f"{at}.{block}: not a block of this feature")
        return acc

    def extract(self, acc: dict, artifacts: Artifacts | None = None) -> dict:
        """The statistics document (JSON-ready; :func:`statistics_json` writes it).

        Args:
            artifacts: label categorical ids with their vocabulary entries (the spec's
                static vocabularies when None).
        """
        labels = {name: self._labeller(name, artifacts) for name, b in self.plans.items()
                  if "values" in b}
        splits = {}
        for split, part in acc.items():
            features = {}
            for name, f in part["features"].items():
                out = {"kind": self.spec.features[name].kind, "present": f.present,
                       "missing": f.missing}
                if f.values is not None:
                    counts: dict[str, int] = {}
                    for key, n in f.values.items():
                        label = labels[name](key)
                        counts[label] = counts.get(label, 0) + n
                    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                    out["values"] = {"distinct": len(ranked), "total": sum(counts.values()),
                                     "counts": [[k, n] for k, n in ranked]}
                for block in ("numeric", "lengths"):
                    if getattr(f, block) is not None:
                        out[block] = getattr(f, block).summary()
                features[name] = out
            splits[split] = {"examples": part["examples"], "features": features}
        return {"format": STATISTICS_FORMAT, "relative_accuracy": RELATIVE_ACCURACY,
                "splits": splits}

    def _labeller(self, name: str, artifacts: Artifacts | None):
        feature = self.spec.features[name]
        if not isinstance(feature, CategoricalFeature):
            return str
        vocab = resolve_artifacts(self.spec, artifacts).vocabularies[name]

        def label(i: int) -> str:
            if 0 <= i < len(vocab):
                return vocab[i]
            if len(vocab) <= i < len(vocab) + feature.num_oov_buckets:
                return f"<oov {i - len(vocab)}>"
            return f"<id {i}>"

        return label


def _parse(data: bytes, source: str, expected: str) -> dict:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{source}: not {expected} JSON (a pickle or another foreign file is "
                         "never loaded)") from None
    if not isinstance(doc, dict) or doc.get("format") != expected:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"{source}: format: expected {expected!r}, got {found!r}")
    return doc


def statistics_json(doc: dict) -> bytes:
    """Canonical bytes of a statistics document (sorted keys; the same doc, the same bytes)."""
    return (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def read_statistics(data: bytes, *, source: str = STATISTICS_NAME) -> dict:
    """A statistics document, its format and split/feature layout checked.

    Raises:
        ValueError: not a statistics file, or a split or feature entry of the wrong shape;
            the message names ``source`` and the field.
    """
    doc = _parse(data, source, STATISTICS_FORMAT)
    field(doc, "relative_accuracy", float, source)
    for split, part in field(doc, "splits", dict, source).items():
        where = f"{source}: splits.{split}"
        field(part, "examples", int, where)
        for name, feature in field(part, "features", dict, where).items():
            at = f"{where}.features.{name}"
            field(feature, "present", int, at)
            for block, kind in (("values", dict), ("numeric", dict), ("lengths", dict)):
                if block in feature:
                    field(feature, block, kind, at)
    return doc
