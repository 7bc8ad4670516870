"""What analysis leaves behind: vocabularies, bucket boundaries, statistics and tokenizers.

Saved beside the dataset, under the lake's ``artifacts/<dataset>/v=<version>/``::

    artifacts.json              index: format, rows analyzed, boundaries, stats, file names
    vocab.<feature>.txt         one value per line: TF's vocabulary-file format
    tokenizer.<feature>.json    an HF tokenizers ``tokenizer.json``

The index is written last, so a folder without it is an unfinished save (the loader
refuses it). :func:`save_artifacts` returns ``{name: uri}`` for the dataset manifest's
``artifacts`` field.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from features.kinds import (
    BucketizedFeature,
    CategoricalFeature,
    CrossedFeature,
    HashedFeature,
    IdentityFeature,
    NumericFeature,
    TextFeature,
)
from features.spec import FeatureSpec

__all__ = [
    "FORMAT",
    "INDEX_NAME",
    "Artifacts",
    "load_artifacts",
    "num_ids",
    "read_artifacts",
    "resolve_artifacts",
    "save_artifacts",
    "static_artifacts",
]

FORMAT = "shardforge.features.artifacts/1"
INDEX_NAME = "artifacts.json"


@dataclass
class Artifacts:
    """Per-feature analysis results, keyed by feature name.

    Attributes:
        vocabularies: categorical feature → its vocabulary (id = index).
        boundaries: bucketized feature → ascending boundaries.
        stats: numeric feature → ``count, mean, var, std, min, max`` of the train split.
        tokenizers: BPE text feature → ``tokenizer.json`` text.
        rows: rows the analysis saw (0 for spec-only artifacts).
    """

    vocabularies: dict[str, list[str]] = field(default_factory=dict)
    boundaries: dict[str, list[float]] = field(default_factory=dict)
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    tokenizers: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:
        # Ship data, not caches: workers rebuild lookup tables and tokenizers on first use.
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _cache={})

    def cached(self, key: tuple, build):
        """``build()`` once per key (lookup arrays, loaded tokenizers)."""
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]


def _read_vocabulary_file(name: str, path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"feature {name!r}: cannot read vocabulary_file {path}: "
                         f"{exc.strerror or exc}") from None
    if "\r" in text:
        raise ValueError(f"feature {name!r}: vocabulary_file {path} has \\r line ends; "
                         "TF reads one value per \\n-terminated line")
    values = text.split("\n")
    if values and values[-1] == "":
        values.pop()  # the final newline ends the last line, it opens no new one
    if len(set(values)) != len(values):
        raise ValueError(f"feature {name!r}: vocabulary_file {path} has duplicate values")
    if not values:
        raise ValueError(f"feature {name!r}: vocabulary_file {path} is empty")
    return values


def static_artifacts(spec: FeatureSpec) -> Artifacts:
    """The artifacts a spec alone determines: list and file vocabularies, explicit boundaries."""
    out = Artifacts()
    for name, f in spec.features.items():
        if isinstance(f, CategoricalFeature) and f.vocabulary is not None:
            out.vocabularies[name] = list(f.vocabulary)
        elif isinstance(f, CategoricalFeature) and f.vocabulary_file is not None:
            out.vocabularies[name] = _read_vocabulary_file(name, f.vocabulary_file)
        elif isinstance(f, BucketizedFeature) and f.boundaries is not None:
            out.boundaries[name] = list(f.boundaries)
    return out


_STATIC: dict[int, tuple[FeatureSpec, Artifacts]] = {}  # id(spec) → (spec, its artifacts)


def resolve_artifacts(spec: FeatureSpec, artifacts: Artifacts | None) -> Artifacts:
    """The artifacts to transform with: ``artifacts``, or the spec's static ones when None.

    Raises:
        ValueError: a feature needs an artifact (computed vocabulary, quantile boundaries,
            statistics, tokenizer) that is missing; the message names it.
    """
    if artifacts is None:
        hit = _STATIC.get(id(spec))
        if hit is None or hit[0] is not spec:
            if len(_STATIC) > 16:
                _STATIC.clear()
            hit = _STATIC[id(spec)] = (spec, static_artifacts(spec))  # keeps spec alive: id stays
        artifacts = hit[1]
    for name, f in spec.features.items():
        need = None
        if isinstance(f, CategoricalFeature) and name not in artifacts.vocabularies:
            need = "a vocabulary"
        elif isinstance(f, BucketizedFeature) and name not in artifacts.boundaries:
            need = "quantile boundaries"
        elif isinstance(f, NumericFeature) and f.normalize != "none" and name not in artifacts.stats:
            need = "statistics"
        elif isinstance(f, TextFeature) and f.tokenizer == "bpe" and name not in artifacts.tokenizers:
            need = "a trained tokenizer"
        if need:
            raise ValueError(f"feature {name!r} needs {need} from features.analyze(); "
                             "pass its artifacts")
    return artifacts


def num_ids(spec: FeatureSpec, name: str, artifacts: Artifacts | None = None) -> int:
    """How many ids an id-valued feature can take (its embedding/one-hot size).

    Raises:
        ValueError: ``name`` is not an id feature, or its artifact is missing.
    """
    f = spec.features.get(name)
    if isinstance(f, CategoricalFeature):
        vocab = resolve_artifacts(spec, artifacts).vocabularies[name]
        return len(vocab) + f.num_oov_buckets
    if isinstance(f, BucketizedFeature):
        return len(resolve_artifacts(spec, artifacts).boundaries[name]) + 1
    if isinstance(f, (HashedFeature, CrossedFeature)):
        return f.hash_bucket_size
    if isinstance(f, IdentityFeature):
        return f.num_buckets
    raise ValueError(f"feature {name!r} is not an id feature of this spec")


def _write(lake, uri: str, data: str) -> None:
    """Replace the file at ``uri`` atomically: write a ``_staging-`` sibling, then rename it.

    A process killed mid-write leaves the previous file whole, plus the staging sibling,
    which ``shardforge lake fsck`` reports and the next writer sweeps (a rename is atomic on
    a local disk and on HDFS; on object stores ``mv`` is copy + delete, still never a
    truncated file under the final name).
    """
    from records.faults import fault_point

    path = lake.fs_path(uri)
    folder, name = path.rsplit("/", 1)
    lake.fs.makedirs(folder, exist_ok=True)
    staging = f"{folder}/_staging-{name}-{uuid.uuid4().hex}"
    with lake.fs.open(staging, "wb") as handle:
        handle.write(data.encode("utf-8"))
    fault_point("inside:artifact_write")  # kill -9 tests: written, not yet renamed
    lake.fs.mv(staging, path)


def save_artifacts(artifacts: Artifacts, lake, dataset: str, version: str) -> dict[str, str]:
    """Write ``artifacts`` under ``lake.artifacts(dataset, version)``.

    Args:
        lake: a :class:`core.lake.Lake`.

    Returns:
        ``{"features": index uri, "vocab.<f>": uri, "tokenizer.<f>": uri, ...}``, for the
        manifest's ``artifacts`` field.

    Raises:
        ValueError: a vocabulary value with a line break (a vocabulary file cannot hold it).
    """
    files: dict[str, dict[str, str]] = {"vocabularies": {}, "tokenizers": {}}
    written: dict[str, str] = {}
    for name, vocab in sorted(artifacts.vocabularies.items()):
        bad = next((v for v in vocab if "\n" in v or "\r" in v), None)
        if bad is not None:
            raise ValueError(f"feature {name!r}: vocabulary value {bad!r} has a line break; "
                             "a vocabulary file holds one value per line")
        file = f"vocab.{name}.txt"
        written[f"vocab.{name}"] = lake.artifact(dataset, version, file)
        _write(lake, written[f"vocab.{name}"], "".join(v + "\n" for v in vocab))
        files["vocabularies"][name] = file
    for name, tokenizer in sorted(artifacts.tokenizers.items()):
        file = f"tokenizer.{name}.json"
        written[f"tokenizer.{name}"] = lake.artifact(dataset, version, file)
        _write(lake, written[f"tokenizer.{name}"], tokenizer)
        files["tokenizers"][name] = file
    index = {"format": FORMAT, "rows": artifacts.rows, "boundaries": artifacts.boundaries,
             "stats": artifacts.stats, **files}
    written["features"] = lake.artifact(dataset, version, INDEX_NAME)
    _write(lake, written["features"], json.dumps(index, sort_keys=True, indent=2) + "\n")
    return written


def load_artifacts(lake, dataset: str, version: str) -> Artifacts:
    """Read what :func:`save_artifacts` wrote.

    Raises:
        FileNotFoundError: no index (nothing saved, or a save that did not finish).
        ValueError: an index of another format.
    """
    return read_artifacts(lake.artifact(dataset, version, INDEX_NAME))


def read_artifacts(index_uri: str) -> Artifacts:
    """Read saved artifacts from their index's URI (a dataset manifest's ``artifacts["features"]``).

    Raises:
        FileNotFoundError: no index (nothing saved, or a save that did not finish).
        ValueError: an index of another format.
    """
    from records.uri import join, parent_and_name, resolve

    fs, index_path = resolve(index_uri)
    folder, index_name = parent_and_name(index_path)
    if not fs.exists(index_path):
        raise FileNotFoundError(f"{index_uri}: no feature artifacts (run features.analyze and "
                                "save_artifacts first)")

    def read(file: str) -> str:
        with fs.open(join(folder, file), "rb") as handle:
            return handle.read().decode("utf-8")

    index = json.loads(read(index_name))
    if index.get("format") != FORMAT:
        raise ValueError(f"{index_uri}: format {index.get('format')!r}, expected {FORMAT!r}")
    vocabularies = {}
    for name, file in index["vocabularies"].items():
        values = read(file).split("\n")
        vocabularies[name] = values[:-1]  # every value ends in "\n"
    return Artifacts(vocabularies=vocabularies, boundaries=index["boundaries"],
                     stats=index["stats"], rows=index["rows"],
                     tokenizers={n: read(f) for n, f in index["tokenizers"].items()})
