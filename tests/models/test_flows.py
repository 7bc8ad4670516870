"""models.flows: exact inverses, log-determinants equal to autograd's, bits/dim falls."""

from __future__ import annotations

import math

import pytest
import torch

from models.flow_config import FlowConfig
from models.flows import DiagonalScale, Flow, bits_per_dim, dequantize, squeeze, unsqueeze

CONFIGS = {
    "nice": FlowConfig(coupling="additive", in_channels=3, image_size=4, levels=2, steps=2,
                       hidden_channels=8),
    "glow": FlowConfig(coupling="affine", in_channels=3, image_size=4, levels=2, steps=2,
                       hidden_channels=8),
}


def randomized(cfg: FlowConfig) -> Flow:
    """A flow whose every layer does something (no identity-at-init shortcuts)."""
    torch.manual_seed(0)
    flow = Flow(cfg).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    flow.train()
    flow(torch.randn(8, 3, 4, 4, dtype=torch.float64))  # actnorm's data-dependent init
    return flow.eval()


def test_squeeze_is_invertible_and_moves_2x2_blocks_to_channels():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    s = squeeze(x)
    assert s.shape == (2, 12, 2, 2) and torch.equal(unsqueeze(s), x)
    assert s[0, :4, 0, 0].tolist() == [x[0, 0, 0, 0], x[0, 0, 0, 1], x[0, 0, 1, 0], x[0, 0, 1, 1]]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_x_to_z_to_x_within_1e_4(name):
    flow = randomized(CONFIGS[name]).float()
    x = torch.rand(5, 3, 4, 4) * 2 - 1
    z, _ = flow(x)
    assert z.shape == (5, 48)
    assert (flow.inverse(z) - x).abs().max() < 1e-4


@pytest.mark.parametrize("name", list(CONFIGS))
def test_log_determinant_equals_autograds_jacobian(name):
    flow = randomized(CONFIGS[name])
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64) * 2 - 1

    def f(v: torch.Tensor) -> torch.Tensor:
        return flow(v.view(1, 3, 4, 4))[0][0]

    jac = torch.autograd.functional.jacobian(f, x.flatten())  # (48, 48)
    _, expected = torch.linalg.slogdet(jac)
    _, logdet = flow(x)
    assert float(logdet[0].detach()) == pytest.approx(float(expected), abs=1e-6)
    if name == "glow":
        assert abs(float(expected)) > 0.1  # actnorm, 1x1 convs and couplings change volume


def test_bits_per_dim_of_the_standard_normal_prior_at_init():
    cfg = FlowConfig(coupling="additive", image_size=4, levels=1, steps=1, hidden_channels=4)
    flow = Flow(cfg).eval()  # zero-initialised couplings and scale: z = squeeze(y)
    y = dequantize(torch.zeros(2, 3, 4, 4))
    log_py = flow.log_prob(y)
    expected = -0.5 * (y.pow(2) + math.log(2 * math.pi)).flatten(1).sum(1)
    assert torch.allclose(log_py, expected, atol=1e-5)
    bpd = bits_per_dim(log_py, cfg.dims)
    assert torch.allclose(bpd, -(expected + 48 * math.log(2 / 256)) / (48 * math.log(2)))


def test_dequantize_stays_in_the_pixels_bin():
    u = torch.randint(0, 256, (4, 3, 4, 4))
    x = u.float() / 127.5 - 1  # what the task's [-1, 1] normalization gives
    y = dequantize(x)
    assert ((y + 1) * 128 >= u).all() and ((y + 1) * 128 < u + 1).all()


@pytest.mark.parametrize("coupling", ["additive", "affine"])
def test_training_lowers_bits_per_dim_and_samples_invert(coupling):
    torch.manual_seed(0)
    flow = Flow(FlowConfig(coupling=coupling, image_size=8, levels=2, steps=2,
                           hidden_channels=16))
    x = (torch.rand(16, 3, 8, 8) > 0.5).float() * 1.6 - 0.8  # two-level images: learnable
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss, _ = flow.loss(x)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first - 0.5  # 8.8 -> 8.1 (NICE), 8.7 -> 7.5 (Glow)
    samples = flow.eval().sample(4, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4, 3, 8, 8) and samples.abs().max() <= 1


def test_nice_scaling_layer_starts_at_each_dimensions_inverse_std_and_only_once():
    cfg = FlowConfig(coupling="additive", image_size=4, levels=1, steps=1, hidden_channels=4)
    flow = Flow(cfg)  # couplings start as the identity: z = squeeze(y) before the scale
    y = torch.randn(256, 3, 4, 4) * torch.linspace(0.05, 2.0, 48).view(1, 3, 4, 4)
    z, logdet = flow(y)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(48), atol=1e-4)
    assert torch.allclose(logdet, flow.scale.log_scale.sum().expand(256))
    before = flow.scale.log_scale.detach().clone()
    flow(y * 10)  # a later batch does not re-initialise
    assert torch.equal(flow.scale.log_scale, before) and bool(flow.scale.initialized)


def test_nice_scaling_layer_floors_the_std_of_constant_dimensions():
    scale = DiagonalScale(4, min_std=1e-3)
    z = torch.zeros(8, 4)
    z[:, 0] = torch.arange(8.0)
    scale(z)
    assert torch.allclose(scale.log_scale[1:], torch.full((3,), -math.log(1e-3)))


def test_a_checkpoint_with_the_bare_log_scale_parameter_loads_as_initialised():
    cfg = FlowConfig(coupling="additive", image_size=4, levels=1, steps=1, hidden_channels=4)
    state = {k: v for k, v in Flow(cfg).state_dict().items() if not k.startswith("scale.")}
    state["log_scale"] = torch.full((48,), 0.5)  # the layout before DiagonalScale
    flow = Flow(cfg)
    flow.load_state_dict(state)
    y = torch.randn(4, 3, 4, 4)
    flow(y)  # training mode, yet the loaded scale stays
    assert torch.allclose(flow.scale.log_scale, torch.full((48,), 0.5))
    assert bool(flow.scale.initialized)
