"""The Beam image pipeline on the DirectRunner: raw images → clean_images + quarantine.

Corpora are a handful of images, made here with PIL or by the sample writer, so each
pipeline run takes a second or two.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.accounting import ReconciliationError
from core.config import load_config
from core.lake import Lake
from pipelines.beam.image_io import TABLES
from pipelines.beam.images import build_clean_images, run, run_images
from pipelines.validate.checks import check_clean_images
from shardforge.sample_images import SHAPES, write_images

pytestmark = pytest.mark.integration

DT = "2026-11-01"
OPTIONS = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]


def _png(seed=0, size=(40, 30), mode="RGB", shift=0, **save) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = rng.integers(0, 256, (h, w, 3)).astype(np.int16) + shift
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert(mode).save(
        buf, format="PNG", **save)
    return buf.getvalue()


def _mask(size=(40, 30), cls=1, mode="L") -> bytes:
    w, h = size
    ids = np.zeros((h, w), np.uint8)
    ids[h // 4: h // 2, w // 4: w // 2] = cls
    buf = io.BytesIO()
    Image.fromarray(ids).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def _corpus(lake: Lake, files: dict[str, bytes], manifest: list, name="manifest.jsonl"):
    folder = lake.local_path(lake.raw("images", DT))
    folder.mkdir(parents=True)
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    if name.endswith(".csv"):
        text = "image,label,mask\n" + "".join(f"{row}\n" for row in manifest)
    else:
        text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in manifest)
    (folder / name).write_text(text)
    return folder


def _config(lake: Lake, **images):
    cfg = load_config(lake_root=lake.root)
    return cfg.model_copy(update={"images": cfg.images.model_copy(update=images)})


def _table(lake: Lake, table: str) -> list[dict]:
    return pq.read_table(lake.local_path(lake.table("shardforge", table, DT))).to_pylist()


def _name(uri: str) -> str:
    return uri.rsplit("/dt=2026-11-01/", 1)[1]


def test_pure_transform_with_create_and_assert_that():
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    cfg = load_config().images

    def source(line, name, data, label="circle", mask=None):
        return {"line": line, "locator": f"manifest.jsonl:line {line}", "source": f"mem://{name}",
                "label": label, "mask_source": None if mask is None else f"mem://m-{name}",
                "data": data, "mask": mask, "error": None}

    sources = [
        source(1, "a.png", _png(1), mask=_mask()),
        source(2, "b.png", _png(2), label="square"),
        source(3, "c.png", _png(1, compress_level=1), mask=_mask()),  # same pixels, new bytes
        source(4, "d.png", _png(2, shift=4), label="square"),          # a brightness shift
        source(5, "e.png", _png(3, mode="L")),
        source(6, "f.png", None),
    ]
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", *OPTIONS])) as p:
        out = build_clean_images(p | "CreateSources" >> beam.Create(sources), rules=cfg)
        assert_that(out.images | "ImageKeys" >> beam.Map(
            lambda r: (r["source_path"], r["label"], len(r["image"]), r["mask"] is None)),
            equal_to([("mem://a.png", "circle", 32 * 32 * 3, False),
                      ("mem://b.png", "square", 32 * 32 * 3, True)]), label="CheckImages")
        assert_that(out.quarantine | "QuarantineKeys" >> beam.Map(
            lambda r: (r["source"], r["reason"], r["stage"])),
            equal_to([("mem://e.png", "mode-not-allowed", "validate"),
                      ("mem://f.png", "missing-file", "read")]), label="CheckQuarantine")
        assert_that(out.duplicates | "DuplicateKeys" >> beam.Map(
            lambda r: (r["source_path"], r["kind"], r["duplicate_of"])),
            equal_to([("mem://c.png", "exact", "mem://a.png"),
                      ("mem://d.png", "near", "mem://b.png")]), label="CheckDuplicates")


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    """The sample writer's corpus (every injected defect) through run_images, twice."""
    lake = Lake(str(tmp_path_factory.mktemp("images-lake")))
    folder = lake.local_path(lake.raw("images", DT))

    def write(name, data):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)

    dirty = write_images(write, 12, np.random.default_rng([0, 3]))
    cfg = _config(lake)
    first = run_images(cfg, DT)
    root = lake.local_path(lake.warehouse())
    snapshot = {p.relative_to(root).as_posix(): p.read_bytes()
                for p in sorted(root.rglob("*")) if p.is_file()}
    second = run_images(cfg, DT)
    return lake, cfg, dirty, first, second, snapshot


