"""Training-time densities: ranges, moments, reproducibility, the shift identity."""

from __future__ import annotations

import math

import pytest
import torch

from dualsci.diffusion import (
    BetaTime,
    EDMPath,
    LogitNormalTime,
    LogNormalSigmaTime,
    ModeTime,
    RectifiedFlowPath,
    UniformTime,
    shift_time,
)

N = 20_000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "dist",
    [UniformTime(), UniformTime(stratified=True), LogitNormalTime(), ModeTime(1.29),
     LogNormalSigmaTime(EDMPath()), BetaTime(), BetaTime(style="gr00t")],
    ids=lambda d: type(d).__name__,
)
def test_range_shape_and_reproducibility(dist):
    t = dist.sample(N, generator=_gen())
    assert t.shape == (N,) and t.dtype == torch.float32
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert torch.equal(t, dist.sample(N, generator=_gen()))


def test_uniform_moments_and_stratification():
    t = UniformTime().sample(N, generator=_gen())
    assert float(t.mean()) == pytest.approx(0.5, abs=4 * math.sqrt(1 / 12 / N))
    strat = UniformTime(stratified=True).sample(8, generator=_gen())
    assert torch.equal(torch.floor(strat * 8), torch.arange(8, dtype=torch.float32))


def test_logit_normal_median_and_shifted_mean():
    assert float(LogitNormalTime().sample(N, generator=_gen()).median()) == pytest.approx(0.5, abs=0.01)
    t = LogitNormalTime(mean=1.0, std=0.5).sample(N, generator=_gen())
    assert float(t.median()) == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.01)


def test_mode_time_scale_zero_is_uniform_and_positive_scale_concentrates_mid():
    u = ModeTime(0.0).sample(N, generator=_gen())
    assert float(((u - 0.5).abs() < 0.25).float().mean()) == pytest.approx(0.5, abs=0.02)
    m = ModeTime(1.29).sample(N, generator=_gen())
    assert float(((m - 0.5).abs() < 0.25).float().mean()) > 0.6
    with pytest.raises(ValueError, match="scale"):
        ModeTime(3.0)


@pytest.mark.parametrize("path", [EDMPath(), RectifiedFlowPath()], ids=["edm", "rf"])
def test_log_normal_sigma_log_moments(path):
    t = LogNormalSigmaTime(path, p_mean=-1.2, p_std=1.2).sample(N, generator=_gen()).double()
    log_sigma = torch.log(path.sigma_tilde(t))
    assert float(log_sigma.mean()) == pytest.approx(-1.2, abs=0.05)
    assert float(log_sigma.std()) == pytest.approx(1.2, abs=0.05)


def test_beta_styles_mean_and_support():
    pi0 = BetaTime(1.5, 1.0, 0.999).sample(N, generator=_gen())
    assert float(pi0.min()) >= 0.001 - 1e-7
    assert float(pi0.mean()) == pytest.approx(0.999 * 0.6 + 0.001, abs=0.01)  # Beta(1.5, 1) mean 0.6
    gr00t = BetaTime(1.5, 1.0, 0.999, style="gr00t").sample(N, generator=_gen())
    assert float(gr00t.mean()) == pytest.approx(0.6 / 0.999, abs=0.01)
    with pytest.raises(ValueError, match="style"):
        BetaTime(style="dust")


def test_shift_time_scales_sigma_tilde_on_rf():
    rf = RectifiedFlowPath()
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    for s in (0.5, 3.0):
        assert torch.allclose(rf.sigma_tilde(shift_time(t, s)), s * rf.sigma_tilde(t))
    assert torch.equal(shift_time(t, 1.0), t)
