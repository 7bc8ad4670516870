"""The model kinds shardforge trains: a registry the orchestration calls, torch-free.

Importing this module (and the config modules it imports) loads no torch, so a config
file's ``models:`` entries are checked in well under two seconds, before any engine
starts. Training imports the trainer (torch) only when :func:`train_model` is called.

A :class:`ModelKind` declares what is particular to a kind: the dataset it reads, its
model config class and presets, its :class:`~models.train_config.TrainProfile` (training
defaults and the train fields of its own), which fields the data fills in, and where its
trainer task lives. Everything else — precision, compile, accumulation, checkpoints,
resume, DDP, logging, evaluation — is the one loop of :mod:`models.trainer`.

Example::

    model_cfg, train_cfg = build_configs("lm", preset="tiny", model={"n_layer": 4},
                                         train={"steps": 40}, context={"vocab_size": 8192,
                                                                       "eos_id": 2})
    result = train_model("lm", dataset_uri=..., out_uri=..., model_config=model_cfg,
                         train_config=train_cfg)
    summary = result.details()
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from models.config_fields import FieldError
from models.efficientnet_config import EFFICIENTNET_PRESETS, EfficientNetConfig
from models.flow_config import FLOW_PRESETS, FlowConfig
from models.lm_config import LM_PRESETS, LMConfig
from models.mobilenet_config import MOBILENET_PRESETS, MobileNetV2Config
from models.rectified_flow_config import RECTIFIED_FLOW_PRESETS, RectifiedFlowConfig
from models.sam_config import SAM_PRESETS, SAMConfig
from models.segmenter_config import SEGMENTER_PRESETS, SegmenterConfig
from models.thundernet_config import THUNDERNET_PRESETS, ThunderNetConfig
from models.train_config import (
    KIND_FIELDS,
    TRAINING,
    TrainConfig,
    TrainProfile,
    TrainResult,
    check_lm_run,
)
from models.vae_config import VAE_PRESETS, VAEConfig
from models.vqgan_config import VQGAN_PRESETS, VQGANConfig
from models.vqvae_config import VQVAE_PRESETS, VQVAEConfig

__all__ = ["KINDS", "ConfigFieldError", "ModelKind", "TrainConfig", "TrainResult",
           "build_configs", "make_task", "train_model"]


class ConfigFieldError(ValueError):
    """A bad model/train value of a config-file entry.

    Attributes:
        path: where it is, e.g. ``"model.n_head"``, ``"train.lr"`` or ``"preset"``.
        message: what is wrong with it. ``str(e) == f"{path}: {message}"``.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


@dataclass(frozen=True)
class ModelKind:
    """One kind of model.

    Attributes:
        name: the kind (``ModelEntry.kind`` in a config file).
        dataset: what it trains on: ``"posts"`` (a token dataset) or ``"images"``.
        presets: the preset names its model config accepts (every kind has ``"tiny"``).
        default_preset: the preset of an entry that names none.
        unit: what ``TrainResult.examples`` counts: ``"tokens"`` or ``"images"``.
        model_config: the model config dataclass (with ``preset(name, **overrides)``).
        training: its training defaults and own train fields.
        model_context: model-config fields the data fills in when the entry leaves them unset.
        train_context: train-config fields the data fills in likewise.
        task: ``"module:factory"`` of its trainer task, imported (with torch) only to train.
        check: a torch-free check of a (model_config, train_config) pair, or None; raises
            :class:`~models.config_fields.FieldError` naming the train field.
    """

    name: str
    dataset: str
    presets: tuple[str, ...]
    default_preset: str
    unit: str
    model_config: type
    training: TrainProfile
    model_context: tuple[str, ...] = ()
    train_context: tuple[str, ...] = ()
    task: str = ""
    check: Callable[[Any, TrainConfig], Any] | None = None


