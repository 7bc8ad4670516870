"""The one typed configuration of a shardforge run, loaded from YAML.

Every section is a pydantic model with ``extra="forbid"`` and strict types, so a
misspelt key or a value of the wrong type is an error that names the key
(``spark.master: Input should be a valid string``) instead of a silent default.
Paths inside the file (the feature specs) are relative to the file itself; they are made
absolute and checked when the file is loaded, and the ``models:`` entries are built into
their kinds' typed configs then too (:mod:`core.model_entries`), so any mistake surfaces
before an engine starts, naming the file and the key path.

The embedded default is ``conf/sample.yaml``; ``shardforge run`` with no flags
uses it.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import ConfigError
from core.validation_config import ValidationConfig, check_drift_features

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "BeamConfig",
    "CleanConfig",
    "ConfigError",
    "CorpusConfig",
    "DatasetConfig",
    "ImageDatasetConfig",
    "ImagesConfig",
    "LakeConfig",
    "ModelEntry",
    "SampleConfig",
    "ShardforgeConfig",
    "SizingConfig",
    "SparkConfig",
    "StandaloneConfig",
    "YarnConfig",
    "load_config",
]

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[1] / "conf" / "sample.yaml"

_DT_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MEMORY = re.compile(r"^[1-9]\d*[kmgt]$", re.IGNORECASE)  # a JVM size: 512m, 2g
_SPARK_URL = re.compile(r"^spark://[A-Za-z0-9.-]+:\d{1,5}$")
# Pillow's image modes (Image.MODES), listed here so loading a config never imports Pillow.
_PIL_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK",
                        "YCbCr", "LAB", "HSV", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})


class _Section(BaseModel):
    # strict: "2" is not an int and 1 is not a string; forbid: typos are errors.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _as_dt(value: Any) -> Any:
    """YAML reads an unquoted 2026-11-01 as a date; accept it as the string it means."""
    if isinstance(value, _dt.date):
        return value.isoformat()
    return value


def _check_dt(value: str) -> str:
    if not _DT_PATTERN.match(value):
        raise ValueError(f"expected a date partition YYYY-MM-DD, got {value!r}")
    _dt.date.fromisoformat(value)  # rejects 2026-13-40
    return value


class LakeConfig(_Section):
    root: str = "./lake"  # a plain path, file://… or hdfs://namenode:8020/…


class YarnConfig(_Section):
    """What ``shardforge submit spark <job> --profile yarn`` adds to ``spark-submit``."""

    queue: str = "default"
    # A venv-pack archive of a virtualenv with shardforge's dependencies (not shardforge
    # itself: that ships as a zip via --py-files). Unpacked as ./env on every container.
    env_archive: str = "env.tar.gz"
    driver_memory: str = "2g"
    # Per executor; None: sized from the input by `submit` (shardforge/engine_sizing.py), or
    # 4g when the input cannot be measured. Arrow batches of the NFKC UDF live off-heap.
    executor_memory: str | None = None
    executor_cores: int = Field(default=2, gt=0)
    num_executors: int = Field(default=4, gt=0)


def _check_memory(value: str | None) -> str | None:
    if value is not None and not _MEMORY.match(value):
        raise ValueError(f"expected a JVM memory size like 512m or 2g, got {value!r}")
    return value


class StandaloneConfig(_Section):
    """A Spark standalone cluster: ``shardforge spark-cluster start`` runs one on this machine,
    ``shardforge submit spark JOB --profile standalone`` runs the jobs on it (client mode)."""

    master: str = "spark://127.0.0.1:7077"  # `spark-cluster start` binds it to 127.0.0.1 only
    webui_port: int = Field(default=8080, gt=0, lt=65536)  # the master's UI; /json/ is its status
    workers: int = Field(default=2, gt=0)  # `spark-cluster start` without --workers
    worker_cores: int = Field(default=1, gt=0)  # 2 workers x 1 core: this machine has 2 cores
    # What one worker offers its executors; an executor must fit in it, so it also caps the
    # sized executor memory (Spark's floor for an executor is 450m).
    worker_memory: str = "1g"
    daemon_memory: str = "256m"  # heap of the Master and Worker JVMs themselves (Spark: 1g)
    driver_memory: str = "1g"  # the driver runs here, in the `submit` process tree
    executor_cores: int = Field(default=1, gt=0)
    executor_memory: str | None = None  # None: sized from the input, at most worker_memory
    # The executors' Python; None: this interpreter (workers on this machine, or the same
    # venv at the same path on every worker node).
    python: str | None = None

    @field_validator("master")
    @classmethod
    def _spark_url(cls, value: str) -> str:
        if not _SPARK_URL.match(value):
            raise ValueError(f"expected spark://HOST:PORT, got {value!r}")
        return value

    _memory = field_validator("worker_memory", "daemon_memory", "driver_memory",
                              "executor_memory")(_check_memory)


class SizingConfig(_Section):
    """How ``submit --profile yarn|standalone`` sizes Spark from the input (engine_sizing.py)."""

    enabled: bool = True  # false: only what spark.conf and the profile say
    partition_mb: int = Field(default=128, gt=0)  # input bytes per shuffle partition, at scale
    max_executor_memory: str = "16g"  # the sized heap never asks for more

    _memory = field_validator("max_executor_memory")(_check_memory)


class SparkConfig(_Section):
    master: str = "local[2]"  # 2 cores here; "yarn" on a cluster
    app_name: str = "shardforge"
    database: str = "shardforge"
    # None: an embedded Derby metastore inside the lake; "thrift://host:9083" for a shared one.
    metastore_uri: str | None = None
    conf: dict[str, str] = Field(default_factory=dict)  # passed through as --conf k=v
    yarn: YarnConfig = Field(default_factory=YarnConfig)  # the `submit --profile yarn` settings
    standalone: StandaloneConfig = Field(default_factory=StandaloneConfig)  # `spark-cluster`, `--profile standalone`
    sizing: SizingConfig = Field(default_factory=SizingConfig)  # yarn and standalone profiles


class BeamConfig(_Section):
    runner: str = "DirectRunner"
    # Passed through as --key=value pipeline options (e.g. flink_master, project, region).
    options: dict[str, str | int | bool] = Field(default_factory=dict)


class CorpusConfig(_Section):
    format: Literal["feed_dump", "jsonl_articles", "image_folder"]
    # Partitions to process; empty means every dt=… partition found under raw/<corpus>/.
    dt: list[str] = Field(default_factory=list)

    @field_validator("dt", mode="before")
    @classmethod
    def _dates_as_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [_as_dt(v) for v in value]
        return value

    @field_validator("dt")
    @classmethod
    def _dates_are_partitions(cls, value: list[str]) -> list[str]:
        return [_check_dt(v) for v in value]


class SampleConfig(_Section):
    dt: str = "2026-11-01"
    posts: int = Field(default=3000, gt=0)
    images: int = Field(default=200, gt=0)
    seed: int = 0

    @field_validator("dt", mode="before")
    @classmethod
    def _date_as_string(cls, value: Any) -> Any:
        return _as_dt(value)

    @field_validator("dt")
    @classmethod
    def _date_is_partition(cls, value: str) -> str:
        return _check_dt(value)


class CleanConfig(_Section):
    # Tokens the crawler left where it dropped a formula or a code block.
    placeholders: list[str] = Field(default_factory=lambda: ["[公式]", "[Math]", "[代码]", "[Formula]"])
    min_chars: int = Field(default=8, ge=0)
    max_chars: int = Field(default=4000, gt=0)
    # topic -> keywords (case-insensitive substring match); first topic that matches wins.
    topics: dict[str, list[str]] = Field(default_factory=dict)
    default_topic: str = "other"
    # Truncation dedup joins excerpts to longer texts on their first K characters, then
    # checks startswith; excerpts shorter than K are too short to claim identity.
    prefix_key_chars: int = Field(default=20, gt=0)
    # Near-duplicates: Jaccard similarity of character shingles at or above this.
    near_dup_threshold: float = Field(default=0.9, gt=0, le=1)
    shingle_chars: int = Field(default=4, gt=0)  # 4 chars: a one-character edit moves few shingles
    # MinHash banding: bands x rows hashes; a pair is a candidate if one band matches in full,
    # with p = 1 - (1 - J**rows)**bands. 10 x 12 finds a pair at Jaccard 0.9 with p~0.96 (0.95:
    # p~0.9996) and one at 0.5 with p~0.002: templated crawls share many shingles, and looser
    # bands (4 x 6: p~0.06 at 0.5) made candidate pairs grow with the square of the corpus.
    minhash_bands: int = Field(default=10, gt=0)
    minhash_rows: int = Field(default=12, gt=0)


class ImagesConfig(_Section):
    """The Beam image pipeline (``pipelines/beam/images.py``): raw images → ``clean_images``."""

    corpus: str = "images"  # raw/<corpus>/dt=…/ holds the files and the manifest
    # In the dt folder: .jsonl ({"image", "label", "mask"?} a line) or .csv (the same header).
    manifest: str = "manifest.jsonl"
    # Every sample image is 32-64 px a side, so 32x32 only ever shrinks (no invented detail).
    height: int = Field(default=32, gt=0)
    width: int = Field(default=32, gt=0)
    # stretch: the sample's shapes sit anywhere in the frame, and a crop could cut the labelled
    # object (and its mask) away; center_crop keeps the aspect ratio (ImageNet-style corpora).
    fit: Literal["stretch", "center_crop"] = "stretch"
    # Of the image; masks always use nearest, so class ids are never blended.
    resample: Literal["nearest", "bilinear", "bicubic", "lanczos"] = "bilinear"
    # Below half the target side an upscale invents most pixels; the "tiny" defect is 4 px.
    min_side: int = Field(default=16, gt=0)
    # Bigger is a scan or a decompression bomb, not a training image; checked before decoding.
    max_side: int = Field(default=4096, gt=0)
    max_aspect: float = Field(default=4.0, ge=1)  # longer/shorter side; a stretch beyond distorts
    # Source modes converted to RGB; any other mode is quarantined (mode-not-allowed). Grayscale
    # ("L") is not here: in a colour corpus it is a scan or a placeholder to look at, and
    # converting it would feed R=G=B images silently. Add "L", "P" or "RGBA" to accept them.
    allowed_modes: list[str] = Field(default_factory=lambda: ["RGB"])
    # Labels a manifest row may carry (mask class id = position + 1); empty accepts any label.
    labels: list[str] = Field(default_factory=lambda: ["circle", "square", "triangle"])
    # Near duplicates: perceptual hashes (phash, 8x8 = 64 bits) at most this many bits apart.
    # On the sample, distinct images are >= 10 bits apart and a brightness shift is 0 bits.
    phash_max_distance: int = Field(default=6, ge=0, lt=64)
    # Part files of clean_images; the 200 sample images at 32x32 are ~1 MB, one file.
    output_shards: int = Field(default=1, gt=0)

    @field_validator("manifest")
    @classmethod
    def _manifest_format(cls, value: str) -> str:
        if not value.endswith((".jsonl", ".csv")) or "/" in value:
            raise ValueError(f"expected a file name ending .jsonl or .csv, got {value!r}")
        return value

    @field_validator("allowed_modes")
    @classmethod
    def _known_modes(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - _PIL_MODES)
        if not value or unknown:
            raise ValueError(f"expected Pillow modes from {sorted(_PIL_MODES)}, got {value}")
        return value

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or "" in value:
            raise ValueError(f"labels must be distinct non-empty strings, got {value}")
        return value

    @model_validator(mode="after")
    def _sides_in_order(self) -> ImagesConfig:
        if self.min_side > self.max_side:
            raise ValueError(f"min_side {self.min_side} is above max_side {self.max_side}")
        return self


class DatasetConfig(_Section):
    name: str = "posts"
    version: str = "1"
    # split -> share of rows, assigned by a stable hash of the key column.
    splits: dict[str, float] = Field(default_factory=lambda: {"train": 0.9, "eval": 0.1})
    shards: dict[str, int] = Field(default_factory=lambda: {"train": 4, "eval": 1})

    @field_validator("splits")
    @classmethod
    def _ratios_sum_to_one(cls, value: dict[str, float]) -> dict[str, float]:
        if not value or abs(sum(value.values()) - 1.0) > 1e-9 or min(value.values()) < 0:
            raise ValueError(f"split ratios must be >= 0 and sum to 1, got {value}")
        return value

    @model_validator(mode="after")
    def _a_shard_count_per_split(self) -> DatasetConfig:
        for split, count in self.shards.items():
            if count < 1:
                raise ValueError(f"shards.{split} must be >= 1, got {count}")
        if set(self.shards) != set(self.splits):
            raise ValueError(f"shards {sorted(self.shards)} must name the same splits as "
                             f"splits {sorted(self.splits)}")
        return self


class ImageDatasetConfig(DatasetConfig):
    """The image dataset: ``clean_images`` → ``records/<name>/v=<version>`` (``encode --dataset images``)."""

    name: str = "images"
    # its feature spec, relative to the config file; unset = the embedded features/images.yaml
    spec: str = "features/images.yaml"
    # A few hundred 32x32 images are ~1 MB: two train shards already let two readers share.
    shards: dict[str, int] = Field(default_factory=lambda: {"train": 2, "eval": 1})


class ModelEntry(_Section):
    # A kind of models.kinds.KINDS: lm trains on the posts dataset; vqvae, efficientnet and
    # the other image kinds on the image_dataset.
    kind: str = "lm"
    # A preset of the kind (lm: tiny, small; efficientnet: b0…b7, tiny; every kind has
    # tiny); None = the kind's default.
    preset: str | None = None
    # Fields of the kind's model config that override the preset (LMConfig, VQVAEConfig,
    # EfficientNetConfig…); checked by name and type when the file is loaded.
    model: dict[str, Any] = Field(default_factory=dict)
    # Fields of models.train_config.TrainConfig the kind uses; checked the same way. An lm's
    # `init_from` may name another lm entry: it starts from that model's checkpoint (and
    # trains after it).
    train: dict[str, Any] = Field(default_factory=dict)
    # VQGAN's second stage: an lm that names a vqvae or vqgan entry here trains on that
    # model's code shards (records/<entry>-tokens/v=<run_id>, what `shardforge tokens`
    # writes; the train stage exports them first when its run has none) instead of the
    # posts, with the vocabulary of its codebook. `shardforge generate <entry> --prior
    # <this model's checkpoint>` then samples images.
    tokens_of: str | None = None

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        from models.kinds import KINDS  # torch-free: the registry and the config classes only

        if value not in KINDS:
            raise ValueError(f"unknown model kind {value!r}; expected one of {sorted(KINDS)}")
        return value


class ShardforgeConfig(_Section):
    lake: LakeConfig = Field(default_factory=LakeConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    beam: BeamConfig = Field(default_factory=BeamConfig)
    corpora: dict[str, CorpusConfig] = Field(default_factory=dict)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)
    # relative to the config file; absolute once loaded; unset = the embedded features/posts.yaml
    feature_spec: str = "features/posts.yaml"
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    # Optional: the images as a dataset of their own (None: only the posts are encoded).
    image_dataset: ImageDatasetConfig | None = None
    models: dict[str, ModelEntry] = Field(default_factory=dict)
    # Gates after encode: the drift thresholds (core/validation_config.py, README "Drift gate").
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    # Where the file came from, so relative paths in it resolve; not a YAML key.
    source: str = Field(default="", exclude=True)

    @field_validator("models")
    @classmethod
    def _init_from_names_another_lm(cls, models: dict[str, ModelEntry]) -> dict[str, ModelEntry]:
        for name in models:
            parent = _init_from_model(models, name)
            if parent is None:
                continue
            for model in (name, parent):
                if models[model].kind != "lm":
                    raise ValueError(f"{name}.train.init_from: {model!r} is a {models[model].kind} "
                                     f"model; only an lm starts from another lm")
            seen = [name]
            while parent is not None:  # each model names one parent: a walk finds any cycle
                if parent in seen:
                    raise ValueError(f"{name}.train.init_from: a cycle "
                                     f"{' -> '.join([*seen, parent])}")
                seen.append(parent)
                parent = _init_from_model(models, parent)
        for name, entry in models.items():
            if entry.tokens_of is None:
                continue
            vq = models.get(entry.tokens_of)
            if entry.kind != "lm":
                raise ValueError(f"{name}.tokens_of: a {entry.kind} model; only an lm trains on "
                                 "a VQ model's codes")
            if vq is None or vq.kind not in ("vqvae", "vqgan"):
                what = "no such model" if vq is None else f"a {vq.kind} model"
                raise ValueError(f"{name}.tokens_of: {entry.tokens_of!r} is {what}; it must name "
                                 f"a vqvae or vqgan entry (configured: {sorted(models)})")
        return models

    def init_from_model(self, name: str) -> str | None:
        """The model entry that ``models.<name>.train.init_from`` names, if it names one."""
        return _init_from_model(self.models, name)

    def train_order(self) -> list[str]:
        """The models in file order, except that each follows the model its ``init_from``
        names and the VQ model its ``tokens_of`` names."""
        order: list[str] = []

        def visit(name: str) -> None:
            if name not in order:
                for parent in (self.init_from_model(name), self.models[name].tokens_of):
                    if parent is not None:
                        visit(parent)
                order.append(name)

        for name in self.models:
            visit(name)
        return order

    def resolve_path(self, relative: str) -> Path:
        """Resolve a path written in the config file against the file's folder."""
        base = Path(self.source).parent if self.source else Path.cwd()
        return (base / relative).resolve()


