"""The mergeable pieces per-feature statistics are made of: numbers and value counts.

Each block is plain data whose merge is *exact* and order-independent, so the statistics of
a dataset do not depend on how an engine cut it into batches, bundles or partitions:

- :class:`NumericBlock`: count, min, max, the exact sums ``Σx`` and ``Σx²`` (integers and
  dyadic fractions, never rounded floats, so mean and std come out bit for bit the same
  whatever the merge order), and a histogram over fixed log-spaced buckets. Bucket ``i``
  holds the values ``x`` with ``ceil(log_gamma |x|) = i`` (by sign; zeros apart), with
  ``gamma = (1 + a) / (1 - a)`` and ``a`` = :data:`RELATIVE_ACCURACY`: the DDSketch store
  that :class:`features.sketch.QuantileSketch` uses, without its exact regime. The buckets
  are the same for every dataset, so two versions' histograms line up without rebinning;
  quantiles read from them are within relative error ``a``.
- :class:`ValueCounts`: exact counts of integer ids (category ids, token ids), dense while
  the ids are small, sparse beyond.

Both turn into JSON-ready dicts (:meth:`to_data`) and back (:meth:`from_data`), checked.
"""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import numpy as np

from features.sketch import QuantileSketch

__all__ = ["QUANTILES", "RELATIVE_ACCURACY", "NumericBlock", "ValueCounts", "exact_sums",
           "field"]

RELATIVE_ACCURACY = 0.01  # ~115 buckets per decade: quantiles within 1%
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_LOG_GAMMA = math.log((1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY))
_DENSE_LIMIT = 1 << 20  # ids below this are counted with bincount, others in a Counter
_LIMB, _MASK = 18, (1 << 18) - 1
_CHUNK = 1 << 16  # values per bincount: sums of products < 2**36 stay exact in float64
_SMALL_INT = float(1 << 31)  # integral values below this take the int64 path of exact_sums
_SMALL = 1 << 16
# The bucket of every integer in [1, 2**16), computed as add() computes any value's, plus one
# (so 0 can stand for zero): integer columns look their buckets up.
_SMALL_BUCKETS = np.concatenate([[0], np.ceil(np.log(np.arange(1, _SMALL, dtype=np.float64))
                                               / _LOG_GAMMA).astype(np.int64) + 1])


def field(obj, key: str, kind, where: str):
    """``obj[key]``, which must be a ``kind``; ValueError naming ``where.key`` otherwise."""
    if not isinstance(obj, dict) or key not in obj:
        raise ValueError(f"{where}.{key}: missing")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, "
                         f"got {type(value).__name__}")
    return value


def _pairs(obj, key: str, where: str, value_kind=int) -> list[tuple]:
    out = []
    for i, pair in enumerate(field(obj, key, list, where)):
        if (not isinstance(pair, list) or len(pair) != 2 or isinstance(pair[0], bool)
                or not isinstance(pair[0], value_kind) or isinstance(pair[1], bool)
                or not isinstance(pair[1], int) or pair[1] < 0):
            raise ValueError(f"{where}.{key}[{i}]: expected a [value, count] pair")
        out.append((pair[0], pair[1]))
    return out


def _group_sums(groups: int, inverse: np.ndarray, terms: list[np.ndarray]) -> list[list[int]]:
    """Per group, the exact integer sum of each term (|term| < 2**37), chunk by chunk."""
    sums = [[0] * groups for _ in terms]
    for start in range(0, len(inverse), _CHUNK):
        part = inverse[start:start + _CHUNK]
        for out, term in zip(sums, terms, strict=True):
            got = np.bincount(part, weights=term[start:start + _CHUNK], minlength=groups)
            for g in np.flatnonzero(got).tolist():
                out[g] += int(got[g])
    return sums