def test_sample_corpus_every_injected_defect_is_caught(sample_run):
    lake, _, dirty, counts, _, _ = sample_run
    assert sorted(dirty.values()) == sorted(
        ["truncated-png", "exact-duplicate", "near-duplicate", "grayscale", "tiny"])
    expected_quarantine = {"truncated-png": "truncated", "grayscale": "mode-not-allowed",
                           "tiny": "too-small"}
    quarantine = {_name(r["source"]): r["reason"] for r in _table(lake, "image_quarantine")}
    assert quarantine == {name: expected_quarantine[d] for name, d in dirty.items()
                          if d in expected_quarantine}
    duplicates = {_name(r["source_path"]): r["kind"] for r in _table(lake, "image_duplicates")}
    assert duplicates == {name: d.split("-")[0] for name, d in dirty.items()
                          if d.endswith("duplicate")}
    clean = _table(lake, "clean_images")
    assert {_name(r["source_path"]) for r in clean} == {
        f"img-{i:05d}.png" for i in range(1, 13)} - set(dirty)
    assert (counts.rows_in, counts.rows_out, counts.quarantined, counts.duplicates_dropped) == (
        12, 7, 3, 2)
    assert counts.duplicates_by_kind == {"exact": 1, "near": 1}


def test_clean_rows_hold_raw_pixels_and_masks_and_pass_the_gate(sample_run, tmp_path):
    lake, cfg, *_ = sample_run
    clean = _table(lake, "clean_images")
    assert [r["image_id"] for r in clean] == sorted(r["image_id"] for r in clean)
    for row in clean:
        assert (row["height"], row["width"], row["channels"]) == (32, 32, 3)
        pixels = np.frombuffer(row["image"], np.uint8).reshape(32, 32, 3)
        assert pixels.std() > 0
        ids = set(np.frombuffer(row["mask"], np.uint8).tolist())
        assert ids == {0, SHAPES.index(row["label"]) + 1}  # the labelled shape survives
    result = check_clean_images([lake.table("shardforge", "clean_images", DT)], height=32,
                                width=32, labels=cfg.images.labels)
    assert result.success


def test_rerun_gives_the_same_bytes_and_leaves_no_staging(sample_run):
    lake, _, _, first, second, snapshot = sample_run
    assert first == second
    root = lake.local_path(lake.warehouse())
    again = {p.relative_to(root).as_posix(): p.read_bytes()
             for p in sorted(root.rglob("*")) if p.is_file()}
    assert again == snapshot
    for table in TABLES:
        assert sorted(p.name for p in (root / "shardforge.db" / table).iterdir()) == [f"dt={DT}"]
        assert (root / "shardforge.db" / table / f"dt={DT}" / "_SUCCESS").exists()
    reconcile = json.loads(snapshot[f"shardforge.db/clean_images/dt={DT}/_reconcile.json"])
    assert reconcile["rows_in"] == 12 and reconcile["quarantined_by_reason"] == {
        "mode-not-allowed": 1, "too-small": 1, "truncated": 1}


