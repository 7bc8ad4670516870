"""Pure helpers of the Beam image pipeline: per-image rules, hashing, manifest parsing."""

from __future__ import annotations

import io
import itertools
import json
import random

import numpy as np
import pytest
from PIL import Image

from core.config import ImagesConfig
from pipelines.beam.image_dedup import near_pairs
from pipelines.beam.image_io import shard_of
from pipelines.beam.image_manifest import count_manifest_rows, parse_manifest
from pipelines.beam.image_ops import (
    REASONS,
    clean_image,
    fit_box,
    hamming,
    phash_bands,
    priority,
)

RULES = ImagesConfig(height=8, width=12, min_side=10, max_side=100, max_aspect=3.0,
                     labels=["circle", "square"])


def _png(mode="RGB", size=(40, 30), seed=0, **save) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="PNG", **save)
    return buf.getvalue()


def _mask(size=(40, 30), top=2, mode="L") -> bytes:
    w, h = size
    ids = (np.arange(w * h, dtype=np.uint8) % (top + 1)).reshape(h, w)
    buf = io.BytesIO()
    Image.fromarray(ids).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def _source(data=b"", mask=None, *, label="circle", masked=True, error=None) -> dict:
    return {"line": 3, "locator": "manifest.jsonl:line 3", "source": "file:///c/a.png",
            "label": label, "mask_source": "file:///c/m.png" if masked else None,
            "data": data, "mask": mask, "error": error}


GOOD = _png()


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (_source(error=("bad-manifest-row", "field 'label' …")), "bad-manifest-row"),
        (_source(data=None), "missing-file"),
        (_source(data=b""), "empty-file"),
        (_source(data=b"this is not an image"), "undecodable"),
        (_source(data=GOOD[: len(GOOD) // 2], mask=_mask()), "truncated"),
        (_source(data=_png(size=(8, 30))), "too-small"),
        (_source(data=_png(size=(101, 40))), "too-large"),
        (_source(data=_png(size=(95, 30))), "bad-aspect"),
        (_source(data=_png(mode="L")), "mode-not-allowed"),
        (_source(data=_png(mode="RGBA")), "mode-not-allowed"),
        (_source(data=GOOD, label="hexagon", mask=_mask()), "unknown-label"),
        (_source(data=GOOD, mask=None), "mask-missing"),
        (_source(data=GOOD, mask=b"junk"), "mask-undecodable"),
        (_source(data=GOOD, mask=_mask(mode="RGB")), "mask-mode"),
        (_source(data=GOOD, mask=_mask(size=(30, 40))), "mask-size-mismatch"),
        (_source(data=GOOD, mask=_mask(top=3)), "mask-class-out-of-range"),
    ],
)
def test_every_bad_source_gets_exactly_its_reason(source, reason):
    kind, row = clean_image(source, RULES)
    assert kind == "quarantine", row
    assert (row["reason"], row["stage"]) == (reason, REASONS[reason])
    assert row["source"] == "file:///c/a.png" and row["locator"] == "manifest.jsonl:line 3"
    assert row["bytes"] == len(source["data"] or b"") and row["detail"]


def test_quarantine_reasons_are_all_tested():
    tested = {"bad-manifest-row", "missing-file", "empty-file", "undecodable", "truncated",
              "too-small", "too-large", "bad-aspect", "mode-not-allowed", "unknown-label",
              "mask-missing", "mask-undecodable", "mask-mode", "mask-size-mismatch",
              "mask-class-out-of-range"}
    assert tested == set(REASONS)


def test_good_image_is_resized_to_raw_hwc_bytes_and_its_mask_with_nearest():
    kind, row = clean_image(_source(data=GOOD, mask=_mask(top=2)), RULES)
    assert kind == "image"
    assert (row["height"], row["width"], row["channels"]) == (8, 12, 3)
    assert len(row["image"]) == 8 * 12 * 3 and len(row["mask"]) == 8 * 12
    # NEAREST never invents a class id between two others.
    assert set(np.frombuffer(row["mask"], np.uint8).tolist()) <= {0, 1, 2}
    assert row["image_id"] == row["content_sha256"][:16] and len(row["phash"]) == 16
    assert (row["source_width"], row["source_height"], row["source_mode"]) == (40, 30, "RGB")
    expected = np.asarray(Image.open(io.BytesIO(GOOD)).resize((12, 8), Image.Resampling.BILINEAR))
    assert row["image"] == expected.tobytes()


def test_allowed_mode_is_converted_to_rgb_and_content_hash_ignores_the_encoding():
    rules = RULES.model_copy(update={"allowed_modes": ["RGB", "L"]})
    kind, gray = clean_image(_source(data=_png(mode="L"), masked=False), rules)
    assert kind == "image" and gray["channels"] == 3 and gray["source_mode"] == "L"
    assert gray["mask"] is None
    pixels = np.frombuffer(gray["image"], np.uint8).reshape(8, 12, 3)
    assert (pixels[..., 0] == pixels[..., 1]).all()
    # The same pixels written with other PNG settings: other file bytes, same content hash.
    again = _png(compress_level=1)
    assert again != GOOD
    a = clean_image(_source(data=GOOD, masked=False), RULES)[1]
    b = clean_image(_source(data=again, masked=False), RULES)[1]
    assert a["content_sha256"] == b["content_sha256"] and a["image"] == b["image"]


@pytest.mark.parametrize(
    ("size", "target", "fit", "expected"),
    [
        ((40, 30), (12, 8), "stretch", (12, 8, None)),
        ((40, 20), (10, 10), "center_crop", (20, 10, (5, 0, 15, 10))),
        ((20, 40), (10, 10), "center_crop", (10, 20, (0, 5, 10, 15))),
        ((30, 30), (10, 10), "center_crop", (10, 10, (0, 0, 10, 10))),
    ],
)
def test_fit_box(size, target, fit, expected):
    assert fit_box(*size, *target, fit) == expected


def test_center_crop_keeps_image_and_mask_aligned():
    rules = RULES.model_copy(update={"fit": "center_crop", "width": 10, "height": 10})
    # Left half class 1, right half class 2; a 40x20 source → 20x10 → middle 10x10.
    ids = np.zeros((20, 40), np.uint8)
    ids[:, :20], ids[:, 20:] = 1, 2
    rgb = np.stack([ids * 100] * 3, axis=-1).astype(np.uint8)
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, format="PNG")
    mask = io.BytesIO()
    Image.fromarray(ids).save(mask, format="PNG")
    kind, row = clean_image(_source(data=png.getvalue(), mask=mask.getvalue()), rules)
    assert kind == "image"
    out_mask = np.frombuffer(row["mask"], np.uint8).reshape(10, 10)
    assert (out_mask[:, :5] == 1).all() and (out_mask[:, 5:] == 2).all()
    red = np.frombuffer(row["image"], np.uint8).reshape(10, 10, 3)[..., 0]
    assert red[0, 0] == 100 and red[0, 9] == 200


