"""Dataset versions for the statistics and drift tests, written in process.

The encode's own worker and driver halves (route → write_group → commit_encoded: what every
engine runs) write a config's dataset version into a temporary lake.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa

from core.config import load_config
from core.lake import Lake
from features.artifacts import static_artifacts
from features.spec import load_spec
from features.split import assign
from features.statistics import SpecStatistics
from pipelines.encode.commit import commit_encoded
from pipelines.encode.shards import ShardPlan, route, split_by_gid, statistics_result, write_group
from records.writer import staging_uri_for

__all__ = ["SPLITS", "TOPICS", "encode_version", "posts_config", "posts_rows"]

ROOT = Path(__file__).resolve().parents[2]
SPLITS = {"train": 0.8, "eval": 0.2}
TOPICS = ["nlp", "cv", "data", "systems", "other"]


def posts_config(tmp_path: Path, version: str, drift: str = "") -> object:
    """A config of dataset ``posts`` v=``version`` in ``tmp_path/lake``; ``drift``: the
    ``validation.drift`` keys, as YAML flow text."""
    path = tmp_path / f"conf-{version}.yaml"
    path.write_text(f"lake: {{root: {tmp_path / 'lake'}}}\n"
                    f"feature_spec: {ROOT / 'conf' / 'features' / 'posts.yaml'}\n"
                    f"dataset: {{name: posts, version: '{version}', splits: {SPLITS},"
                    " shards: {train: 2, eval: 1}}\n"
                    f"validation:\n  drift: {{{drift}}}\n", encoding="utf-8")
    return load_config(path)


def posts_rows(n: int, *, topics=TOPICS, seed: int = 0, eval_words: int = 0) -> pa.RecordBatch:
    """Posts; ``eval_words`` > 0 gives the eval split's posts that many more words (skew)."""
    rng = random.Random(seed)
    keys = [f"doc-{seed}-{i:05d}" for i in range(n)]
    texts = []
    for key in keys:
        extra = eval_words if assign(key, SPLITS, {"train": 2, "eval": 1})[0] == "eval" else 0
        texts.append(" ".join(rng.choice(["spark", "beam", "关于", "lake"])
                              for _ in range(rng.randint(3, 6) + extra)))
    return pa.RecordBatch.from_pydict({"doc_id": keys, "text": texts,
                                       "topic": [rng.choice(topics) for _ in keys],
                                       "length": [len(t) for t in texts]})


def encode_version(cfg, batch: pa.RecordBatch) -> str:
    """Encode ``batch`` as the config's dataset version, in process; returns its URI."""
    lake, entry = Lake(cfg.lake.root), cfg.dataset
    spec = load_spec(cfg.feature_spec)
    plan = ShardPlan(dict(entry.splits), dict(entry.shards))
    staging = staging_uri_for(lake.records(entry.name, entry.version))
    statistics = SpecStatistics(spec, list(plan.shards))
    routed = route(batch, spec, None, plan, statistics)
    results = [statistics_result(statistics, [statistics.to_json(routed.statistics)])]
    for gid, part in split_by_gid(routed.payload):
        ordered = pa.Table.from_batches([part]).sort_by([("key", "ascending"), ("payload", "ascending")])
        results += write_group(gid=gid, batches=ordered.to_batches(), staging_uri=staging,
                               plan=plan, spec=spec, artifacts=None)
    return commit_encoded(lake=lake, staging_uri=staging, plan=plan, results=results,
                          rows_in=batch.num_rows, spec=spec, artifacts=static_artifacts(spec),
                          dataset=entry.name, version=entry.version).uri