def exact_sums(values: np.ndarray) -> tuple[Fraction, Fraction]:
    """``(Σx, Σx²)`` of finite float64 ``values``, exactly, as fractions.

    Each value is ``m * 2**(e - 53)`` with an integer ``|m| < 2**53`` (``numpy.frexp``);
    ``m`` is cut into three 18-bit limbs, so every limb and every product of two limbs is an
    integer below ``2**36`` that float64 ``bincount`` sums without rounding, per exponent.
    Integral values (lengths, counts) take a shortcut: their int64 sums are exact already.
    """
    if not len(values):
        return Fraction(0), Fraction(0)
    values = np.asarray(values, np.float64)
    biggest = float(np.abs(values).max())
    if biggest < _SMALL_INT and (values == np.rint(values)).all():  # integers: int64 is exact
        ints = values.astype(np.int64)
        if biggest * biggest * len(ints) < 2.0 ** 62:
            return Fraction(int(ints.sum())), Fraction(int((ints * ints).sum()))
    mantissa, exponent = np.frexp(values)
    m = (mantissa * float(1 << 53)).astype(np.int64)
    keys, inverse = np.unique(exponent, return_inverse=True)
    sign, a = np.sign(m).astype(np.float64), np.abs(m)
    hi, mid, lo = (a >> 2 * _LIMB).astype(np.float64), ((a >> _LIMB) & _MASK).astype(
        np.float64), (a & _MASK).astype(np.float64)
    s_hi, s_mid, s_lo, q0, q1, q2, q3, q4 = _group_sums(len(keys), inverse, [
        sign * hi, sign * mid, sign * lo, hi * hi, 2 * hi * mid, 2 * hi * lo + mid * mid,
        2 * mid * lo, lo * lo])
    total = squares = Fraction(0)
    for g, e in enumerate(keys.tolist()):
        linear = (s_hi[g] << 2 * _LIMB) + (s_mid[g] << _LIMB) + s_lo[g]
        square = (q0[g] << 4 * _LIMB) + (q1[g] << 3 * _LIMB) + (q2[g] << 2 * _LIMB) + (
            q3[g] << _LIMB) + q4[g]
        total += linear * Fraction(2) ** (e - 53)
        squares += square * Fraction(2) ** (2 * (e - 53))
    return total, squares


def _frac(obj, key: str, where: str) -> Fraction:
    pair = field(obj, key, list, where)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair) \
            or pair[1] <= 0:
        raise ValueError(f"{where}.{key}: expected [numerator, denominator > 0]")
    return Fraction(pair[0], pair[1])


class NumericBlock:
    """Count, min, max, exact ``Σx``/``Σx²`` and a log-bucket histogram of numbers."""

    def __init__(self) -> None:
        self.count = 0
        self.non_finite = 0  # NaN and infinities: counted, kept out of everything else
        self.min, self.max = math.inf, -math.inf
        self.total = self.squares = Fraction(0)
        self.zeros = 0
        self.positive: Counter = Counter()
        self.negative: Counter = Counter()

    def add(self, values: np.ndarray) -> NumericBlock:
        """Count ``values`` (any numeric dtype); returns self."""
        values = np.asarray(values)
        if values.dtype.kind in "iu" and len(values) and values.min() >= 0 and values.max() < _SMALL:
            return self._add_small_ints(values.astype(np.int64, copy=False))
        values = values.astype(np.float64, copy=False)
        finite = np.isfinite(values)
        if not finite.all():
            self.non_finite += int((~finite).sum())
            values = values[finite]
        if not len(values):
            return self
        self.count += len(values)
        self.min, self.max = min(self.min, float(values.min())), max(self.max, float(values.max()))
        total, squares = exact_sums(values)
        self.total += total
        self.squares += squares
        magnitude = np.abs(values)
        zero = magnitude < np.finfo(np.float64).tiny  # as QuantileSketch counts zeros
        self.zeros += int(zero.sum())
        index = np.ceil(np.log(np.where(zero, 1.0, magnitude)) / _LOG_GAMMA).astype(np.int64)
        for store, side in ((self.positive, (values > 0) & ~zero), (self.negative, (values < 0) & ~zero)):
            keys = index[side]
            if len(keys):
                low = int(keys.min())
                counts = np.bincount(keys - low)
                hit = np.flatnonzero(counts)
                store.update(dict(zip((hit + low).tolist(), counts[hit].tolist(), strict=True)))
        return self

    def _add_small_ints(self, ints: np.ndarray) -> NumericBlock:
        """:meth:`add` for integers in ``[0, 2**16)`` (lengths, counts): the same block,
        with the buckets looked up (:data:`_SMALL_BUCKETS`) instead of taking logarithms."""
        self.count += len(ints)
        self.min, self.max = min(self.min, float(ints.min())), max(self.max, float(ints.max()))
        self.total += int(ints.sum())
        self.squares += int((ints * ints).sum())
        counts = np.bincount(_SMALL_BUCKETS[ints])
        self.zeros += int(counts[0])
        hit = np.flatnonzero(counts[1:]) + 1
        self.positive.update(dict(zip((hit - 1).tolist(), counts[hit].tolist(), strict=True)))
        return self

    def merge(self, other: NumericBlock) -> NumericBlock:
        """Fold ``other`` in (exact: any order gives the same block); returns self."""
        self.count += other.count
        self.non_finite += other.non_finite
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        self.total += other.total
        self.squares += other.squares
        self.zeros += other.zeros
        self.positive.update(other.positive)
        self.negative.update(other.negative)
        return self

    def to_data(self) -> dict:
        return {"count": self.count, "non_finite": self.non_finite,
                "min": self.min if self.count else None, "max": self.max if self.count else None,
                "sum": [self.total.numerator, self.total.denominator],
                "sum_squares": [self.squares.numerator, self.squares.denominator],
                "zeros": self.zeros, "positive": [[k, n] for k, n in sorted(self.positive.items())],
                "negative": [[k, n] for k, n in sorted(self.negative.items())]}

    @classmethod
    def from_data(cls, data, where: str) -> NumericBlock:
        block = cls()
        block.count = field(data, "count", int, where)
        block.non_finite = field(data, "non_finite", int, where)
        if block.count:
            block.min = float(field(data, "min", (int, float), where))
            block.max = float(field(data, "max", (int, float), where))
        block.total, block.squares = _frac(data, "sum", where), _frac(data, "sum_squares", where)
        block.zeros = field(data, "zeros", int, where)
        block.positive = Counter(dict(_pairs(data, "positive", where)))
        block.negative = Counter(dict(_pairs(data, "negative", where)))
        if block.zeros + sum(block.positive.values()) + sum(block.negative.values()) != block.count:
            raise ValueError(f"{where}: the histogram does not hold count={block.count} values")
        return block

    def summary(self) -> dict:
        """The statistics: count, min, max, mean, std (population), quantiles and histogram."""
        out = {"count": self.count, "non_finite": self.non_finite, "zeros": self.zeros,
               "min": None, "max": None, "mean": None, "std": None, "quantiles": [],
               "histogram": {"zeros": self.zeros,
                             "positive": [[k, n] for k, n in sorted(self.positive.items())],
                             "negative": [[k, n] for k, n in sorted(self.negative.items())]}}
        if self.count:
            mean = self.total / self.count
            variance = max(self.squares / self.count - mean * mean, Fraction(0))
            sketch = QuantileSketch(RELATIVE_ACCURACY, max_exact=0)
            sketch.exact, sketch.count, sketch.zeros = None, self.count, self.zeros
            sketch.min, sketch.max = self.min, self.max
            sketch.positive, sketch.negative = Counter(self.positive), Counter(self.negative)
            values = sketch.quantiles(list(QUANTILES)).tolist()
            out.update(min=self.min, max=self.max, mean=float(mean),
                       std=math.sqrt(float(variance)),
                       quantiles=[[q, v] for q, v in zip(QUANTILES, values, strict=True)])
        return out


