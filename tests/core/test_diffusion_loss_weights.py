"""Loss weights on the x0 error, each checked on its own against the error it claims to equal."""

from __future__ import annotations

import pytest
import torch

from dualsci.diffusion import EDMPath, EDMPrecond, EpsParam, RectifiedFlowPath, VelocityParam, VParam, VPPath, weight

PATHS = [RectifiedFlowPath(), VPPath("linear"), VPPath("cosine"), EDMPath()]
T = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95], dtype=torch.float64)


def _target_error_ratio(param, path):
    """‖F̂ − F‖² / ‖x̂0 − x0‖² per sample, where F̂ is the output that decodes to a perturbed x̂0."""
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(5, 6, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g, dtype=torch.float64)
    x0_hat = x0 + torch.randn(5, 6, generator=g, dtype=torch.float64)
    x_t = path.q_sample(x0, T, noise)
    a, s = path.alpha(T)[:, None], path.sigma(T)[:, None]
    F_hat = param.target(x0_hat, (x_t - a * x0_hat) / s, x_t, T, path)
    assert torch.allclose(param.to_x0(F_hat, x_t, T, path), x0_hat)
    F = param.target(x0, noise, x_t, T, path)
    return ((F_hat - F) ** 2).sum(1) / ((x0_hat - x0) ** 2).sum(1)


@pytest.mark.parametrize("path", PATHS, ids=repr)
@pytest.mark.parametrize(
    "name,param", [("eps", EpsParam()), ("v", VParam()), ("flow", VelocityParam()), ("edm", EDMPrecond(0.5))]
)
def test_weight_equals_plain_target_mse(name, param, path):
    assert torch.allclose(weight(name, path, T, sigma_data=0.5), _target_error_ratio(param, path), rtol=1e-6)


def test_named_closed_forms():
    rf, vp = RectifiedFlowPath(), VPPath("linear")
    snr = vp.alpha(T) ** 2 / vp.sigma(T) ** 2
    assert torch.allclose(weight("eps", vp, T), snr)
    assert torch.allclose(weight("v", vp, T), 1 / vp.sigma(T) ** 2)
    assert torch.allclose(weight("v", vp, T), snr + 1)
    assert torch.allclose(weight("flow", rf, T), 1 / T**2)
    st = vp.sigma_tilde(T)
    assert torch.allclose(weight("edm", vp, T, sigma_data=0.5), 1 / st**2 + 1 / 0.25)
    assert torch.equal(weight("unit", vp, T), torch.ones_like(T))


def test_min_snr_clips_at_gamma():
    vp = VPPath("linear")
    w = weight("min_snr", vp, T, gamma=5.0)
    assert torch.allclose(w, torch.minimum(weight("eps", vp, T), torch.tensor(5.0, dtype=torch.float64)))
    assert float(w.max()) == 5.0


def test_soft_min_snr_is_a_soft_minimum_of_snr_and_inverse_sigma_data_squared():
    path, sd = EDMPath(), 0.5
    w = weight("soft_min_snr", path, T, sigma_data=sd)
    hard = torch.minimum(weight("eps", path, T), torch.tensor(1 / sd**2, dtype=torch.float64))
    assert torch.all(w <= hard) and torch.all(w >= hard / 2)
    assert torch.allclose(w, 1 / (path.sigma_tilde(T) ** 2 + sd**2))


def test_unknown_name_lists_allowed():
    with pytest.raises(ValueError, match="loss_weight='snr'.*'min_snr'"):
        weight("snr", RectifiedFlowPath(), T)
