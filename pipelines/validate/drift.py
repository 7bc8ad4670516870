"""The drift gate: a new dataset version against the previous one, and its eval split against train.

TensorFlow Data Validation's drift and skew comparators, on the statistics every encode
commits beside its manifest (``statistics.json``, :mod:`features.statistics`):

* **value distributions** (categorical, hashed, identity, crossed ids; token ids): the
  L-infinity distance ``max_v |p(v) - q(v)|`` of the two sides' value shares (TFDV's
  ``infinity_norm``), reported with the value ``v`` that attains it;
* **numbers** (numeric and bucketized inputs; token and byte lengths): the Jensen–Shannon
  divergence (TFDV's ``jensen_shannon_divergence``), base-2 so it lies in [0, 1]. Both
  versions' histograms share one fixed set of log-spaced buckets
  (:mod:`features.statistics_blocks`), so no rebinning is guessed: the baseline's buckets
  are grouped into ``js_bins`` bins of equal baseline mass (its quantiles; a bucket is never
  split, so a value holding many shares makes fewer bins), the other side is counted into
  the same bins, what lies below the baseline's minimum or above its maximum into one more
  bin each, and values that are not finite into a last one; then
  ``JS = ½ KL(P‖M) + ½ KL(Q‖M)`` with ``M = (P + Q) / 2``.

Which version is the baseline: of the committed versions of ``records/<dataset>/`` (a
``_SUCCESS`` folder), the latest before this one in natural order (``9 < 10``,
``2026-11-02 < 2026-11-03``). None yet: the version comparison passes with a "no baseline"
note. Splits are compared split by split; with ``compare_splits`` each other split of the new
version is also compared with its first (eval vs train). A comparison where either side has
fewer than ``min_examples`` examples is computed and reported but does not fail the gate.

The thresholds are the config's ``validation.drift`` (:mod:`core.validation_config`). The
outcome is written to ``reports/<run_id>/drift-<dataset>.json`` (the report shows it); a
crossed threshold then raises :class:`DriftFailed`, naming feature, distance, threshold and
versions.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from bisect import bisect_left
from dataclasses import asdict, dataclass, field

from features.statistics import STATISTICS_NAME, read_statistics

__all__ = ["DriftCheck", "DriftFailed", "DriftReport", "compare_statistics", "drift_report_uri",
           "jensen_shannon", "l_infinity", "previous_version", "run_drift_gate"]

_VERSION = re.compile(r"^v=(.+)$")  # core.lake.Lake.records: records/<dataset>/v=<version>
_METRIC = {"values": "linf", "numeric": "js", "lengths": "js"}
_NAMES = {"linf": "L-infinity", "js": "Jensen-Shannon"}


@dataclass(frozen=True)
class DriftCheck:
    """One distance between two sides of one feature.

    Attributes:
        comparison: what was compared (``"v=2 vs v=1"``, ``"eval vs train (v=2)"``).
        split: the split both sides come from (the compared split for split skew).
        feature, block: the feature and which of its statistics (values, numeric, lengths).
        metric: ``linf`` or ``js``.
        distance, threshold: the distance, and the threshold it may not exceed.
        gated: False when a side has fewer than ``min_examples`` examples (reported only).
        at: for ``linf``, the value whose share moved most.
    """

    comparison: str
    split: str
    feature: str
    block: str
    metric: str
    distance: float
    threshold: float
    gated: bool = True
    at: str | None = None

    @property
    def failed(self) -> bool:
        return self.gated and self.distance > self.threshold

    def describe(self) -> str:
        what = self.feature if self.block != "lengths" else f"{self.feature} (lengths)"
        at = f" at value {self.at!r}" if self.at is not None else ""
        return (f"feature {what!r}: {_NAMES[self.metric]} {self.distance:.4f} > threshold "
                f"{self.threshold:g}{at} ({self.comparison}, split {self.split})")


@dataclass
class DriftReport:
    """The gate's outcome for one dataset version."""

    dataset: str
    version: str
    baseline: str | None  # the previous committed version, None for the first
    checks: list[DriftCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    uri: str | None = None  # where the report was written

    @property
    def failures(self) -> list[DriftCheck]:
        return sorted((c for c in self.checks if c.failed),
                      key=lambda c: (-(c.distance - c.threshold), c.feature, c.split))

    def summary(self) -> str:
        against = f"v={self.baseline}" if self.baseline else "no baseline"
        status = "FAILED" if self.failures else "passed"
        return (f"drift {self.dataset} v={self.version} vs {against}: {status} "
                f"({len(self.checks) - len(self.failures)}/{len(self.checks)} checks)")

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "version": self.version, "baseline": self.baseline,
                "passed": not self.failures, "summary": self.summary(), "notes": self.notes,
                "checks": [{**asdict(c), "failed": c.failed} for c in self.checks]}


