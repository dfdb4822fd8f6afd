"""Samplers: grids, exactness on the Gaussian toy, NFE, the rf Euler = DDIM identity, churn."""

from __future__ import annotations

import math

import pytest
import torch

from dualsci.diffusion import (
    SAMPLERS,
    Churn,
    EDMPath,
    GaussianDenoiser,
    GaussianObjective,
    RectifiedFlowPath,
    UniformTime,
    VelocityParam,
    VPPath,
    gaussian_toy_error,
    karras_sigmas,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
    shift_time,
    time_grid,
)


def test_karras_grid():
    s = karras_sigmas(10)
    assert s.dtype == torch.float64 and s.shape == (11,)
    assert float(s[0]) == pytest.approx(80.0) and float(s[-2]) == pytest.approx(0.002) and float(s[-1]) == 0.0
    assert torch.all(s[1:] < s[:-1])


def test_time_grid_edm_is_karras_and_rf_shift_scales_sigma():
    assert torch.allclose(time_grid(12, EDMPath()), karras_sigmas(12))
    rf = RectifiedFlowPath()
    g1, g3 = time_grid(8, rf, sigma_cap=float("inf")), time_grid(8, rf, shift=3.0, sigma_cap=float("inf"))
    assert torch.isinf(g1[0]) and float(g1[-1]) == 0.0
    assert torch.allclose(g3[1:-1], 3 * g1[1:-1])
    capped = time_grid(8, rf)
    assert torch.isfinite(capped).all() and float(capped[0]) == 1e4
    t = torch.linspace(1, 0, 9, dtype=torch.float64)
    vp = VPPath("cosine")
    assert torch.allclose(time_grid(8, vp, shift=2.0)[:-1], vp.sigma_tilde(shift_time(t, 2.0))[:-1])


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_gaussian_toy_error_falls_with_steps(name):
    errors = [gaussian_toy_error(name, n, batch=2048) for n in (5, 20, 80)]
    print(name, errors)
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.1


@pytest.mark.parametrize("name", ["heun", "dpmpp_2m"])
def test_second_order_samplers_converge_quadratically(name):
    e50, e100 = gaussian_toy_error(name, 50, batch=512), gaussian_toy_error(name, 100, batch=512)
    euler50, euler100 = gaussian_toy_error("euler", 50, batch=512), gaussian_toy_error("euler", 100, batch=512)
    assert e50 / e100 > 3.0  # second order: ~4 per halving of the step
    assert 1.5 < euler50 / euler100 < 2.5  # first order: ~2
    assert e50 < euler50


def test_dpmpp_3m_converges_cubically_and_beats_2m_from_20_steps():
    """Third order: ~8x per halving of the step (measured 9-12x); at 10 steps 2M is better (documented)."""
    e = {n: gaussian_toy_error("dpmpp_3m", n, batch=512) for n in (20, 40, 80)}
    e2m = {n: gaussian_toy_error("dpmpp_2m", n, batch=512) for n in (20, 40)}
    print("dpmpp_3m toy errors", e, "dpmpp_2m", e2m)
    assert e[20] / e[40] > 6.0 and e[40] / e[80] > 6.0
    assert e[20] < e2m[20] and e[40] < e2m[40]


def test_dpmpp_2m_vs_euler_on_the_toy():
    """Measured, not assumed: DPM++(2M) overtakes Euler at equal steps and beats Euler-100 from ~30 steps."""
    dpm10, dpm50, euler100 = (gaussian_toy_error("dpmpp_2m", 10), gaussian_toy_error("dpmpp_2m", 50),
                              gaussian_toy_error("euler", 100))
    print(f"toy RMS error: euler@100={euler100:.3e}  dpmpp_2m@10={dpm10:.3e}  dpmpp_2m@50={dpm50:.3e}")
    assert dpm50 < euler100
    assert gaussian_toy_error("dpmpp_2m", 20) < gaussian_toy_error("euler", 20)


