"""Every diffusion component on an accelerator (skipped without CUDA): no device or dtype mix-ups."""

from __future__ import annotations

import pytest
import torch

from dualsci.diffusion import (
    SAMPLERS,
    BernoulliProcess,
    BetaTime,
    CategoricalProcess,
    CFGDenoiser,
    EDMPath,
    EDMPrecond,
    EpsParam,
    GaussianDenoiser,
    GaussianObjective,
    LogitNormalTime,
    LogNormalSigmaTime,
    RectifiedFlowPath,
    UniformTime,
    VelocityParam,
    VPPath,
    asynchronous,
    per_sample_noise,
    sample_generators,
    sample_joint,
    time_grid,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEV = torch.device("cuda")


@pytest.mark.parametrize(
    "path,param,dist",
    [(VPPath("cosine"), EpsParam(), UniformTime(stratified=True)),
     (EDMPath(), EDMPrecond(), LogNormalSigmaTime(EDMPath())),
     (RectifiedFlowPath(), VelocityParam(), LogitNormalTime())],
    ids=["vp", "edm", "rf"],
)
def test_objective_and_samplers_on_cuda(path, param, dist):
    obj = GaussianObjective(path, param, dist, loss_weight="min_snr")
    gen = torch.Generator(device=DEV).manual_seed(0)
    x0 = torch.randn(4, 6, 8, device=DEV)
    t = obj.sample_time(4, generator=gen, device=DEV)
    x_t, noise = obj.corrupt(x0, t, generator=gen)
    x_in, c_noise = obj.net_input(x_t, t)
    F = torch.randn_like(x_in)
    loss = obj.loss(F, x0, x_t, noise, t, mask=torch.ones(4, 6, dtype=torch.bool, device=DEV))
    assert loss.device.type == "cuda" and loss.shape == (4,) and torch.isfinite(loss).all()

    def net_fn(x_in, c_noise):
        assert x_in.dtype == torch.float32 and c_noise.dtype == torch.float32 and x_in.is_cuda
        return 0.1 * x_in

    den = GaussianDenoiser(net_fn, obj)
    sig = time_grid(6, path)
    seeds = [1, 2, 3, 4]
    for name, fn in SAMPLERS.items():
        x = float(sig[0]) * per_sample_noise((4, 6, 8), seeds, device=DEV)
        out = fn(den, x, sig, generator=sample_generators(seeds, device=DEV), churn=1.0)
        assert out.is_cuda and torch.isfinite(out).all(), name


def test_discrete_joint_guidance_and_beta_on_cuda():
    gen = torch.Generator(device=DEV).manual_seed(0)
    x = BernoulliProcess().sample(lambda x, t: torch.zeros_like(x), (2, 5), 4, generator=gen, device=DEV)
    assert x.is_cuda
    c = CategoricalProcess(3).sample(lambda x, t: torch.zeros(*x.shape, 3, device=DEV), (2, 5), 4,
                                     generator=gen, device=DEV)
    assert c.is_cuda
    rf = RectifiedFlowPath()
    known = torch.zeros(2, 5, dtype=torch.bool, device=DEV)
    known[:, 0] = True
    a, b, nfe = sample_joint(lambda xa, ta, xb, tb: (0 * xa, 0 * xb), torch.randn(2, 5, 3, device=DEV),
                             torch.randn(2, 4, 3, device=DEV), asynchronous(2, 3), rf, rf, solver="heun",
                             known_a=known, return_nfe=True)
    assert a.is_cuda and b.is_cuda and nfe == 10
    guided = CFGDenoiser(lambda x, s, cond: x + cond, 3.0, torch.zeros(3, device=DEV), interval=(0.0, 1.0))
    assert guided(torch.randn(2, 3, device=DEV), torch.rand(2, device=DEV), cond=torch.ones(2, 3, device=DEV)).is_cuda
    assert BetaTime().sample(5, generator=gen, device=DEV).is_cuda
