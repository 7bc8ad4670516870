"""Export the VQ-VAE code indices of an image dataset as a token dataset for the LM.

The first stage of the two-stage recipe (VQ-VAE-2, VQGAN): a trained VQ-VAE turns
every image into an (h, w) grid of code indices; read row-major they are a token
sequence, and a decoder LM trained on those sequences is the second stage (a prior
over images). The output has the layout of the posts dataset, so
:func:`models.kinds.train_model` (kind ``lm``) reads it unchanged:

    input_ids  VarLen int64   the h*w codes, row-major, each + ``id_offset``
    length     int64 [1]      h*w
    label      int64 [1]      the image's class (when the source has labels)

Ids ``0 .. id_offset-1`` stay free for the special tokens (by default pad 0, bos 1,
eos 2, as ``features.spec.RESERVED_IDS``), so the LM trains with
``vocab_size = codebook_size + id_offset`` and ``eos_id = 2`` — both are recorded in
the manifest's ``config``. Splits are read in order (no shuffle) and the writer
commits atomically, so the same checkpoint and images give the same bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from models.checkpoint import load_checkpoint
from models.task_vision import VISION_MODELS
from models.vision_data import decode_images, image_spec, to_model_input
from models.vqgan import load_vq

__all__ = ["DEFAULT_ID_OFFSET", "EOS_ID", "export_vq_tokens"]

DEFAULT_ID_OFFSET = 3  # pad 0, bos 1, eos 2 (features.spec.RESERVED_IDS) come first
EOS_ID = 2


def export_vq_tokens(
    *, checkpoint_uri: str, dataset_uri: str, out_uri: str, dataset: str = "vq-tokens",
    version: str = "1", splits: Sequence[str] | None = None, batch_size: int = 64,
    device: str = "cpu", id_offset: int = DEFAULT_ID_OFFSET,
    max_records_per_shard: int | None = 100_000,
) -> Any:
    """Writes the code indices of ``dataset_uri``'s images as a records/ token dataset.

    Args:
        checkpoint_uri: a ``ckpt.pt`` of a VQ-VAE or VQGAN run (:func:`models.kinds.train_model`);
            its model config and train config (``image_size``) are used.
        dataset_uri: the image dataset version folder.
        out_uri: the token dataset version folder to write (replaced atomically).
        dataset, version: recorded in the new manifest.
        splits: which splits to export; None = all of the source's.
        batch_size: images per forward pass.
        device: ``"cpu"`` or ``"cuda"``.
        id_offset: added to every code index (ids below it are the special tokens).
        max_records_per_shard: roll shards after this many records.

    Returns:
        The committed :class:`records.manifest.Manifest`.

    Raises:
        ValueError: the checkpoint is not a VQ-VAE's or VQGAN's, a negative ``id_offset``, or images
            the VQ-VAE cannot take.
    """
    from records.example_codec import encode_example
    from records.manifest import load_manifest, manifest_sha256
    from records.reader import RecordDataset
    from records.spec import FixedLenFeature, VarLenFeature
    from records.writer import DatasetWriter

    if isinstance(id_offset, bool) or not isinstance(id_offset, int) or id_offset < 0:
        raise ValueError(f"id_offset must be an int >= 0, got {id_offset!r}")
    ckpt = load_checkpoint(checkpoint_uri)
    kind = ckpt["extra"].get("kind")
    if kind not in ("vqvae", "vqgan"):
        raise ValueError(f"{checkpoint_uri} holds a {kind!r} model, not a VQ-VAE or VQGAN")
    model = load_vq(ckpt)  # a VQGAN's codes are those of its VQ-VAE part
    config = model.config
    dev = torch.device(device)
    model.to(dev).eval()
    mean, std = VISION_MODELS[kind].normalization(config)
    image_size = ckpt["train_config"].get("image_size")

    source = load_manifest(dataset_uri)
    labels = "label" in source.spec
    names = list(splits) if splits is not None else sorted(source.splits)
    spec = {"input_ids": VarLenFeature("int64"), "length": FixedLenFeature((1,), "int64")}
    if labels:
        spec["label"] = FixedLenFeature((1,), "int64")
    out_config: dict[str, Any] = {
        "codebook_size": config.codebook_size, "id_offset": id_offset,
        "vocab_size": config.codebook_size + id_offset, "eos_id": EOS_ID,
        "image_size": image_size, "vqvae": dataclasses.asdict(config), "kind": kind,
        "checkpoint_step": ckpt["step"], "source_manifest_sha256": manifest_sha256(dataset_uri),
    }
    writer = None  # opened at the first batch, when the code grid (h, w) is known
    try:
        for split in names:
            reader = RecordDataset(dataset_uri, split, batch_size=batch_size,
                                   feature_spec=image_spec(labels=labels), shuffle=False,
                                   rank=0, world_size=1, bytes_as="uint8")
            for batch in reader:
                images, label = decode_images(batch, labels=labels)
                x = to_model_input(images.to(dev), mean=mean, std=std, size=image_size)
                codes = model.encode(x)  # (B, h, w)
                if writer is None:
                    out_config["code_grid"] = list(codes.shape[1:])
                    writer = DatasetWriter(
                        uri=out_uri, dataset=dataset, version=str(version), feature_spec=spec,
                        max_records_per_shard=max_records_per_shard, config=out_config,
                        inputs=[dataset_uri, checkpoint_uri])
                ids = (codes.flatten(1) + id_offset).cpu().numpy()  # (B, h*w) row-major
                for row in range(ids.shape[0]):
                    example = {"input_ids": ids[row], "length": [ids.shape[1]]}
                    if label is not None:
                        example["label"] = [int(label[row])]
                    writer.write(split, encode_example(example))
        if writer is None:
            raise ValueError(f"{dataset_uri}: splits {names} hold no image to export")
        return writer.finish()
    except BaseException:
        if writer is not None:
            writer.abort()  # idempotent: finish() has aborted already if it failed
        raise
