"""The ``validation:`` section of the config: the drift gate's thresholds.

Part of :mod:`core.config` (``ShardforgeConfig.validation``), kept apart so that file stays
one screenful per concept. Checked when the file is loaded: a threshold outside [0, 1], a
misspelt key or a per-feature entry naming no feature of the dataset specs is an error
that names its key (``validation.drift.features.topik: …``).

What the numbers mean (README, "Drift gate"; :mod:`pipelines.validate.drift`):

* **L-infinity** (``linf``), for value distributions (categorical, hashed, identity and
  crossed ids, token ids): the largest ``|p_new(v) - p_old(v)|`` over every value ``v``
  (each side normalized to frequencies). 0 is the same distribution, 1 disjoint ones.
* **Jensen–Shannon divergence** (``js``), for numbers (numeric and bucketized inputs, text
  token lengths, image byte lengths): over the baseline's ``js_bins`` quantile bins,
  ``JS = ½ KL(P‖M) + ½ KL(Q‖M)`` with ``M = (P + Q) / 2`` and base-2 logarithms, so 0 is
  the same histogram and 1 disjoint ones.

A check fails when its distance is *above* its threshold (1.0 never fails).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from core.errors import ConfigError

__all__ = ["DriftConfig", "DriftThresholds", "ValidationConfig", "check_drift_features"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DriftThresholds(_Section):
    """One feature's thresholds; None takes the default."""

    linf: float | None = Field(default=None, ge=0, le=1)  # its value distribution, if any
    js: float | None = Field(default=None, ge=0, le=1)  # its numbers or its lengths


class DriftConfig(_Section):
    """The drift gate that follows every encode (the stages ``drift_dataset``, ``drift_images``)."""

    # 0.1: a value gaining or losing 10 points of share. Sampling noise at 1,000 examples a
    # side is ~0.02 for a 25% category; a real shift (a new source, a broken join) is larger.
    default_linf: float = Field(default=0.1, ge=0, le=1)
    # 0.1 bits: the JS of two normals one standard deviation apart is ~0.15 (10 bins); the
    # noise of 1,000 vs 1,000 samples of one distribution is ~0.005.
    default_js: float = Field(default=0.1, ge=0, le=1)
    # Quantile bins of the baseline's histogram that both sides are counted into for JS.
    js_bins: int = Field(default=10, ge=2, le=1000)
    # Below this many examples on either side a comparison is reported, not gated: noise
    # alone moves the distances of a few dozen samples past any useful threshold.
    min_examples: int = Field(default=100, ge=1)
    # Also compare each other split of the new version with its first split (train vs eval).
    compare_splits: bool = True
    # feature name -> its own thresholds (a feature of the posts or of the image spec).
    features: dict[str, DriftThresholds] = Field(default_factory=dict)

    def thresholds(self, feature: str) -> tuple[float, float]:
        """``(linf, js)`` of ``feature``: its override, else the defaults."""
        own = self.features.get(feature, DriftThresholds())
        return (self.default_linf if own.linf is None else own.linf,
                self.default_js if own.js is None else own.js)


class ValidationConfig(_Section):
    drift: DriftConfig = Field(default_factory=DriftConfig)


def check_drift_features(cfg) -> None:
    """Every ``validation.drift.features`` entry must name a feature of a dataset spec.

    Args:
        cfg: the loaded :class:`~core.config.ShardforgeConfig`, its spec paths resolved.

    Raises:
        ConfigError: ``<file>: validation.drift.features.<name>: no feature …``.
    """
    names = cfg.validation.drift.features
    if not names:
        return
    from features.spec import load_spec

    specs = [cfg.feature_spec] + ([cfg.image_dataset.spec] if cfg.image_dataset else [])
    known = {feature for spec in specs for feature in load_spec(spec).features}
    for name in names:
        if name not in known:
            raise ConfigError(f"{cfg.source}: validation.drift.features.{name}: no feature "
                              f"{name!r} in {' or '.join(specs)}")