class DriftFailed(RuntimeError):
    """A threshold was crossed; the message names feature, distance, threshold and versions."""

    def __init__(self, report: DriftReport) -> None:
        self.report = report
        failures = report.failures
        more = f"; {len(failures) - 1} more check(s) failed" if len(failures) > 1 else ""
        where = f"; details: {report.uri}" if report.uri else ""
        super().__init__(f"drift gate {report.dataset} v={report.version}: "
                         f"{failures[0].describe()}{more}{where}")


def l_infinity(a: list, b: list) -> tuple[float, str | None]:
    """``(max_v |p(v) - q(v)|, v)`` of two ``[[value, count], …]`` lists (shares, not counts)."""
    total_a, total_b = sum(n for _, n in a), sum(n for _, n in b)
    if not total_a or not total_b:
        return (0.0 if total_a == total_b else 1.0), None
    p, q = dict(a), dict(b)
    best, at = 0.0, None
    for value in sorted(set(p) | set(q)):
        gap = abs(p.get(value, 0) / total_a - q.get(value, 0) / total_b)
        if gap > best:
            best, at = gap, value
    return best, at


def _cells(histogram: dict) -> dict[tuple, int]:
    """The log buckets of a statistics histogram, keyed so that keys sort as values do."""
    cells = {(-1, -k): n for k, n in histogram["negative"]}
    if histogram["zeros"]:
        cells[(0, 0)] = histogram["zeros"]
    cells.update({(1, k): n for k, n in histogram["positive"]})
    return cells


def jensen_shannon(base: dict, other: dict, bins: int) -> float:
    """JS divergence (bits) of two ``numeric`` statistics over the baseline's quantile bins.

    Args:
        base, other: ``numeric`` (or ``lengths``) entries of a statistics file: their
            ``histogram`` and ``non_finite`` counts.
        bins: how many bins of equal baseline mass (fewer when a bucket holds more).
    """
    p_cells, q_cells = _cells(base["histogram"]), _cells(other["histogram"])
    order = sorted(p_cells)
    if not order:  # no finite baseline value: compare the non-finite shares alone
        order = [(0, 0)]
    total = sum(p_cells.values())
    # A cut (s, k - 0.5) lies between every bucket key below the baseline's first and it.
    cuts, seen, j = [(order[0][0], order[0][1] - 0.5)], 0, 1
    for cell in order:
        seen += p_cells.get(cell, 0)
        while j < bins and seen * bins >= j * total:
            if cuts[-1] != cell:
                cuts.append(cell)
            j += 1
    if cuts[-1] != order[-1]:
        cuts.append(order[-1])  # above the baseline's maximum: a bin of its own
    p, q = [0] * (len(cuts) + 2), [0] * (len(cuts) + 2)
    for counts, cells in ((p, p_cells), (q, q_cells)):
        for cell, n in cells.items():
            counts[bisect_left(cuts, cell)] += n
    p[-1], q[-1] = base["non_finite"], other["non_finite"]
    sum_p, sum_q = sum(p), sum(q)
    if not sum_p or not sum_q:
        return 0.0 if sum_p == sum_q else 1.0
    shares = [(a / sum_p, b / sum_q) for a, b in zip(p, q, strict=True)]
    divergence = 0.0
    for a, b in shares:
        m = (a + b) / 2
        divergence += (a * math.log2(a / m) if a else 0.0) + (b * math.log2(b / m) if b else 0.0)
    return min(max(divergence / 2, 0.0), 1.0)


def compare_statistics(base: dict, other: dict, drift, *, comparison: str, split: str,
                       base_split: str | None = None) -> tuple[list[DriftCheck], list[str]]:
    """Every check of one split of ``other`` against ``base`` (statistics documents).

    Args:
        drift: the :class:`~core.validation_config.DriftConfig`.
        base_split: the split of ``base`` to compare with (default: ``split``).

    Returns:
        ``(checks, notes)``: notes say what could not be compared and why.
    """
    a, b = base["splits"][base_split or split], other["splits"][split]
    gated = min(a["examples"], b["examples"]) >= drift.min_examples
    notes = [] if gated else [
        f"{comparison}, split {split}: {min(a['examples'], b['examples'])} examples < min_examples "
        f"{drift.min_examples}: reported, not gated"]
    checks = []
    for name in sorted(set(a["features"]) | set(b["features"])):
        if name not in a["features"] or name not in b["features"]:
            side = "baseline" if name not in a["features"] else "new side"
            notes.append(f"{comparison}, split {split}: feature {name!r} is not in the {side}")
            continue
        linf, js = drift.thresholds(name)
        fa, fb = a["features"][name], b["features"][name]
        for block in ("values", "numeric", "lengths"):
            if block not in fa or block not in fb:
                continue
            if _METRIC[block] == "linf":
                distance, at = l_infinity(fa[block]["counts"], fb[block]["counts"])
                threshold = linf
            else:
                distance, at = jensen_shannon(fa[block], fb[block], drift.js_bins), None
                threshold = js
            checks.append(DriftCheck(comparison, split, name, block, _METRIC[block],
                                     round(distance, 6), threshold, gated, at))
    return checks, notes


