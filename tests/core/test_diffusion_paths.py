"""Gaussian paths: coefficients, q_sample moments, per-token broadcasting, the σ̃ inverse."""

from __future__ import annotations

import math

import pytest
import torch

from dualsci.diffusion import EDMPath, RectifiedFlowPath, VPPath

PATHS = {
    "rf": RectifiedFlowPath(),
    "vp_linear": VPPath("linear"),
    "vp_scaled_linear": VPPath("scaled_linear"),
    "vp_cosine": VPPath("cosine"),
    "edm": EDMPath(),
}


def test_rf_coefficients():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    path = RectifiedFlowPath()
    assert torch.equal(path.alpha(t), 1 - t)
    assert torch.equal(path.sigma(t), t)
    assert torch.allclose(path.sigma_tilde(t[:3]), t[:3] / (1 - t[:3]))
    assert math.isinf(float(path.sigma_tilde(t[3:])))


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "cosine"])
def test_vp_matches_discrete_cumprod_at_integer_steps(schedule):
    path = VPPath(schedule, T=1000)
    if schedule == "linear":
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    else:
        f = torch.cos((torch.arange(1001, dtype=torch.float64) / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    alpha_bar = torch.cumprod(1 - betas, 0)
    i = torch.tensor([1, 10, 500, 999, 1000])
    t = i.double() / 1000
    assert torch.allclose(path.alpha(t) ** 2, alpha_bar[i - 1], rtol=1e-9)
    assert torch.allclose(path.alpha(t) ** 2 + path.sigma(t) ** 2, torch.ones(5, dtype=torch.float64))
    assert float(path.alpha(torch.tensor(0.0))) == 1.0


def test_vp_known_endpoints():
    # guide core.md §3.1: linear ᾱ_T ≈ 4e-5; SD1.5 scaled-linear ᾱ_T ≈ 4.7e-3.
    one = torch.tensor(1.0, dtype=torch.float64)
    assert float(VPPath("linear").alpha(one) ** 2) == pytest.approx(4.04e-5, rel=0.02)
    assert float(VPPath("scaled_linear").alpha(one) ** 2) == pytest.approx(4.68e-3, rel=0.02)


def test_edm_karras_interpolation_endpoints():
    path = EDMPath()
    assert float(path.sigma(torch.tensor(0.0, dtype=torch.float64))) == pytest.approx(0.002)
    assert float(path.sigma(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(80.0)
    assert torch.equal(path.alpha(torch.rand(3)), torch.ones(3))


@pytest.mark.parametrize("name", list(PATHS))
def test_q_sample_mean_and_variance(name):
    path = PATHS[name]
    n = 20_000
    x0 = torch.full((n, 1), 0.7)
    for t_val in (0.1, 0.5, 0.9):
        t = torch.full((n,), t_val)
        noise = torch.randn(n, 1, generator=torch.Generator().manual_seed(1))
        x_t = path.q_sample(x0, t, noise)
        a, s = float(path.alpha(torch.tensor(t_val))), float(path.sigma(torch.tensor(t_val)))
        assert float(x_t.mean()) == pytest.approx(0.7 * a, abs=4 * s / math.sqrt(n))
        assert float(x_t.std()) == pytest.approx(s, rel=0.03)


@pytest.mark.parametrize("name", list(PATHS))
def test_per_token_time_broadcasts_over_trailing_dims(name):
    path = PATHS[name]
    x0, noise = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    t = torch.rand(2, 3) * 0.9
    x_t = path.q_sample(x0, t, noise)
    for b in range(2):
        for i in range(3):
            one = path.q_sample(x0[b, i][None], t[b, i][None], noise[b, i][None])
            assert torch.allclose(x_t[b, i], one[0])
    assert path.q_sample(x0, t[:, 0], noise).shape == x0.shape


@pytest.mark.parametrize("name", list(PATHS))
def test_t_of_sigma_tilde_round_trip(name):
    path = PATHS[name]
    t = torch.linspace(0.01, 0.99, 97, dtype=torch.float64)
    back = path.t_of_sigma_tilde(path.sigma_tilde(t))
    assert torch.allclose(back, t, atol=1e-9)


def test_t_of_sigma_tilde_clamps_and_handles_infinity():
    rf = RectifiedFlowPath()
    assert float(rf.t_of_sigma_tilde(torch.tensor(math.inf))) == 1.0
    assert float(rf.t_of_sigma_tilde(torch.tensor(0.0))) == 0.0
    edm = EDMPath()
    assert float(edm.t_of_sigma_tilde(torch.tensor(1e-5))) == 0.0
    assert float(edm.t_of_sigma_tilde(torch.tensor(1e3))) == 1.0


def test_ve_conversion_round_trip():
    path = VPPath("cosine")
    x_t, t = torch.randn(4, 5), torch.rand(4) * 0.9
    assert torch.allclose(path.from_ve(path.to_ve(x_t, t), t), x_t, atol=1e-6)


def test_invalid_schedule_names_the_argument():
    with pytest.raises(ValueError, match="schedule='quadratic'.*'linear'"):
        VPPath("quadratic")
