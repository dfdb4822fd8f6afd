"""GaussianObjective loss equals its closed form; GaussianDenoiser maps the VE contract onto any path."""

from __future__ import annotations

import pytest
import torch

from dualsci.diffusion import (
    WEIGHT_NAMES,
    EDMPath,
    EDMPrecond,
    EpsParam,
    GaussianDenoiser,
    GaussianObjective,
    LogitNormalTime,
    RectifiedFlowPath,
    UniformTime,
    VelocityParam,
    VParam,
    VPPath,
    X0Param,
    weight,
)

PATHS = [RectifiedFlowPath(), VPPath("linear"), EDMPath()]
PARAMS = [EpsParam(), X0Param(), VParam(), VelocityParam(), EDMPrecond(0.5)]


def _batch(obj, shape=(4, 3, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=g)
    t = torch.tensor([0.1, 0.35, 0.6, 0.9])
    x_t, noise = obj.corrupt(x0, t, generator=g)
    F = torch.randn(shape, generator=g)
    return x0, x_t, noise, t, F


def test_eps_param_with_eps_weight_is_plain_eps_mse():
    obj = GaussianObjective(VPPath(), EpsParam(), UniformTime(), loss_weight="eps")
    x0, x_t, noise, t, F = _batch(obj)
    assert torch.equal(obj.loss(F, x0, x_t, noise, t), ((F - noise) ** 2).mean(dim=(1, 2)))


def test_flow_param_with_flow_weight_is_plain_velocity_mse():
    obj = GaussianObjective(RectifiedFlowPath(), VelocityParam(), LogitNormalTime(), loss_weight="flow")
    x0, x_t, noise, t, F = _batch(obj)
    assert torch.equal(obj.loss(F, x0, x_t, noise, t), ((F - (noise - x0)) ** 2).mean(dim=(1, 2)))


@pytest.mark.parametrize("path", PATHS, ids=repr)
@pytest.mark.parametrize("param", PARAMS, ids=repr)
@pytest.mark.parametrize("name", WEIGHT_NAMES)
def test_loss_realises_the_chosen_x0_weight(name, param, path):
    """Unit weight means w = 1 on ‖x̂0 − x0‖²; every weight w gives w(t)·x0-MSE whatever F predicts."""
    obj = GaussianObjective(path, param, UniformTime(), loss_weight=name)
    x0, x_t, noise, t, F = _batch(obj)
    x0_mse = ((obj.to_x0(F, x_t, t) - x0) ** 2).mean(dim=(1, 2))
    expected = weight(name, path, t.double(), sigma_data=0.5).float() * x0_mse
    assert torch.allclose(obj.loss(F, x0, x_t, noise, t), expected, rtol=1e-4)


def test_native_is_plain_target_mse():
    obj = GaussianObjective(RectifiedFlowPath(), VParam(), UniformTime(), loss_weight="native")
    x0, x_t, noise, t, F = _batch(obj)
    target = VParam().target(x0, noise, x_t, t, obj.path)
    assert torch.equal(obj.loss(F, x0, x_t, noise, t), ((F - target) ** 2).mean(dim=(1, 2)))


def test_mask_ignores_padded_tokens_and_per_token_time():
    obj = GaussianObjective(RectifiedFlowPath(), X0Param(), UniformTime())
    g = torch.Generator().manual_seed(0)
    x0, F = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    t = torch.rand(2, 5, generator=g)
    x_t, noise = obj.corrupt(x0, t, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    loss = obj.loss(F, x0, x_t, noise, t, mask=mask)
    F2 = F.clone()
    F2[0, 3:] += 100.0
    assert torch.equal(obj.loss(F2, x0, x_t, noise, t, mask=mask), loss)
    assert torch.allclose(loss[0], ((F[0, :3] - x0[0, :3]) ** 2).mean())
    sw = torch.rand(2, 5, generator=g)
    weighted = obj.loss(F, x0, x_t, noise, t, spatial_weight=sw)
    assert torch.allclose(weighted, (sw[..., None] * (F - x0) ** 2).mean(dim=(1, 2)))


def test_sample_time_and_invalid_weight():
    obj = GaussianObjective(RectifiedFlowPath(), X0Param(), UniformTime())
    assert obj.sample_time(7, generator=torch.Generator().manual_seed(0)).shape == (7,)
    with pytest.raises(ValueError, match="loss_weight='snr'"):
        GaussianObjective(RectifiedFlowPath(), X0Param(), UniformTime(), loss_weight="snr")


@pytest.mark.parametrize("path", PATHS, ids=repr)
@pytest.mark.parametrize("param", PARAMS, ids=repr)
def test_gaussian_denoiser_recovers_x0_from_an_oracle_network(path, param):
    """An oracle that outputs the exact target makes D(x̃, σ̃) return x0, so the σ̃ → t, x̃ → x_t mapping is right."""
    obj = GaussianObjective(path, param, UniformTime())
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, generator=g)
    t = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    sigma_tilde = path.sigma_tilde(t)
    x_ve = x0 + sigma_tilde[:, None].float() * torch.randn(3, 4, generator=g)
    seen = {}

    def oracle(x_in, c_noise):
        seen["dtypes"] = (x_in.dtype, c_noise.dtype)
        tt = path.t_of_sigma_tilde(sigma_tilde).float()
        x_t = path.from_ve(x_ve, tt)
        a, s = path.alpha(tt)[:, None], path.sigma(tt)[:, None]
        return param.target(x0, (x_t - a * x0) / s, x_t, tt, path)

    out = GaussianDenoiser(oracle, obj)(x_ve, sigma_tilde.float())
    assert torch.allclose(out, x0, atol=1e-3)
    assert seen["dtypes"] == (torch.float32, torch.float32)