def test_dpmpp_2m_is_the_papers_algorithm():
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) written out by hand in λ = −ln σ on a 4-step grid.

    x_{i+1} = (σ_{i+1}/σ_i)·x_i − (e^{−h_i} − 1)·D̃_i, h_i = λ_{i+1} − λ_i; D̃_0 = D_0 (first order);
    D̃_i = (1 + 1/(2r_i))·D_i − D_{i−1}/(2r_i), r_i = h_{i−1}/h_i; the step to σ = 0 returns D.
    """
    mu, s2 = torch.tensor([0.3, -1.0], dtype=torch.float64), torch.tensor([0.25, 4.0], dtype=torch.float64)

    def denoiser(x, sigma):
        return mu + s2 / (s2 + sigma[:, None] ** 2) * (x - mu)

    sig = [20.0, 3.0, 0.7, 0.05, 0.0]
    x0 = sig[0] * torch.randn(8, 2, dtype=torch.float64)
    x, d_prev, h_prev = x0.clone(), None, None
    for i in range(4):
        d = denoiser(x, torch.full((8,), sig[i], dtype=torch.float64))
        if sig[i + 1] == 0:
            x = d
            break
        h = math.log(sig[i]) - math.log(sig[i + 1])  # λ_{i+1} − λ_i
        d_tilde = d if d_prev is None else (1 + 1 / (2 * (h_prev / h))) * d - d_prev / (2 * (h_prev / h))
        x = (sig[i + 1] / sig[i]) * x - math.expm1(-h) * d_tilde
        d_prev, h_prev = d, h
    torch.testing.assert_close(sample_dpmpp_2m(denoiser, x0.clone(), torch.tensor(sig, dtype=torch.float64)), x)


@pytest.mark.xfail(
    strict=True,
    reason="measured, intrinsic to the toy/grid (implementation = the paper's Alg. 2, tested above): "
    "DPM++(2M)@10 on the Karras grid from sigma=80 is 0.174, Euler@100 0.028; logSNR-uniform grid 0.050",
)
def test_dpmpp_2m_10_steps_no_worse_than_euler_100():
    assert gaussian_toy_error("dpmpp_2m", 10) <= gaussian_toy_error("euler", 100)


@pytest.mark.parametrize("steps", [3, 5, 10, 20])
def test_heun_no_worse_than_euler_on_the_capped_rf_grid(steps):
    """rf grid capped at σ̃ = 1e4: no corrector from the cap, so Heun beats Euler at equal steps."""
    sigmas = time_grid(steps, RectifiedFlowPath())
    assert float(sigmas[0]) == 1e4
    heun = gaussian_toy_error("heun", steps, batch=1024, sigmas=sigmas)
    euler = gaussian_toy_error("euler", steps, batch=1024, sigmas=sigmas)
    print(f"rf grid, {steps} steps: heun {heun:.3e}  euler {euler:.3e}")
    assert heun <= euler


def test_heun_corrector_from_the_cap_is_what_went_wrong():
    """With the corrector forced on the first step (the old behaviour) the error explodes."""
    sigmas = time_grid(10, RectifiedFlowPath())
    mu, std = torch.tensor([0.5, -1.0]), torch.tensor([0.5, 2.0])

    def denoiser(x, sigma):
        return mu + std**2 / (std**2 + sigma[:, None] ** 2) * (x - mu)

    x = sigmas[0].float() * torch.randn(256, 2)
    exact = mu + std / torch.sqrt(std**2 + sigmas[0].float() ** 2) * (x - mu)
    err_new = (sample_heun(denoiser, x.clone(), sigmas) - exact).pow(2).mean().sqrt()
    err_old = (sample_heun(denoiser, x.clone(), sigmas, corrector_sigma_max=float("inf")) - exact).pow(2).mean().sqrt()
    assert err_old > 10 * err_new


@pytest.mark.parametrize("cap,nfe", [(1e3, 2 * 6 - 2), (float("inf"), 2 * 6 - 1)])
def test_heun_calls_on_the_rf_grid(cap, nfe):
    calls = []

    def denoiser(x, sigma):
        calls.append(float(sigma[0]))
        return 0.5 * x / (1 + sigma[:, None] ** 2)

    sample_heun(denoiser, torch.randn(2, 3), time_grid(6, RectifiedFlowPath()), corrector_sigma_max=cap)
    assert len(calls) == nfe
    with pytest.raises(ValueError, match="corrector_sigma_max"):
        sample_heun(denoiser, torch.randn(2, 3), time_grid(6, RectifiedFlowPath()), corrector_sigma_max=0.0)


@pytest.mark.parametrize("name,nfe", [("euler", 7), ("heun", 13), ("dpmpp_2m", 7), ("dpmpp_3m", 7), ("euler_ancestral", 7)])
def test_network_calls_and_dtypes(name, nfe):
    calls = []

    def denoiser(x, sigma):
        calls.append((x.dtype, sigma.dtype, tuple(sigma.shape)))
        return 0.5 * x / (1 + sigma[:, None] ** 2)

    x = 80.0 * torch.randn(3, 4)
    out = SAMPLERS[name](denoiser, x, karras_sigmas(7), generator=torch.Generator().manual_seed(0))
    assert len(calls) == nfe
    assert all(c == (torch.float32, torch.float32, (3,)) for c in calls)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_rf_euler_equals_ddim_and_flow_euler_iterates():
    """On rf: VE Euler, deterministic DDIM x_{t'} = (t'/t)·x_t + (1 − t'/t)·x̂0 and flow Euler coincide."""
    path = RectifiedFlowPath()
    obj = GaussianObjective(path, VelocityParam(), UniformTime())
    weight = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)) * 0.3

    def net(x_in, c_noise):
        return x_in @ weight + c_noise[:, None]

    denoiser = GaussianDenoiser(net, obj)
    sigmas = time_grid(6, path)
    ts = path.t_of_sigma_tilde(sigmas).tolist()
    x_t0 = torch.randn(5, 4, dtype=torch.float64)
    ve_iterates = []
    sample_euler(denoiser, (x_t0 / (1 - ts[0])).float(), sigmas,
                 callback=lambda d: ve_iterates.append(d["x"].double() * (1 - ts[d["i"]])))
    x_ddim, x_flow = x_t0.float(), x_t0.float()
    for i in range(6):
        assert torch.allclose(ve_iterates[i], x_ddim.double(), atol=1e-4)
        t, t_next = ts[i], ts[i + 1]
        tb = torch.full((5,), t)
        x0_hat = obj.to_x0(net(x_ddim, tb), x_ddim, tb)
        x_ddim = (t_next / t) * x_ddim + (1 - t_next / t) * x0_hat
        x_flow = x_flow + (t_next - t) * net(x_flow, tb)
        assert torch.allclose(x_ddim, x_flow, atol=1e-4)


