"""From measured per-core rates to a YARN plan: ``python benchmarks/scaling.py --project FILE``.

Not a test. Reads the JSON ``benchmarks/scaling.py --json`` wrote, takes the largest size
measured, and projects a day of ``--posts-per-day`` posts onto YARN under the assumptions of
:class:`Assumptions` (each named, with its default and why). docs/SCALING.md is this
output for 1B posts a day, with the assumptions spelled out.

The arithmetic, per day (P posts, k of them kept as documents, D days of history):

* core-seconds = P / clean rate + k·P / encode rate + D·k·P / documents-rebuild rate, each
  rate measured per core and divided by the cluster ``efficiency``; the documents rebuild
  rewrites every document of the history (README: "the rebuild rewrites the two narrow
  tables whole"), so its term grows with D;
* cores = core-seconds of day 1 / the window, rounded up to whole executors;
* shuffle = P x clean shuffle bytes per post + k·P x encode shuffle bytes per document;
* table sizes = measured bytes per row x rows (documents and the dedup index grow by k·P a day);
* executor memory = :func:`shardforge.engine_sizing.size_spark` for the day's raw input.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["Assumptions", "Measured", "measured_from", "project", "render"]

GiB, TiB = 1024 ** 3, 1024 ** 4


@dataclass(frozen=True)
class Measured:
    """Per-core rates and per-row sizes at the largest size the benchmark ran."""

    posts: int
    cores: int
    clean_per_core_s: float  # input posts per second per core: ingest → clean → documents
    encode_per_core_s: float  # documents per second per core
    rebuild_per_core_s: float  # documents per second per core of the documents rebuild step
    kept: float  # documents / posts
    raw_bytes_per_post: float
    clean_shuffle_per_post: float
    encode_shuffle_per_doc: float
    documents_bytes_per_doc: float
    index_bytes_per_doc: float
    peak_heap_mib: int
    peak_python_rss_mib: int


@dataclass(frozen=True)
class Assumptions:
    """What the projection takes as given; every field is named in docs/SCALING.md."""

    posts_per_day: int = 1_000_000_000
    window_h: float = 4.0  # the day's batch (clean + encode) must finish within this
    executor_cores: int = 4  # YARN's usual sweet spot: HDFS client throughput, GC per heap
    efficiency: float = 0.7  # cluster per-core rate / measured local rate (network shuffle,
    # HDFS reads and writes, stragglers, task scheduling across hosts)
    history_days: int = 365  # documents and the dedup index keep a year of days


def measured_from(result: dict) -> Measured:
    """:class:`Measured` from ``scaling.py --json`` output: its largest size."""
    size = str(max(int(s) for s in result["results"]))
    clean, encode = result["results"][size]["clean"], result["results"][size]["encode"]
    cores, posts, docs = clean["cores"], clean["posts"], encode["posts"]
    rebuild_s = clean["steps_s"].get("documents", 0.0)
    tables = clean["table_bytes"]
    return Measured(
        posts=posts, cores=cores,
        clean_per_core_s=clean["posts_per_s_per_core"],
        encode_per_core_s=encode["posts_per_s_per_core"],
        rebuild_per_core_s=docs / rebuild_s / cores if rebuild_s else math.inf,
        kept=docs / posts,
        raw_bytes_per_post=clean["raw_bytes"] / posts,
        clean_shuffle_per_post=clean["shuffle_bytes"] / posts,
        encode_shuffle_per_doc=encode["shuffle_bytes"] / docs,
        documents_bytes_per_doc=tables["documents"] / docs,
        index_bytes_per_doc=tables["dedup_index"] / docs,
        peak_heap_mib=clean["peak_heap_mib"], peak_python_rss_mib=clean["peak_python_rss_mib"])


def project(m: Measured, a: Assumptions) -> dict:
    """The YARN plan for ``a.posts_per_day`` from the rates in ``m``."""
    from shardforge.engine_sizing import InputSize, Resources, size_spark

    posts, docs = a.posts_per_day, a.posts_per_day * m.kept
    clean_cs = posts / (m.clean_per_core_s * a.efficiency)
    encode_cs = docs / (m.encode_per_core_s * a.efficiency)
    rebuild_cs_per_day_of_history = docs / (m.rebuild_per_core_s * a.efficiency)
    day1 = clean_cs + encode_cs + rebuild_cs_per_day_of_history
    cores = math.ceil(day1 / (a.window_h * 3600))
    executors = math.ceil(cores / a.executor_cores)
    cores = executors * a.executor_cores
    raw = posts * m.raw_bytes_per_post
    sized = size_spark(InputSize(int(raw), int(raw), posts, 0),
                       Resources(executors, a.executor_cores, 64 * 1024))
    last = clean_cs + encode_cs + a.history_days * rebuild_cs_per_day_of_history
    return {
        "assumptions": asdict(a), "measured": asdict(m),
        "raw_input_gib_per_day": raw / GiB,
        "documents_per_day": docs,
        "core_hours": {"clean": clean_cs / 3600, "encode": encode_cs / 3600,
                       "documents_rebuild_day_1": rebuild_cs_per_day_of_history / 3600,
                       f"documents_rebuild_day_{a.history_days}":
                           a.history_days * rebuild_cs_per_day_of_history / 3600},
        "executors": executors, "cores": cores,
        "executor_memory_mib": sized.executor_mib, "executor_overhead_mib": sized.overhead_mib,
        "shuffle_partitions": sized.shuffle_partitions,
        "shuffle_gib_per_day": (posts * m.clean_shuffle_per_post + docs * m.encode_shuffle_per_doc) / GiB,
        "documents_gib": {"day_1": docs * m.documents_bytes_per_doc / GiB,
                          f"day_{a.history_days}": a.history_days * docs * m.documents_bytes_per_doc / GiB},
        "dedup_index_gib": {"day_1": docs * m.index_bytes_per_doc / GiB,
                            f"day_{a.history_days}": a.history_days * docs * m.index_bytes_per_doc / GiB},
        "wall_h": {"day_1": day1 / cores / 3600, f"day_{a.history_days}": last / cores / 3600},
        "cores_for_window_on_last_day": math.ceil(last / (a.window_h * 3600)),
    }


def render(plan: dict) -> str:
    """The plan as the markdown table docs/SCALING.md shows."""
    a, last = plan["assumptions"], f"day_{plan['assumptions']['history_days']}"
    hours = plan["core_hours"]
    rows = [
        ("posts a day / documents kept", f"{a['posts_per_day']:,} / {plan['documents_per_day']:,.0f}"),
        ("raw input a day", f"{plan['raw_input_gib_per_day']:,.0f} GiB"),
        ("core-hours: clean / encode", f"{hours['clean']:,.0f} / {hours['encode']:,.0f}"),
        ("core-hours: documents rebuild, day 1 / " + last.replace("_", " "),
         f"{hours['documents_rebuild_day_1']:,.0f} / {hours[f'documents_rebuild_{last}']:,.0f}"),
        ("executors x cores", f"{plan['executors']} x {a['executor_cores']} = {plan['cores']} cores"),
        ("executor memory (sized)", f"{plan['executor_memory_mib']:,} MiB heap + "
                                    f"{plan['executor_overhead_mib']:,} MiB overhead"),
        ("shuffle partitions (sized)", f"{plan['shuffle_partitions']:,}"),
        ("shuffle written a day", f"{plan['shuffle_gib_per_day']:,.0f} GiB"),
        ("documents table, day 1 / " + last.replace("_", " "),
         f"{plan['documents_gib']['day_1']:,.1f} / {plan['documents_gib'][last]:,.0f} GiB"),
        ("dedup index, day 1 / " + last.replace("_", " "),
         f"{plan['dedup_index_gib']['day_1']:,.1f} / {plan['dedup_index_gib'][last]:,.0f} GiB"),
        ("expected wall time, day 1 / " + last.replace("_", " "),
         f"{plan['wall_h']['day_1']:.1f} h / {plan['wall_h'][last]:.1f} h"),
        ("cores to stay in the window on " + last.replace("_", " "),
         f"{plan['cores_for_window_on_last_day']:,}"),
    ]
    return "\n".join(["| quantity | projection |", "| --- | --- |",
                      *(f"| {k} | {v} |" for k, v in rows)])
