"""VQ-VAE codes -> a token dataset in the posts layout -> the decoder LM trains on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vision_testlib import tiny_effnet, tiny_vqvae, write_images

from models.checkpoint import load_checkpoint
from models.kinds import train_model
from models.lm import LMConfig
from models.train_config import TrainConfig
from models.vision_data import decode_images, image_spec, to_model_input
from models.vq_tokens import export_vq_tokens
from models.vqvae import VQVAE, VQVAEConfig
from records.reader import RecordDataset

CFG = TrainConfig(kind="vqvae", steps=4, batch_size=4, warmup_steps=1, device="cpu",
                  progress=False)


@pytest.fixture
def trained(tmp_path):
    images = write_images(tmp_path, train=8, eval=5)
    result = train_model("vqvae", dataset_uri=images, out_uri=(tmp_path / "vq").as_uri(),
                         model_config=tiny_vqvae(), train_config=CFG)
    return images, result.checkpoint_uri


def test_export_writes_the_codes_and_the_lm_trains_on_them(tmp_path, trained):
    images, ckpt_uri = trained
    out = (tmp_path / "records" / "vq-tokens" / "v=1").as_uri()
    manifest = export_vq_tokens(checkpoint_uri=ckpt_uri, dataset_uri=images, out_uri=out,
                                batch_size=3)
    K = tiny_vqvae().codebook_size
    assert {s: i.records for s, i in manifest.splits.items()} == {"train": 8, "eval": 5}
    assert manifest.config["vocab_size"] == K + 3 and manifest.config["code_grid"] == [4, 4]
    assert manifest.inputs == [images, ckpt_uri]

    ckpt = load_checkpoint(ckpt_uri)
    model = VQVAE(VQVAEConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    source = next(iter(RecordDataset(images, "eval", batch_size=5,
                                     feature_spec=image_spec(labels=True), bytes_as="uint8")))
    x, labels = decode_images(source, labels=True)
    codes = model.eval().encode(to_model_input(x, mean=(0.5,) * 3, std=(0.5,) * 3))  # (5, 4, 4)
    tokens = next(iter(RecordDataset(out, "eval", batch_size=5)))
    assert torch.equal(tokens["input_ids"], codes.flatten(1) + 3)  # row-major, shifted
    assert tokens["input_ids_lengths"].tolist() == [16] * 5
    assert torch.equal(tokens["label"].flatten(), labels)

    result = train_model("lm", dataset_uri=out, out_uri=(tmp_path / "lm").as_uri(),
                         model_config=LMConfig.preset("tiny", vocab_size=K + 3, block_size=16),
                         train_config=TrainConfig(steps=3, batch_size=2, eos_id=2, warmup_steps=1,
                                                  device="cpu", progress=False))
    assert result.steps == 3 and np.isfinite(result.final_loss)
    assert result.eval_metrics["step"] == 3  # the token dataset keeps the images' eval split
    assert result.eval_metrics["tokens"] == 5 * 16  # 5 images of 16 codes + eos: 5 windows


def test_export_is_deterministic_and_refuses_other_models(tmp_path, trained):
    images, ckpt_uri = trained
    shas = []
    for name in ("a", "b"):
        m = export_vq_tokens(checkpoint_uri=ckpt_uri, dataset_uri=images, splits=["train"],
                             out_uri=(tmp_path / name).as_uri())
        shas.append([s.sha256 for s in m.splits["train"].shards])
    assert shas[0] == shas[1]
    effnet = train_model("efficientnet", dataset_uri=images,
                         out_uri=(tmp_path / "en").as_uri(), model_config=tiny_effnet(),
                         train_config=TrainConfig(kind="efficientnet", steps=1, batch_size=4,
                                                  device="cpu", progress=False))
    with pytest.raises(ValueError, match="not a VQ-VAE"):
        export_vq_tokens(checkpoint_uri=effnet.checkpoint_uri, dataset_uri=images,
                         out_uri=(tmp_path / "c").as_uri())
