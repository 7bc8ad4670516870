"""A config file's ``models:`` entries as typed model and training configs.

Each entry names a model ``kind`` of :data:`models.kinds.KINDS`; its ``model:`` and
``train:`` blocks are checked against that kind's config classes when the config file is
loaded (:func:`check_model_entries`, called by :func:`core.config.load_config`), so a
typo fails in well under two seconds, before any engine starts, with the key path named:
``conf.yaml: models.lm.train.lr: must be finite and >= 0, got -1``.

What the data decides is filled in from the config: the vocabulary size from the feature
spec's text feature and the end-of-document id (posts kinds), the number of classes from
``images.labels`` (image kinds); an lm with ``tokens_of`` gets its VQ model's codebook
size plus the reserved ids (:mod:`models.vq_tokens`' layout). ``models.kinds`` imports no torch, so neither does this.
"""

from __future__ import annotations

from typing import Any

from core.errors import ConfigError

# `cfg` below is a core.config.ShardforgeConfig; not imported, since core.config calls this.
ShardforgeConfig = Any

__all__ = ["check_model_entries", "model_configs", "model_context"]


def model_context(cfg: ShardforgeConfig) -> dict[str, Any]:
    """The values the data decides for every kind: vocab_size, eos_id, num_classes."""
    from features.spec import RESERVED_IDS, load_spec

    _, text = load_spec(cfg.resolve_path(cfg.feature_spec)).text_feature()
    return {"vocab_size": text.vocab_size, "eos_id": RESERVED_IDS["eos"],
            "num_classes": len(cfg.images.labels)}


def model_configs(cfg: ShardforgeConfig, name: str, context: dict[str, Any] | None = None):
    """``(model_config, train_config)`` of ``models.<name>``.

    Raises:
        ConfigError: no such entry, or a key or value of its blocks is wrong (path named).
    """
    from models.kinds import ConfigFieldError, build_configs

    if name not in cfg.models:
        raise ConfigError(f"{cfg.source}: models.{name}: no such model (configured: {sorted(cfg.models)})")
    entry = cfg.models[name]
    context = context if context is not None else model_context(cfg)
    if entry.tokens_of is not None:
        context = {**context, **_codes_context(cfg, entry.tokens_of, context)}
    try:
        return build_configs(entry.kind, preset=entry.preset, model=entry.model, train=entry.train,
                             context=context)
    except ConfigFieldError as exc:
        raise ConfigError(f"{cfg.source}: models.{name}.{exc}") from None


def _codes_context(cfg: ShardforgeConfig, vq: str, context: dict[str, Any]) -> dict[str, Any]:
    """vocab_size and eos_id of the code shards of VQ entry ``vq`` (models.vq_tokens' ids:
    the codes shifted past the reserved pad, bos and eos)."""
    from features.kinds import RESERVED_IDS  # models.vq_tokens imports torch; its ids are these

    vq_config, _ = model_configs(cfg, vq, context)
    return {"vocab_size": vq_config.codebook_size + len(RESERVED_IDS),
            "eos_id": RESERVED_IDS["eos"]}


def check_model_entries(cfg: ShardforgeConfig) -> None:
    """Build every entry's configs once (raises :class:`~core.config.ConfigError` naming the key).

    Also checks that an image kind has an ``image_dataset`` to train on.
    """
    from models.kinds import KINDS

    if not cfg.models:
        return
    context = model_context(cfg)
    for name, entry in cfg.models.items():
        if KINDS[entry.kind].dataset == "images" and cfg.image_dataset is None:
            raise ConfigError(f"{cfg.source}: models.{name}: a {entry.kind} model trains on the image "
                              "dataset, but the config has no image_dataset section")
        model_configs(cfg, name, context)