def test_churn_adds_reproducible_noise_and_zero_churn_is_deterministic():
    def denoiser(x, sigma):
        return 0.25 * x / (0.25 + sigma[:, None] ** 2)

    x = 80 * torch.randn(4, 3)
    sig = karras_sigmas(8)
    plain = sample_heun(denoiser, x.clone(), sig)
    assert torch.equal(plain, sample_heun(denoiser, x.clone(), sig))
    a = sample_heun(denoiser, x.clone(), sig, generator=torch.Generator().manual_seed(1), churn=10.0)
    b = sample_heun(denoiser, x.clone(), sig, generator=torch.Generator().manual_seed(1), churn=10.0)
    assert torch.equal(a, b) and not torch.allclose(a, plain)


def test_churn_settings_window_and_noise_scale():
    """``Churn(s_churn)`` is the float churn; levels outside [S_tmin, S_tmax] get none; S_noise scales the added
    noise exactly (seen through the first level's σ̂ and state, captured by the callback)."""
    def denoiser(x, sigma):
        return 0.25 * x / (0.25 + sigma[:, None] ** 2)

    x = 80 * torch.randn(4, 3)
    sig = karras_sigmas(8)
    run = lambda churn, seed=1: sample_heun(denoiser, x.clone(), sig, generator=torch.Generator().manual_seed(seed),  # noqa: E731
                                            churn=churn)
    assert torch.equal(run(10.0), run(Churn(s_churn=10.0)))
    plain = sample_heun(denoiser, x.clone(), sig)
    assert torch.equal(run(Churn(s_churn=10.0, s_tmin=100.0)), plain)  # every level is below S_tmin = 100 (σ_max 80)
    assert torch.equal(run(Churn(s_churn=10.0, s_tmax=1e-3)), plain)
    assert not torch.equal(run(Churn(s_churn=10.0, s_tmin=1.0)), plain)  # only the levels >= 1 churn
    firsts = {}
    for s_noise in (0.0, 1.0, 2.0):
        seen = []
        sample_euler(denoiser, x.clone(), sig, generator=torch.Generator().manual_seed(3),
                     churn=Churn(s_churn=2.0, s_noise=s_noise), callback=lambda d: seen.append((d["x"].clone(), d["sigma_hat"])))
        firsts[s_noise] = seen[0]
    hat = float(sig[0]) * (1 + 2.0 / 8)  # γ = S_churn / N, below its cap √2 − 1
    assert all(abs(h - hat) < 1e-9 for _, h in firsts.values())  # σ̂ does not depend on S_noise
    assert torch.equal(firsts[0.0][0], x)  # S_noise 0: σ raised, nothing added
    torch.testing.assert_close(firsts[2.0][0] - x, 2 * (firsts[1.0][0] - x))
    for bad in (dict(s_churn=-1.0), dict(s_tmin=2.0, s_tmax=1.0), dict(s_noise=-0.1), dict(s_noise=math.inf)):
        with pytest.raises(ValueError, match="Churn needs"):
            Churn(**bad)


def test_invalid_grid_is_rejected():
    with pytest.raises(ValueError, match="non-increasing"):
        sample_dpmpp_2m(lambda x, s: x, torch.zeros(2, 2), torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="finite"):
        sample_euler(lambda x, s: x, torch.zeros(2, 2), torch.tensor([float("inf"), 1.0, 0.0]))