KINDS: dict[str, ModelKind] = {
    "lm": ModelKind(
        name="lm", dataset="posts", presets=tuple(LM_PRESETS), default_preset="tiny",
        unit="tokens", model_config=LMConfig, training=TRAINING["lm"],
        model_context=("vocab_size",), train_context=("eos_id",),
        task="models.task_lm:make_task", check=check_lm_run,
    ),
    "vqvae": ModelKind(
        name="vqvae", dataset="images", presets=tuple(VQVAE_PRESETS), default_preset="base",
        unit="images", model_config=VQVAEConfig, training=TRAINING["vqvae"],
        task="models.task_vision:make_task",
    ),
    "efficientnet": ModelKind(
        name="efficientnet", dataset="images", presets=EFFICIENTNET_PRESETS,
        default_preset="b0", unit="images", model_config=EfficientNetConfig,
        training=TRAINING["efficientnet"], model_context=("num_classes",),
        task="models.task_vision:make_task",
    ),
    "mobilenet_v2": ModelKind(
        name="mobilenet_v2", dataset="images", presets=tuple(MOBILENET_PRESETS),
        default_preset="v2_100", unit="images", model_config=MobileNetV2Config,
        training=TRAINING["mobilenet_v2"], model_context=("num_classes",),
        task="models.task_vision:make_task",
    ),
    "segmenter": ModelKind(  # reads the image dataset's masks (every image needs one)
        name="segmenter", dataset="images", presets=tuple(SEGMENTER_PRESETS),
        default_preset="base", unit="images", model_config=SegmenterConfig,
        training=TRAINING["segmenter"], model_context=("num_classes",),
        task="models.task_vision:make_task",
    ),
    "sam": ModelKind(  # promptable segmenter: prompts drawn from the masks' objects
        name="sam", dataset="images", presets=tuple(SAM_PRESETS), default_preset="small",
        unit="images", model_config=SAMConfig, training=TRAINING["sam"],
        task="models.task_vision:make_task",
    ),
    "thundernet": ModelKind(  # detector: boxes of the masks' connected components
        name="thundernet", dataset="images", presets=tuple(THUNDERNET_PRESETS),
        default_preset="snet146", unit="images", model_config=ThunderNetConfig,
        training=TRAINING["thundernet"], model_context=("num_classes",),
        task="models.task_vision:make_task",
    ),
    # The generative image kinds (models.vision_generative): images in [-1, 1].
    "vqgan": ModelKind(
        name="vqgan", dataset="images", presets=tuple(VQGAN_PRESETS), default_preset="base",
        unit="images", model_config=VQGANConfig, training=TRAINING["vqgan"],
        task="models.task_vision:make_task",
    ),
    "vae": ModelKind(
        name="vae", dataset="images", presets=tuple(VAE_PRESETS), default_preset="base",
        unit="images", model_config=VAEConfig, training=TRAINING["vae"],
        task="models.task_vision:make_task",
    ),
    "flow": ModelKind(
        name="flow", dataset="images", presets=tuple(FLOW_PRESETS), default_preset="base",
        unit="images", model_config=FlowConfig, training=TRAINING["flow"],
        task="models.task_vision:make_task",
    ),
    "rectified_flow": ModelKind(
        name="rectified_flow", dataset="images", presets=tuple(RECTIFIED_FLOW_PRESETS),
        default_preset="small", unit="images", model_config=RectifiedFlowConfig,
        training=TRAINING["rectified_flow"], model_context=("num_classes",),
        task="models.task_vision:make_task",
    ),
}


def _kind(kind: str) -> ModelKind:
    if kind not in KINDS:
        raise ConfigFieldError("kind", f"unknown model kind {kind!r}; expected one of "
                               f"{sorted(KINDS)}")
    return KINDS[kind]


def _unknown(section: str, key: Any, known: list[str], what: str) -> ConfigFieldError:
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigFieldError(f"{section}.{key}", f"unknown key: not a field of {what}{hint}")


def _mapping(section: str, values: Any) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigFieldError(section, f"must be a mapping of fields, got {values!r}")
    for key in values:
        if not isinstance(key, str):
            raise ConfigFieldError(f"{section}.{key}", "keys must be strings")
    return dict(values)


