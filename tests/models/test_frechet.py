"""models.frechet: the Frechet distance against closed forms, and its additive statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from models.frechet import fd_from_sums, feature_sums, frechet_distance, gaussian_stats
from models.perceptual import PerceptualLoss, from_checkpoint


def test_diagonal_gaussians_match_the_closed_form():
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.0])
    s1, s2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    expected = float(((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum())
    assert expected == pytest.approx(5.0 + 4.0 + 1.0)  # |dmu|^2 = 5; (1-3)^2 + (2-1)^2 + 0
    assert frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)) == pytest.approx(expected)


def test_non_commuting_covariances_match_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    expected = ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean)
    got = frechet_distance(*(torch.from_numpy(v) for v in (m1, c1, m2, c2)))
    assert got == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(torch.from_numpy(m1), torch.from_numpy(c1), torch.from_numpy(m1),
                            torch.from_numpy(c1)) == pytest.approx(0.0, abs=1e-8)


def test_summed_batches_give_the_sample_mean_and_covariance():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(200, 4, generator=gen, dtype=torch.float64)
    fake = torch.randn(300, 4, generator=gen, dtype=torch.float64) * 2 + 1
    sums: dict[str, torch.Tensor] = {}
    for part in (real[:50], real[50:]):  # summed over batches, as the evaluation does
        for k, v in feature_sums(part, "real").items():
            sums[k] = sums[k] + v if k in sums else v
    sums.update(feature_sums(fake, "fake"))
    mu, cov = gaussian_stats(sums, "real")
    assert torch.allclose(mu, real.mean(0)) and torch.allclose(cov, torch.cov(real.t()))
    direct = frechet_distance(real.mean(0), torch.cov(real.t()), fake.mean(0), torch.cov(fake.t()))
    assert fd_from_sums(sums) == pytest.approx(direct)
    assert direct > 4  # the means differ by 1 in 4 dims, the stds by a factor 2
    assert fd_from_sums({k: v for k, v in sums.items() if k.startswith("real")}) is None


def test_random_features_are_seeded_and_the_perceptual_distance_sees_blur():
    a, b = from_checkpoint(None), from_checkpoint(None)
    assert a.source == "random"
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    loss = PerceptualLoss(a)
    assert loss(x, x).abs().max() < 1e-6
    assert (loss(x, blurred) > 0.01).all()
    assert a.embed(x).shape == (2, 32 + 64 + 128)
    assert not any(p.requires_grad for p in a.parameters()) and math.isfinite(float(loss(x, -x)[0]))