def test_phash_bands_find_every_pair_within_the_distance():
    rng = random.Random(0)
    for max_distance in (0, 3, 6, 10):
        for _ in range(200):
            a = rng.getrandbits(64)
            b = a
            for bit in rng.sample(range(64), rng.randint(0, max_distance)):
                b ^= 1 << bit
            ha, hb = f"{a:016x}", f"{b:016x}"
            assert hamming(ha, hb) <= max_distance
            assert set(phash_bands(ha, max_distance)) & set(phash_bands(hb, max_distance))
    with pytest.raises(ValueError, match="more than the 64 hash bits"):
        phash_bands("0" * 16, 64)


def test_near_pairs_let_the_higher_priority_copy_win():
    rows = [{"image_id": i, "phash": p, "source_path": s, "source_width": w, "source_height": 10,
             "manifest_line": n}
            for i, p, s, w, n in [("a", "ffff0000ffff0000", "p/b.png", 10, 1),
                                  ("b", "ffff0000ffff0001", "p/a.png", 10, 2),
                                  ("c", "ffff0000ffff0003", "p/c.png", 20, 3),
                                  ("d", "0000ffff0000ffff", "p/d.png", 10, 4)]]
    members = [(priority(r), r["image_id"], r["phash"], r["source_path"]) for r in rows]
    pairs = sorted((loser, winner[1], winner[3]) for loser, winner in
                   near_pairs(((0, 0), members), 2))
    # c has the most pixels, so it outranks a and b; of a and b, the first path (b's) wins;
    # d is far from all of them.
    assert pairs == [("a", "b", 1), ("a", "c", 2), ("b", "c", 1)]