class ValueCounts:
    """Exact counts of integer ids: a dense array for ids in ``[0, 2**20)``, a Counter else."""

    def __init__(self) -> None:
        self.dense = np.zeros(0, np.int64)
        self.sparse: Counter = Counter()

    def add_counts(self, counts: np.ndarray) -> ValueCounts:
        """Add ``counts[i]`` to id ``i`` (a bincount); returns self."""
        if len(counts) > len(self.dense):
            self.dense = np.concatenate([self.dense, np.zeros(len(counts) - len(self.dense), np.int64)])
        self.dense[:len(counts)] += counts.astype(np.int64, copy=False)
        return self

    def add(self, ids: np.ndarray) -> ValueCounts:
        """Count each id of ``ids`` (integers); returns self."""
        ids = np.asarray(ids, np.int64)
        if not len(ids):
            return self
        small = (ids >= 0) & (ids < _DENSE_LIMIT)
        if small.all():
            return self.add_counts(np.bincount(ids))
        if small.any():
            self.add_counts(np.bincount(ids[small]))
        keys, counts = np.unique(ids[~small], return_counts=True)
        self.sparse.update(dict(zip(keys.tolist(), counts.tolist(), strict=True)))
        return self

    def merge(self, other: ValueCounts) -> ValueCounts:
        self.add_counts(other.dense)
        self.sparse.update(other.sparse)
        return self

    def items(self) -> list[tuple[int, int]]:
        """``(id, count)`` for every id seen, ascending."""
        hit = np.flatnonzero(self.dense)
        return sorted([*zip(hit.tolist(), self.dense[hit].tolist(), strict=True),
                       *((k, n) for k, n in self.sparse.items() if n)])

    def to_data(self) -> list[list[int]]:
        return [[k, n] for k, n in self.items()]

    @classmethod
    def from_data(cls, pairs, where: str) -> ValueCounts:
        out = cls()
        items = _pairs({"values": pairs}, "values", where)
        if len({k for k, _ in items}) != len(items):
            raise ValueError(f"{where}: an id is counted twice")
        small = [(k, n) for k, n in items if 0 <= k < _DENSE_LIMIT]
        if small:
            out.dense = np.zeros(max(k for k, _ in small) + 1, np.int64)
            out.dense[[k for k, _ in small]] = [n for _, n in small]
        out.sparse = Counter({k: n for k, n in items if not 0 <= k < _DENSE_LIMIT})
        return out
