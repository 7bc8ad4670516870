"""The generative kinds through the CLI: images → encode → train (every kind, preset tiny) →
tokens (VQGAN) → an LM prior on the codes → generate → the report's sample grids."""

from __future__ import annotations

import io

import pytest
from image_lake_testlib import image_lake
from PIL import Image

from shardforge.cli import main

TRAIN = "train: {steps: 4, batch_size: 8, warmup_steps: 1, log_every: 2}"
GENERATIVE_MODELS = f"""
  gan:
    kind: vqgan
    preset: tiny
    {TRAIN}
  vae_gauss:
    kind: vae
    preset: tiny
    {TRAIN}
  vae_gumbel:
    kind: vae
    preset: tiny
    model: {{latent: gumbel, straight_through: true}}
    {TRAIN}
  nice:
    kind: flow
    preset: tiny
    model: {{coupling: additive}}
    {TRAIN}
  glow:
    kind: flow
    preset: tiny
    model: {{coupling: affine}}
    {TRAIN}
  rf:
    kind: rectified_flow
    preset: tiny
    {TRAIN}
  prior:
    kind: lm
    preset: tiny
    tokens_of: gan
    model: {{block_size: 80}}
    train: {{steps: 3, batch_size: 2, warmup_steps: 1, log_every: 1}}
"""


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return image_lake(tmp_path_factory.mktemp("generative"), GENERATIVE_MODELS)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("model", ["gan", "vae_gauss", "vae_gumbel", "nice", "glow", "rf"])
def test_every_generative_kind_trains_from_the_shards(lake, model):
    root, common = lake
    assert main(["train", model, *common, "--device", "cpu"]) == 0
    [ckpt] = (root / "models" / model).glob("*/ckpt.pt")
    assert (ckpt.parent / "metrics.jsonl").stat().st_size > 0
    grid = Image.open(ckpt.parent / "samples.png")  # what the report shows
    assert grid.mode == "RGB" and grid.size[0] > 32


@pytest.mark.slow
@pytest.mark.integration
def test_stage_two_generates_decodable_images_and_the_report_shows_them(lake):
    import torch

    from records.manifest import load_manifest, manifest_sha256
    from shardforge.report_html import collect_report_data, render_report

    root, common = lake
    if not list((root / "models" / "gan").glob("*/ckpt.pt")):
        assert main(["train", "gan", *common, "--device", "cpu"]) == 0
    assert main(["train", "prior", *common, "--device", "cpu"]) == 1  # no codes yet: says so
    assert main(["tokens", "gan", *common]) == 0
    [tokens] = (root / "records" / "gan-tokens").glob("v=*")
    info = load_manifest(tokens.as_uri()).config
    assert info["kind"] == "vqgan" and info["code_grid"] == [8, 8]  # 32 px / 4
    # stage two through the CLI: `tokens_of: gan` trains the LM on those code shards
    assert main(["train", "prior", *common, "--device", "cpu"]) == 0
    [prior_ckpt] = (root / "models" / "prior").glob("*/ckpt.pt")
    ckpt = torch.load(prior_ckpt, map_location="cpu", weights_only=False)
    assert ckpt["model_config"]["vocab_size"] == info["vocab_size"]
    assert ckpt["dataset_manifest_sha256"] == manifest_sha256(tokens.as_uri())
    assert main(["generate", "gan", *common, "--prior", str(prior_ckpt), "--n", "6",
                 "--top-k", "8"]) == 0
    [png] = (root / "models" / "gan").glob("*/samples-prior.png")
    image = Image.open(io.BytesIO(png.read_bytes()))
    assert image.size == (6 * 34 + 2, 34 + 2)  # 6 images of 32 px, 2 px gaps
    assert len(set(image.getdata())) > 10  # decoded codes, not a blank canvas

    # a prior trained on other shards is refused
    assert main(["generate", "gan", *common, "--prior", str(png.parent / "ckpt.pt")]) == 1

    run_dir = png.parent
    summary = {"run_id": "r", "stages": [{"stage": "train gan", "outputs": [
        f"file://{run_dir}/ckpt.pt"], "rows_in": 0, "rows_out": 0, "quarantined": 0,
        "duplicates_dropped": 0}]}
    from core.lake import Lake

    data = collect_report_data(Lake(f"file://{root}"), summary, database="shardforge",
                               dataset_uri=None, text_feature=None, vocab_size=None)
    assert sorted(data["samples"]["train gan"]) == ["samples-prior.png", "samples.png"]
    html = render_report(data)
    assert html.count("src='data:image/png;base64,") == 2