def test_parse_manifest_keeps_every_row_and_names_bad_ones():
    lines = [
        json.dumps({"image": "a.png", "label": "circle", "mask": "masks/a.png"}),
        "",
        "{not json",
        json.dumps({"image": "b.png"}),
        json.dumps({"image": "../../etc/passwd", "label": "x"}),
        json.dumps({"image": "sub/./c.png", "label": "square", "mask": ""}),
        json.dumps(["a list"]),
        json.dumps({"image": "hdfs://nn/x.png", "label": "x"}),
    ]
    entries = parse_manifest("\n".join(lines) + "\n", name="manifest.jsonl",
                             corpus_uri="file:///lake/raw/images/dt=2026-11-01")
    assert [e["line"] for e in entries] == [1, 3, 4, 5, 6, 7, 8]
    ok = entries[0]
    assert ok["source"] == "file:///lake/raw/images/dt=2026-11-01/a.png"
    assert ok["mask_source"] == "file:///lake/raw/images/dt=2026-11-01/masks/a.png"
    assert ok["error"] is None and ok["label"] == "circle"
    assert entries[4]["source"].endswith("/sub/c.png") and entries[4]["mask_source"] is None
    errors = {e["line"]: e["error"][1] for e in entries if e["error"]}
    assert sorted(errors) == [3, 4, 5, 7, 8]
    assert "not JSON" in errors[3] and "'label'" in errors[4] and "'image'" in errors[5]
    assert entries[1]["source"].endswith("/manifest.jsonl")  # no usable image path
    assert entries[2]["source"].endswith("/b.png")
    assert entries[1]["locator"] == "manifest.jsonl:line 3"


def test_csv_manifest_and_independent_row_count(tmp_path):
    text = "image,label,mask\na.png,circle,masks/a.png\n\nb.png,square,\n"
    entries = parse_manifest(text, name="manifest.csv", corpus_uri="file:///c")
    assert [(e["line"], e["label"], e["mask_source"]) for e in entries] == [
        (2, "circle", "file:///c/masks/a.png"), (4, "square", None)]
    (tmp_path / "manifest.csv").write_text(text)
    assert count_manifest_rows(str(tmp_path / "manifest.csv")) == 2
    (tmp_path / "manifest.jsonl").write_text('{"image": "a.png"}\n\nbroken\n')
    assert count_manifest_rows(str(tmp_path / "manifest.jsonl")) == 2
    with pytest.raises(ValueError, match=r"manifest.csv: the CSV header .* lacks \['label'\]"):
        parse_manifest("image,mask\na.png,\n", name="manifest.csv", corpus_uri="file:///c")


def test_shard_of_is_stable_and_spread():
    assert shard_of(("abc",), 7) == shard_of(("abc",), 7)
    counts = [0] * 4
    for key in itertools.islice(itertools.count(), 400):
        counts[shard_of((f"{key:016x}",), 4)] += 1
    assert min(counts) > 60


def test_manifest_and_bytes_are_read_through_fsspec_on_any_filesystem():
    import fsspec

    from pipelines.beam.image_manifest import manifest_entries, read_source

    # memory:// takes the code path hdfs:// takes: no local paths anywhere.
    fs = fsspec.filesystem("memory")
    root = "memory://image-corpus/dt=2026-11-01"
    fs.pipe({f"{root}/a.png": GOOD, f"{root}/masks/a.png": _mask(),
             f"{root}/manifest.jsonl": b'{"image": "a.png", "label": "circle", "mask": '
                                       b'"masks/a.png"}\n{"image": "b.png", "label": "square"}\n'})
    try:
        sources = [read_source(e) for e in manifest_entries(f"{root}/manifest.jsonl")]
        assert [clean_image(s, RULES)[0] for s in sources] == ["image", "quarantine"]
        assert sources[0]["data"] == GOOD and sources[1]["data"] is None
        with pytest.raises(FileNotFoundError, match="image manifest memory://"):
            manifest_entries("memory://image-corpus/nope/manifest.jsonl")
    finally:
        fs.rm("/image-corpus", recursive=True)
