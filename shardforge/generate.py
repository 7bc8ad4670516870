"""``shardforge generate``: images from VQGAN's second stage, a code LM over a VQ model's codes.

    records/<vq>-tokens/v=<run_id>  (``shardforge tokens``: the codes, their grid and offsets)
    prior: an lm checkpoint trained on those shards   -> models.vq_sample.sample_codes
    models/<vq>/<run_id>/ckpt.pt                       -> models.vq_sample.decode_codes
    -> models/<vq>/<run_id>/samples-prior.png (a grid the run's report shows)

The prior must have been trained on exactly that token dataset: its checkpoint's
``dataset_manifest_sha256`` is checked against the manifest, so codes of one VQ model are
never decoded by another.
"""

from __future__ import annotations

from core.config import ConfigError, ShardforgeConfig
from core.lake import Lake
from shardforge.stages import StageReport
from shardforge.training import latest_model_run

__all__ = ["generate_images"]


def _prior_checkpoint(cfg: ShardforgeConfig, lake: Lake, prior: str) -> str:
    """A model entry's latest checkpoint, or ``prior`` itself (a checkpoint URI or run folder)."""
    from models.checkpoint import checkpoint_file

    if prior in cfg.models:
        return f"{lake.model_run(prior, latest_model_run(lake, prior))}/ckpt.pt"
    return checkpoint_file(prior)


def generate_images(cfg: ShardforgeConfig, lake: Lake, name: str, *, prior: str, run_id: str,
                    n: int = 16, temperature: float = 1.0, top_k: int = 0, seed: int = 0,
                    device: str = "cpu") -> StageReport:
    """Samples ``n`` code grids from ``prior`` and decodes them with ``models.<name>``'s run.

    Raises:
        ConfigError: ``name`` is not a vqvae / vqgan entry.
        FileNotFoundError: no token dataset for the run (run ``shardforge tokens`` first),
            or no prior checkpoint.
        ValueError: the prior was trained on other shards or is not an lm.
    """
    import torch

    from models.checkpoint import load_checkpoint
    from models.lm import DecoderLM, LMConfig
    from models.png import encode_png, image_grid
    from models.vq_sample import decode_codes, sample_codes
    from models.vqgan import load_vq
    from records.manifest import load_manifest, manifest_sha256
    from records.uri import open_uri

    if cfg.models.get(name) is None or cfg.models[name].kind not in ("vqvae", "vqgan"):
        raise ConfigError(f"{cfg.source}: models.{name}: not a vqvae or vqgan model "
                          f"(configured: {sorted(cfg.models)})")
    tokens_uri = lake.records(f"{name}-tokens", run_id)
    if not lake.fs.exists(lake.fs_path(f"{tokens_uri}/manifest.json")):
        raise FileNotFoundError(f"generate {name}: no token dataset {tokens_uri}; run "
                                f"`shardforge tokens {name} --run-id {run_id}` first")
    tokens = load_manifest(tokens_uri).config
    prior_uri = _prior_checkpoint(cfg, lake, prior)
    lm_ckpt = load_checkpoint(prior_uri)
    if lm_ckpt["extra"].get("kind") != "lm":
        raise ValueError(f"--prior {prior_uri} holds a {lm_ckpt['extra'].get('kind')!r} model, "
                         "not an lm")
    if lm_ckpt["dataset_manifest_sha256"] != manifest_sha256(tokens_uri):
        raise ValueError(f"--prior {prior_uri} was not trained on {tokens_uri} (manifest "
                         "sha256 differs): its tokens are not these codes")
    dev = torch.device(device)
    lm = DecoderLM(LMConfig(**lm_ckpt["model_config"]))
    lm.load_state_dict(lm_ckpt["model"])
    lm.to(dev).eval()
    vq_uri = f"{lake.model_run(name, run_id)}/ckpt.pt"
    vq = load_vq(load_checkpoint(vq_uri)).to(dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    codes = sample_codes(lm, n, grid=tuple(tokens["code_grid"]),
                         codebook_size=tokens["codebook_size"], id_offset=tokens["id_offset"],
                         eos_id=tokens["eos_id"], temperature=temperature, top_k=top_k,
                         generator=gen)
    images = decode_codes(vq, codes)  # (n, C, H, W) in [-1, 1]
    out = f"{lake.model_run(name, run_id)}/samples-prior.png"
    with open_uri(out, "wb") as f:
        f.write(encode_png(image_grid(images, nrow=min(8, n))))
    return StageReport(f"generate {name}", rows_in=n, rows_out=n, outputs=[out],
                       details={"prior": prior_uri, "codes": tokens_uri,
                                "distinct_codes": int(codes.unique().numel()),
                                "image_shape": list(images.shape[1:])})