def build_configs(kind: str, *, preset: str | None, model: Mapping[str, Any],
                  train: Mapping[str, Any], context: Mapping[str, Any]) -> tuple[Any, TrainConfig]:
    """``(model_config, train_config)`` of a config-file model entry.

    Args:
        kind: a key of :data:`KINDS`.
        preset: one of the kind's presets; None = its ``default_preset``.
        model: model-config fields overriding the preset.
        train: train-config fields (those of every kind and the kind's own).
        context: values the data decides; they fill fields the entry leaves unset:
            ``vocab_size`` and ``eos_id`` for posts kinds, ``num_classes`` for images kinds.
            Keys a kind does not use are ignored.

    Raises:
        ConfigFieldError: naming the path of an unknown key, a wrong type or a bad value
            (``model.<field>``, ``train.<field>``, ``train.peft.<field>`` of a PEFT block),
            an unknown preset (``preset``) or kind (``kind``).
    """
    spec = _kind(kind)
    preset = spec.default_preset if preset is None else preset
    if preset not in spec.presets:
        raise ConfigFieldError("preset", f"unknown {kind} preset {preset!r}; expected one of "
                               f"{list(spec.presets)}")
    model_values, train_values = _mapping("model", model), _mapping("train", train)
    context = _mapping("context", context)

    model_fields = [f.name for f in dataclasses.fields(spec.model_config)]
    for key in model_values:
        if key not in model_fields:
            raise _unknown("model", key, model_fields, spec.model_config.__name__)
    for key in spec.model_context:
        if key in context and key not in model_values:
            model_values[key] = context[key]
    try:
        model_config = spec.model_config.preset(preset, **model_values)
    except FieldError as exc:
        raise ConfigFieldError(f"model.{exc.field}", exc.message) from None
    except (TypeError, ValueError) as exc:
        raise ConfigFieldError("model", str(exc)) from None

    own = set(spec.training.own_fields)
    train_fields = [f.name for f in dataclasses.fields(TrainConfig)
                    if f.name != "kind" and (f.name not in KIND_FIELDS or f.name in own)]
    for key in train_values:
        if key in KIND_FIELDS and key not in own:
            users = sorted(k for k, s in KINDS.items() if key in s.training.own_fields)
            raise ConfigFieldError(f"train.{key}", f"not a {kind} training field (only "
                                   f"{', '.join(users)} use it)")
        if key not in train_fields:
            raise _unknown("train", key, train_fields, f"the {kind} TrainConfig")
    for key in spec.train_context:
        if key in context and key not in train_values:
            train_values[key] = context[key]
    try:
        train_config = TrainConfig(kind=kind, **train_values)
        if spec.check is not None:
            spec.check(model_config, train_config)
    except FieldError as exc:
        raise ConfigFieldError(f"train.{exc.field}", exc.message) from None
    except (TypeError, ValueError) as exc:
        raise ConfigFieldError("train", str(exc)) from None
    return model_config, train_config


def make_task(kind: str, model_config: Any, train_config: TrainConfig) -> Any:
    """The trainer task of ``kind`` for these configs (imports torch and the model).

    Raises:
        ConfigFieldError: an unknown kind.
        TypeError: configs of another kind.
        ValueError: configs that do not fit together (see the kind's task).
    """
    spec = _kind(kind)
    if not isinstance(train_config, TrainConfig):
        raise TypeError(f"train_config must be a TrainConfig, got {type(train_config).__name__}")
    if train_config.kind != kind:
        raise ValueError(f"train_config is a {train_config.kind!r} TrainConfig, not {kind!r}")
    if not isinstance(model_config, spec.model_config):
        raise TypeError(f"{kind} needs a {spec.model_config.__name__}, got "
                        f"{type(model_config).__name__}")
    module, _, factory = spec.task.partition(":")
    return getattr(importlib.import_module(module), factory)(model_config, train_config)


def train_model(kind: str, *, dataset_uri: str, out_uri: str, model_config: Any,
                train_config: TrainConfig, on_step: Callable[[dict[str, Any]], None] | None = None,
                resume: bool | str = False) -> TrainResult:
    """Trains a ``kind`` model on the dataset's train split (one process, or DDP under torchrun).

    Imports the trainer (torch) lazily. Evaluates on the dataset's ``eval`` split every
    ``train_config.eval_every`` steps and at the end, when the dataset has one.

    Args:
        kind: a key of :data:`KINDS`.
        dataset_uri: a dataset version folder (``manifest.json``, ``split=*/``) of the
            kind's dataset: token records for ``posts`` kinds, image records for ``images``.
        out_uri: run folder; receives ``metrics.jsonl``, ``config.json`` and ``ckpt.pt``.
        model_config: the kind's model config.
        train_config: a :class:`TrainConfig` of this kind.
        on_step: called on every rank after every optimizer step with its metrics dict;
            it makes each step sync the device, so leave it None for speed.
        resume: False = start afresh; True = continue from ``<out_uri>/ckpt.pt`` when it
            exists (else start afresh: safe for restarts of preempted jobs); a URI =
            continue from that checkpoint (it must exist).

    Returns:
        A :class:`~models.train_config.TrainResult`; ``details()`` is JSON-able.

    Raises:
        ValueError: bad or mismatched configs, bad data, an empty split, a checkpoint of
            another dataset, model, kind or data-stream config.
        TypeError: configs of another kind.
        FileNotFoundError: a missing ``init_from`` or explicit ``resume`` checkpoint.
        RuntimeError: a device, precision or attention kernel that cannot run.
    """
    task = make_task(kind, model_config, train_config)
    from models.trainer import train  # torch, imported only to train

    return train(task, dataset_uri=dataset_uri, out_uri=out_uri, on_step=on_step,
                 resume=resume)
