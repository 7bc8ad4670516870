"""The picture a trained image model leaves in its run folder: ``samples.png``.

A grid of what the model makes from the eval split's first images (reconstructions for
the autoencoders, samples for the generative models: :func:`models.vision_generative.sample_grid`),
written next to ``ckpt.pt``; the run's report shows it.
"""

from __future__ import annotations

import posixpath

import torch

from models.checkpoint import load_checkpoint
from models.png import encode_png, image_grid
from models.task_vision import VISION_MODELS
from models.vision_data import decode_images, image_spec, to_model_input
from models.vision_generative import sample_grid
from records.uri import open_uri

__all__ = ["GRID_KINDS", "write_sample_grid"]

GRID_KINDS = ("vqvae", "vqgan", "vae", "flow", "rectified_flow")


def write_sample_grid(checkpoint_uri: str, dataset_uri: str, *, n: int = 8, split: str = "eval",
                      device: str = "cpu", seed: int = 0, name: str = "samples.png") -> str:
    """Draws ``n`` images of the checkpoint's model into ``<run folder>/<name>``; returns its URI.

    Raises:
        ValueError: a kind without a grid, or a split without images.
    """
    from records.manifest import load_manifest
    from records.reader import RecordDataset

    ckpt = load_checkpoint(checkpoint_uri)
    kind = ckpt["extra"].get("kind")
    if kind not in GRID_KINDS:
        raise ValueError(f"no sample grid for a {kind!r} model (only {GRID_KINDS})")
    spec = VISION_MODELS[kind]
    config = spec.config_type(**ckpt["model_config"])
    model = spec.build(config)
    model.load_state_dict(ckpt["model"])
    dev = torch.device(device)
    model.to(dev).eval()
    if split not in load_manifest(dataset_uri).splits:
        split = "train"
    labels = spec.labels
    reader = RecordDataset(dataset_uri, split, batch_size=n, shuffle=False, rank=0, world_size=1,
                           feature_spec=image_spec(labels=labels), bytes_as="uint8")
    batch = next(iter(reader), None)
    if batch is None:
        raise ValueError(f"{dataset_uri}: split {split!r} holds no image")
    images, y = decode_images(batch, labels=labels)
    mean, std = spec.normalization(config)
    size = ckpt["train_config"].get("image_size") or spec.image_size(config)
    x = to_model_input(images.to(dev), mean=mean, std=std, size=size)
    grid = sample_grid(model, x, y.to(dev) if y is not None else None, seed=seed)
    uri = posixpath.join(posixpath.dirname(checkpoint_uri), name)
    with open_uri(uri, "wb") as f:
        f.write(encode_png(image_grid(grid, nrow=x.shape[0])))
    return uri