def test_every_file_level_reason_and_a_missing_file(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    files = {
        "ok.png": _png(1), "masks/ok.png": _mask(),
        "empty.png": b"", "text.png": b"hello, not a png",
        "wide.png": _png(2, size=(200, 30)), "big.png": _png(3, size=(600, 500)),
        "rgb-mask.png": _png(4), "masks/rgb-mask.png": _mask(mode="RGB"),
        "odd-mask.png": _png(5), "masks/odd-mask.png": _mask(size=(30, 40)),
        "many-classes.png": _png(6), "masks/many-classes.png": _mask(cls=9),
        "no-mask.png": _png(7), "hex.png": _png(8),
    }
    manifest = [
        {"image": "ok.png", "label": "circle", "mask": "masks/ok.png"},
        {"image": "gone.png", "label": "circle"},
        {"image": "empty.png", "label": "circle"},
        {"image": "text.png", "label": "circle"},
        {"image": "wide.png", "label": "circle"},
        {"image": "big.png", "label": "circle"},
        {"image": "rgb-mask.png", "label": "circle", "mask": "masks/rgb-mask.png"},
        {"image": "odd-mask.png", "label": "circle", "mask": "masks/odd-mask.png"},
        {"image": "many-classes.png", "label": "circle", "mask": "masks/many-classes.png"},
        {"image": "no-mask.png", "label": "circle", "mask": "masks/absent.png"},
        {"image": "hex.png", "label": "hexagon"},
        "{truncated json",
        {"image": "../escape.png", "label": "circle"},
    ]
    _corpus(lake, files, manifest)
    counts = run_images(_config(lake, max_side=512), DT)
    reasons = {(r["locator"], r["reason"]) for r in _table(lake, "image_quarantine")}
    assert reasons == {(f"manifest.jsonl:line {n}", reason) for n, reason in [
        (2, "missing-file"), (3, "empty-file"), (4, "undecodable"), (5, "bad-aspect"),
        (6, "too-large"), (7, "mask-mode"), (8, "mask-size-mismatch"),
        (9, "mask-class-out-of-range"), (10, "mask-missing"), (11, "unknown-label"),
        (12, "bad-manifest-row"), (13, "bad-manifest-row")]}
    gone = next(r for r in _table(lake, "image_quarantine") if r["reason"] == "missing-file")
    assert gone["source"].endswith("/gone.png") and gone["bytes"] == 0
    assert [_name(r["source_path"]) for r in _table(lake, "clean_images")] == ["ok.png"]
    assert (counts.rows_in, counts.rows_out, counts.quarantined) == (13, 1, 12)


def test_csv_manifest_through_run_argv_with_passthrough_options(tmp_path, capsys):
    lake = Lake(str(tmp_path / "lake"))
    _corpus(lake, {"a.png": _png(1), "b.png": _png(2), "masks/a.png": _mask()},
            ["a.png,circle,masks/a.png", "b.png,square,"], name="manifest.csv")
    config = tmp_path / "conf.yaml"
    config.write_text("images: {manifest: manifest.csv}\n"
                      "beam: {runner: DirectRunner, options: {direct_num_workers: 1}}\n")
    counts = run(["--config", str(config), "--lake", lake.root, "--dt", DT,
                  "--direct_running_mode=in_memory"])
    assert [(c.rows_in, c.rows_out) for c in counts] == [(2, 2)]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["job"] == "clean_images"
    rows = {_name(r["source_path"]): r for r in _table(lake, "clean_images")}
    assert rows["b.png"]["mask"] is None and len(rows["a.png"]["mask"]) == 32 * 32
    assert check_clean_images([lake.table("shardforge", "clean_images", DT)], height=32,
                              width=32, labels=["circle", "square", "triangle"]).success


def test_counts_that_do_not_add_up_fail_loudly_and_commit_nothing(tmp_path, monkeypatch):
    import pipelines.beam.images as images

    lake = Lake(str(tmp_path / "lake"))
    _corpus(lake, {"a.png": _png(1)}, [{"image": "a.png", "label": "circle"}])
    # A row the pipeline never saw: the outputs account for one row less than came in.
    monkeypatch.setattr(images, "count_manifest_rows", lambda uri: 2)
    with pytest.raises(ReconciliationError, match=r"rows in 2 != out 1 .* \(\+1 unaccounted\)"):
        run_images(_config(lake), DT)
    warehouse = lake.local_path(lake.warehouse())
    assert [p for p in warehouse.rglob("*") if p.is_file()] == []


def test_a_partition_without_manifest_is_named(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(FileNotFoundError, match=r"raw/images/dt=2026-11-01/manifest.jsonl"):
        run_images(_config(lake), DT)


def test_an_empty_manifest_commits_empty_partitions(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    _corpus(lake, {}, [])
    counts = run_images(_config(lake), DT)
    assert (counts.rows_in, counts.rows_out, counts.quarantined, counts.duplicates_dropped) == (
        0, 0, 0, 0)
    for table, (schema, _) in TABLES.items():
        written = pq.read_table(lake.local_path(lake.table("shardforge", table, DT)))
        assert written.num_rows == 0 and written.schema.names == schema.names
