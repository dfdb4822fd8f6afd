"""Parameterisations: x0 → target → x0 round trips, EDM preconditioning facts."""

from __future__ import annotations

import pytest
import torch

from dualsci.diffusion import EDMPath, EDMPrecond, EpsParam, RectifiedFlowPath, VelocityParam, VParam, VPPath, X0Param

PATHS = [RectifiedFlowPath(), VPPath("linear"), VPPath("cosine"), EDMPath()]
PARAMS = [EpsParam(), X0Param(), VParam(), VelocityParam(), EDMPrecond(), EDMPrecond(1.0, "v")]


@pytest.mark.parametrize("path", PATHS, ids=repr)
@pytest.mark.parametrize("param", PARAMS, ids=repr)
def test_round_trip_x0_target_x0(path, param):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 2, generator=g), torch.randn(4, 3, 2, generator=g)
    for t in (torch.tensor([0.05, 0.3, 0.6, 0.95]), torch.rand(4, 3, generator=g) * 0.9 + 0.05):
        x_t = path.q_sample(x0, t, noise)
        F = param.target(x0, noise, x_t, t, path)
        assert torch.allclose(param.to_x0(F, x_t, t, path), x0, atol=2e-4)
        x_in, c_noise = param.net_input(x_t, t, path)
        assert x_in.shape == x_t.shape and c_noise.shape == t.shape and x_in.dtype == x_t.dtype


def test_closed_forms_on_their_usual_paths():
    t = torch.tensor([0.2, 0.7])
    x0, noise = torch.randn(2, 5), torch.randn(2, 5)
    rf, vp = RectifiedFlowPath(), VPPath("linear")
    x_t = rf.q_sample(x0, t, noise)
    u = VelocityParam().target(x0, noise, x_t, t, rf)
    assert torch.allclose(u, noise - x0)
    assert torch.allclose(VelocityParam().to_x0(u, x_t, t, rf), x_t - t[:, None] * u, atol=1e-6)
    x_t = vp.q_sample(x0, t, noise)
    a, s = vp.alpha(t)[:, None], vp.sigma(t)[:, None]
    v = VParam().target(x0, noise, x_t, t, vp)
    assert torch.allclose(v, a * noise - s * x0)
    assert torch.allclose(VParam().to_x0(v, x_t, t, vp), a * x_t - s * v, atol=1e-5)


def test_edm_input_has_unit_variance_and_c_noise_is_quarter_log_sigma():
    path, param = EDMPath(), EDMPrecond(sigma_data=0.5)
    n = 20_000
    x0 = 0.5 * torch.randn(n, 1)
    t = torch.full((n,), 0.6)
    x_t = path.q_sample(x0, t, torch.randn(n, 1))
    x_in, c_noise = param.net_input(x_t, t, path)
    assert float(x_in.std()) == pytest.approx(1.0, rel=0.03)
    assert torch.allclose(c_noise, 0.25 * torch.log(path.sigma_tilde(t)))


def test_edm_v_prediction_with_unit_sigma_data_is_vp_v():
    vp = VPPath("scaled_linear")
    t = torch.tensor([0.1, 0.5, 0.9])
    x0, noise = torch.randn(3, 4), torch.randn(3, 4)
    x_t = vp.q_sample(x0, t, noise)
    edm_v = EDMPrecond(sigma_data=1.0, prediction="v")
    assert torch.allclose(edm_v.target(x0, noise, x_t, t, vp), VParam().target(x0, noise, x_t, t, vp), atol=1e-4)
    x_in, _ = edm_v.net_input(x_t, t, vp)
    assert torch.allclose(x_in, x_t, atol=1e-5)


def test_invalid_prediction_names_the_argument():
    with pytest.raises(ValueError, match="prediction='eps'"):
        EDMPrecond(prediction="eps")
