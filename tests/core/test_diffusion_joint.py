"""Joint schedules: builders, step counts, exact NFE, frozen streams, per-token known tokens."""

from __future__ import annotations

import pytest
import torch

from dualsci.diffusion import (
    JointSchedule,
    RectifiedFlowPath,
    VPPath,
    asynchronous,
    conditional_b,
    marginal_b,
    sample_euler,
    sample_joint,
    synchronous,
    time_grid,
)
from dualsci.diffusion.toy import gaussian_denoiser

MU, STD = torch.tensor([0.5, -1.0]), torch.tensor([0.5, 0.25])


def _toy_joint_fn(path_a, path_b, log=None):
    """Separable joint function: each stream's exact Gaussian-toy ``E[x0 | x_t]`` in path coordinates."""

    def posterior_mean(x, t, path):
        a = path.alpha(t.double()).reshape(x.shape[0], -1)[:, :1].to(x.dtype)
        s = path.sigma(t.double()).reshape(x.shape[0], -1)[:, :1].to(x.dtype)
        return MU + a * STD**2 / (a**2 * STD**2 + s**2) * (x - a * MU)

    def joint_fn(x_a, t_a, x_b, t_b):
        if log is not None:
            log.append((t_a.clone(), t_b.clone()))
        return posterior_mean(x_a, t_a, path_a), posterior_mean(x_b, t_b, path_b)

    return joint_fn


def test_builders_and_step_counts():
    s = asynchronous(4, 3)
    assert s.times.shape == (13, 2) and s.steps == 12
    assert s.stream_steps() == (4, 12)
    assert s.times[0].tolist() == [1.0, 1.0] and s.times[-1].tolist() == [0.0, 0.0]
    moves_a = (s.times[1:, 0] != s.times[:-1, 0]).nonzero().flatten().tolist()
    assert moves_a == [2, 5, 8, 11]
    assert synchronous(5).stream_steps() == (5, 5)
    assert conditional_b(5).stream_steps() == (5, 0) and float(conditional_b(5).times[:, 1].max()) == 0.0
    assert marginal_b(5).stream_steps() == (5, 0) and float(marginal_b(5).times[:, 1].min()) == 1.0
    assert JointSchedule.asynchronous(2, 2).times.tolist() == asynchronous(2, 2).times.tolist()


def test_asynchronous_start_phase_moves_a_first_in_each_group():
    s = asynchronous(4, 3, phase="start")
    assert s.stream_steps() == (4, 12)
    moves_a = (s.times[1:, 0] != s.times[:-1, 0]).nonzero().flatten().tolist()
    assert moves_a == [0, 3, 6, 9]
    assert s.times[-1].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="phase"):
        asynchronous(4, 3, phase="middle")


def test_schedule_validation():
    with pytest.raises(ValueError, match="non-increasing"):
        JointSchedule(torch.tensor([[0.5, 1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="shape"):
        JointSchedule(torch.ones(3))


@pytest.mark.parametrize("solver,expected", [("euler", 12), ("heun", 22)])
def test_asynchronous_nfe_is_exact(solver, expected):
    log = []
    rf = RectifiedFlowPath()
    x_a, x_b = torch.randn(3, 2), torch.randn(3, 2)
    *_, nfe = sample_joint(_toy_joint_fn(rf, rf, log), x_a, x_b, asynchronous(4, 3), rf, rf, solver=solver,
                           return_nfe=True)
    # Heun: a corrector at every k except the first (rf σ̃ = ∞ at t = 1) and the last (ends at t = 0).
    assert nfe == len(log) == expected


def test_synchronous_joint_euler_equals_single_stream_euler():
    vp = VPPath("linear")
    n = 10
    eps = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    a, b = sample_joint(_toy_joint_fn(vp, vp), eps.clone(), eps.clone(), synchronous(n), vp, vp)
    sigmas = time_grid(n, vp)
    ref = sample_euler(gaussian_denoiser(MU, STD), eps / float(vp.alpha(torch.tensor(1.0))), sigmas)
    assert torch.allclose(a, ref, atol=1e-4) and torch.equal(a, b)


def test_joint_heun_beats_joint_euler_on_the_toy():
    rf = RectifiedFlowPath()
    eps = torch.randn(512, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = MU + STD * eps  # rf at t = 1 is pure noise: the ODE maps ε to μ + s·ε
    errs = {}
    for solver in ("euler", "heun"):
        a, _ = sample_joint(_toy_joint_fn(rf, rf), eps.float(), eps.float(), synchronous(8), rf, rf, solver=solver)
        errs[solver] = float((a.double() - exact).pow(2).mean().sqrt())
    assert errs["heun"] < errs["euler"] < 0.5


@pytest.mark.parametrize("builder", [conditional_b, marginal_b])
def test_stream_with_zero_dt_stays_frozen(builder):
    log = []
    rf = RectifiedFlowPath()
    x_a, x_b = torch.randn(3, 2), torch.randn(3, 2)
    _, out_b = sample_joint(_toy_joint_fn(rf, rf, log), x_a, x_b, builder(4), rf, rf, solver="heun")
    assert torch.equal(out_b, x_b)
    t_b_seen = {float(t_b[0]) for _, t_b in log}
    assert t_b_seen == ({0.0} if builder is conditional_b else {1.0})


def test_per_token_known_tokens_are_kept_and_seen_at_t0():
    log = []
    rf = RectifiedFlowPath()
    x_a = torch.randn(2, 4, 2)
    known = torch.tensor([[True, False, False, True], [False, False, False, False]])

    def joint_fn(x_a, t_a, x_b, t_b):
        log.append(t_a.clone())
        return x_a * 0 + 1.0, x_b * 0

    out_a, _ = sample_joint(joint_fn, x_a.clone(), torch.randn(2, 3), synchronous(5), rf, rf, known_a=known)
    assert all(t.shape == (2, 4) for t in log)
    assert torch.all(log[0][known] == 0) and torch.all(log[0][~known] == 1)
    assert torch.equal(out_a[known], x_a[known])
    assert torch.allclose(out_a[~known], torch.ones_like(out_a[~known]))