def _init_from_model(models: dict[str, ModelEntry], name: str) -> str | None:
    """The key of ``models`` that ``models[name].train.init_from`` names (else a URI or None)."""
    ref = models[name].train.get("init_from")
    return ref if isinstance(ref, str) and ref in models else None


def _format_error(path: str, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<top level>"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {key}: {message}{more}"


def load_config(path: str | Path | None = None, *, lake_root: str | None = None) -> ShardforgeConfig:
    """Load and validate a config file.

    Args:
        path: a YAML file; ``None`` loads the embedded default ``conf/sample.yaml``.
        lake_root: overrides ``lake.root`` (the CLI's ``--lake``).

    Returns:
        The validated, frozen config.

    Raises:
        ConfigError: the file is missing, not YAML, or breaks the schema; the
            message names the file and the offending key.
    """
    file = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{file}:{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    except ValueError as exc:  # safe_load builds dates itself: 2026-13-01 fails in there
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level, got {type(data).__name__}")
    if lake_root is not None:
        data = {**data, "lake": {**(data.get("lake") or {}), "root": lake_root}}
    # A spec the file does not name is the embedded one, wherever the file lies.
    data.setdefault("feature_spec", str(DEFAULT_CONFIG_PATH.parent / "features" / "posts.yaml"))
    if isinstance(data.get("image_dataset"), dict):
        data["image_dataset"] = {
            "spec": str(DEFAULT_CONFIG_PATH.parent / "features" / "images.yaml"),
            **data["image_dataset"]}
    data["source"] = str(file.resolve())
    try:
        cfg = ShardforgeConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(str(file), err)) from None
    cfg = _with_resolved_paths(cfg)
    check_drift_features(cfg)
    from core.model_entries import check_model_entries

    check_model_entries(cfg)
    return cfg


def _with_resolved_paths(cfg: ShardforgeConfig) -> ShardforgeConfig:
    """The config with its file paths absolute (against the file's folder) and checked."""
    def existing(key: str, relative: str) -> str:
        path = cfg.resolve_path(relative)
        if not path.is_file():
            raise ConfigError(f"{cfg.source}: {key}: {relative} does not exist "
                              f"(looked for {path}; relative paths start at the config file's folder)")
        return str(path)

    update: dict[str, Any] = {"feature_spec": existing("feature_spec", cfg.feature_spec)}
    if cfg.image_dataset is not None:
        update["image_dataset"] = cfg.image_dataset.model_copy(
            update={"spec": existing("image_dataset.spec", cfg.image_dataset.spec)})
    return cfg.model_copy(update=update)