def _natural(version: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in re.split(r"(\d+)", version) if p)


def previous_version(lake, dataset: str, version: str) -> str | None:
    """The latest committed version of ``dataset`` before ``version`` (natural order), or None."""
    folder = posixpath.dirname(lake.records(dataset, version))
    path = lake.fs_path(folder)
    if not lake.fs.exists(path):
        return None
    earlier = []
    for entry in lake.fs.ls(path, detail=False):
        match = _VERSION.match(entry.rstrip("/").rsplit("/", 1)[-1])
        if match and _natural(match.group(1)) < _natural(version):
            committed = lake.fs_path(f"{lake.records(dataset, match.group(1))}/_SUCCESS")
            if lake.fs.exists(committed):
                earlier.append(match.group(1))
    return max(earlier, key=_natural) if earlier else None


def _statistics(lake, dataset: str, version: str) -> dict | None:
    uri = f"{lake.records(dataset, version)}/{STATISTICS_NAME}"
    path = lake.fs_path(uri)
    if not lake.fs.exists(path):
        return None
    with lake.fs.open(path, "rb") as handle:
        return read_statistics(handle.read(), source=uri)


def drift_report_uri(lake, run_id: str, dataset: str) -> str:
    """``reports/<run_id>/drift-<dataset>.json``."""
    return f"{lake.reports(run_id)}/drift-{dataset}.json"


def run_drift_gate(cfg, lake, *, dataset: str, run_id: str, progress=None) -> DriftReport:
    """Gate the configured version of ``dataset`` (``posts`` or ``images``); see the module doc.

    Raises:
        DriftFailed: a gated check crossed its threshold (after the report was written).
        FileNotFoundError: the version has no ``statistics.json`` (not encoded, or by a
            shardforge before statistics).
        ValueError: ``dataset`` is neither ``posts`` nor ``images`` (or images without an
            ``image_dataset`` section).
    """
    entry = {"posts": cfg.dataset, "images": cfg.image_dataset}.get(dataset)
    if entry is None:
        raise ValueError(f"drift gate: no dataset {dataset!r} in the config "
                         "(posts, or images with an image_dataset section)")
    drift = cfg.validation.drift
    current = _statistics(lake, entry.name, entry.version)
    if current is None:
        raise FileNotFoundError(f"drift gate {entry.name} v={entry.version}: no "
                                f"{lake.records(entry.name, entry.version)}/{STATISTICS_NAME}; "
                                "encode the dataset first")
    baseline = previous_version(lake, entry.name, entry.version)
    report = DriftReport(entry.name, entry.version, baseline)
    if progress is not None:
        progress(f"drift: {entry.name} v={entry.version} against "
                 f"{f'v={baseline}' if baseline else 'no baseline'} and across its splits")
    previous = _statistics(lake, entry.name, baseline) if baseline else None
    if baseline is None:
        report.notes.append(f"v={entry.version} is the first committed version: no baseline")
    elif previous is None:
        report.notes.append(f"v={baseline} has no {STATISTICS_NAME} (encoded before statistics): "
                            "no baseline")
    else:
        for split in entry.splits:
            if split not in previous["splits"]:
                report.notes.append(f"split {split} is not in v={baseline}: not compared")
            elif split in current["splits"]:
                checks, notes = compare_statistics(previous, current, drift, split=split,
                                                   comparison=f"v={entry.version} vs v={baseline}")
                report.checks += checks
                report.notes += notes
    splits = [s for s in entry.splits if s in current["splits"]]
    if drift.compare_splits:
        for split in splits[1:]:
            checks, notes = compare_statistics(current, current, drift, split=split,
                                               base_split=splits[0],
                                               comparison=f"{split} vs {splits[0]} (v={entry.version})")
            report.checks += checks
            report.notes += notes
    report.uri = drift_report_uri(lake, run_id, entry.name)
    path = lake.fs_path(report.uri)
    lake.fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with lake.fs.open(path, "w") as handle:
        json.dump(report.to_dict(), handle, indent=1, sort_keys=True, ensure_ascii=False)
    if report.failures:
        raise DriftFailed(report)
    return report
