"""The Frechet distance between two sets of images, on a trained classifier's features.

FID (Heusel et al. 2017) fits a Gaussian to each set's embeddings and measures

    FD = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

Inception weights cannot be downloaded here, so the embedding is that of
:mod:`models.perceptual`: a classifier trained on the image shards (or seeded random
features); its numbers compare models scored with the same network, never with published
FIDs. ``tr (S_1 S_2)^{1/2}`` is computed without a general matrix square root:
``S_1 S_2`` is similar to the symmetric PSD matrix ``A = S_1^{1/2} S_2 S_1^{1/2}``, so its
eigenvalues are ``A``'s and the trace is ``sum_i sqrt(lambda_i(A))`` (two ``eigh`` in
float64; no scipy needed on a GPU host).

The statistics are additive (count, sum, sum of outer products), so evaluation sums them
over batches and ranks like any eval metric and finishes with :func:`fd_from_sums`.
"""

from __future__ import annotations

import torch

from models.perceptual import ImageFeatures, from_checkpoint

__all__ = ["feature_net", "feature_sums", "frechet_distance", "gaussian_stats", "fd_from_sums"]

_NETS: dict[tuple[str | None, int], ImageFeatures] = {}


def feature_net(uri: str | None, in_channels: int, device: torch.device) -> ImageFeatures:
    """The (cached) frozen feature network of :func:`models.perceptual.from_checkpoint` on
    ``device``; evaluation builds it once per process, not per batch."""
    key = (uri, in_channels)
    if key not in _NETS:
        _NETS[key] = from_checkpoint(uri, in_channels)
    return _NETS[key].to(device)


def feature_sums(features: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    """Additive statistics of embeddings ``features`` (N, F): ``{prefix}_n``, ``{prefix}_sum``
    (F,) and ``{prefix}_outer`` (F, F), in float64."""
    f = features.detach().double()
    return {f"{prefix}_n": torch.tensor(float(f.shape[0]), dtype=torch.float64, device=f.device),
            f"{prefix}_sum": f.sum(0), f"{prefix}_outer": f.t() @ f}


def gaussian_stats(sums: dict[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean (F,), covariance (F, F))`` from :func:`feature_sums` (summed).

    Raises:
        ValueError: fewer than two embeddings.
    """
    n = float(sums[f"{prefix}_n"])
    if n < 2:
        raise ValueError(f"{prefix}: a covariance needs >= 2 embeddings, got {n:g}")
    mu = sums[f"{prefix}_sum"].double() / n
    cov = (sums[f"{prefix}_outer"].double() - n * torch.outer(mu, mu)) / (n - 1)
    return mu, cov


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((s + s.t()) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.t()


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor,
                     cov2: torch.Tensor) -> float:
    """FD between N(mu1, cov1) and N(mu2, cov2) (float64 eigen-decompositions).

    Raises:
        ValueError: shapes that do not match.
    """
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
        raise ValueError(f"shapes do not match: mu {tuple(mu1.shape)} {tuple(mu2.shape)}, "
                         f"cov {tuple(cov1.shape)} {tuple(cov2.shape)}")
    mu1, mu2, cov1, cov2 = (t.double().cpu() for t in (mu1, mu2, cov1, cov2))
    root1 = _psd_sqrt(cov1)
    a = root1 @ cov2 @ root1  # symmetric PSD, similar to cov1 @ cov2
    tr_sqrt = torch.linalg.eigvalsh((a + a.t()) / 2).clamp_min(0).sqrt().sum()
    fd = (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_sqrt
    return float(fd.clamp_min(0))


def fd_from_sums(sums: dict[str, torch.Tensor], real: str = "real", fake: str = "fake"
                 ) -> float | None:
    """FD between the ``real`` and ``fake`` statistics of ``sums``; None with < 2 of either."""
    if float(sums.get(f"{real}_n", 0)) < 2 or float(sums.get(f"{fake}_n", 0)) < 2:
        return None
    return frechet_distance(*gaussian_stats(sums, real), *gaussian_stats(sums, fake))
