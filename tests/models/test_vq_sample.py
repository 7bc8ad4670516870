"""models.vq_sample, models.png and models.sample_grid: code grids from an LM, decoded, drawn."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from vision_testlib import tiny_vqvae, write_images

from models.kinds import train_model
from models.lm import DecoderLM, LMConfig
from models.png import encode_png, image_grid
from models.sample_grid import write_sample_grid
from models.train_config import TrainConfig
from models.vq_sample import decode_codes, sample_codes
from models.vqvae import VQVAE


def lm(vocab: int = 19, block: int = 32) -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(LMConfig.preset("tiny", vocab_size=vocab, block_size=block)).eval()


def test_codes_come_from_the_code_ids_only_and_repeat_with_the_seed():
    model = lm()
    sample = lambda seed, **kw: sample_codes(  # noqa: E731
        model, 5, grid=(2, 3), codebook_size=16, generator=torch.Generator().manual_seed(seed),
        **kw)
    codes = sample(0)
    assert codes.shape == (5, 2, 3) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    assert torch.equal(codes, sample(0)) and not torch.equal(codes, sample(1))
    assert sample(0, top_k=1).unique(dim=0).shape[0] == 1  # greedy: every image the same


def test_a_confident_prior_is_followed():
    model = lm()
    logits = torch.zeros(19)
    logits[3 + 7] = 20.0  # code 7
    logits[0] = 100.0  # the pad id, outside the codes: never sampled however likely
    model.head = lambda h: logits.expand(h.shape[0], 19)  # the LM always says "code 7"
    codes = sample_codes(model, 2, grid=(2, 2), codebook_size=16, temperature=0.5,
                         generator=torch.Generator().manual_seed(0))
    assert (codes == 7).all()


def test_refuses_what_the_lm_cannot_hold():
    with pytest.raises(ValueError, match="vocabulary"):
        sample_codes(lm(vocab=10), 1, grid=(2, 2), codebook_size=16)
    with pytest.raises(ValueError, match="block_size"):
        sample_codes(lm(block=8), 1, grid=(4, 4), codebook_size=16)


def test_png_grid_decodes_to_the_same_pixels():
    images = torch.rand(3, 3, 5, 4) * 2 - 1
    grid = image_grid(images, nrow=2, pad=1)
    assert grid.shape == (2 * 6 + 1, 2 * 5 + 1, 3)
    decoded = Image.open(io.BytesIO(encode_png(grid)))
    assert decoded.mode == "RGB" and (torch.from_numpy(__import__("numpy").asarray(decoded))
                                      == torch.from_numpy(grid)).all()
    expected = ((images[1].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0)
    assert torch.equal(torch.from_numpy(grid[1:6, 6:10].copy()), expected)


def test_decode_and_the_run_folders_sample_grid(tmp_path):
    images = write_images(tmp_path, train=8, eval=4)
    run = train_model("vqvae", dataset_uri=images, out_uri=(tmp_path / "vq").as_uri(),
                      model_config=tiny_vqvae(), train_config=TrainConfig(
                          kind="vqvae", steps=2, batch_size=4, device="cpu", progress=False))
    vq = VQVAE(tiny_vqvae()).eval()
    out = decode_codes(vq, torch.randint(0, 16, (2, 4, 4)))
    assert out.shape == (2, 3, 16, 16) and out.abs().max() <= 1
    uri = write_sample_grid(run.checkpoint_uri, images, n=4)
    png = Image.open(uri.removeprefix("file://"))
    assert png.size == (4 * 18 + 2, 2 * 18 + 2)  # 4 images over their 4 reconstructions
