"""Bernoulli / categorical diffusion: the anchor-bug golden test, brute-force posteriors, K = 2 identity."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dualsci.diffusion import BernoulliProcess, CategoricalProcess

SCHEDULES = ["linear", "cosine"]
N = 40_000


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("x0_value", [0.0, 1.0])
def test_q_sample_at_t1_has_mean_one_half(schedule, x0_value):
    """Golden test of the BerDiff/Echo-DND bug (marginal B(ᾱ·x0) collapses to 0 instead of B(½))."""
    proc = BernoulliProcess(schedule)
    x = proc.q_sample(torch.full((N,), x0_value), torch.ones(N), generator=torch.Generator().manual_seed(0))
    assert abs(float(x.mean()) - 0.5) < 3 * math.sqrt(0.25 / N)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_marginal_endpoints_and_formula(schedule):
    proc = BernoulliProcess(schedule)
    x0 = torch.tensor([[0.0, 1.0, 1.0]])
    assert torch.equal(proc.marginal_prob(x0, torch.zeros(1)), x0)
    t = torch.tensor([0.4])
    ab = proc.alpha_bar(t)
    assert torch.allclose(proc.marginal_prob(x0, t), ab * x0 + (1 - ab) / 2)
    assert float(proc.alpha_bar(torch.tensor(1.0))) == 0.0


def _brute_posterior(proc, x_t, p0, t, s):
    """P(x_s = 1 | x_t) by enumerating x0 ∈ {0, 1} (weights p0) and x_s ∈ {0, 1} with Bayes' rule."""
    ab_t, ab_s = float(proc.alpha_bar(torch.tensor(t))), float(proc.alpha_bar(torch.tensor(s)))
    a_ts = ab_t / ab_s

    def bern(p, x):
        return p if x == 1 else 1 - p

    joint = {0: 0.0, 1: 0.0}
    for x0, xs in itertools.product((0, 1), (0, 1)):
        prior = bern(p0, x0) * bern(ab_s * x0 + (1 - ab_s) / 2, xs)
        joint[xs] += prior * bern(a_ts * xs + (1 - a_ts) / 2, x_t)
    return joint[1] / (joint[0] + joint[1])


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("t,s", [(0.5, 0.4), (0.9, 0.1), (1.0, 0.999), (0.3, 0.0), (0.02, 0.01)])
def test_posterior_matches_brute_force_bayes(schedule, t, s):
    proc = BernoulliProcess(schedule)
    for x_t, p0 in itertools.product((0.0, 1.0), (0.0, 1.0, 0.3)):
        got = float(proc.posterior_prob(torch.tensor([x_t]), torch.tensor([p0]), torch.tensor([t]), torch.tensor([s])))
        want = min(max(_brute_posterior(proc, int(x_t), p0, t, s), proc.eps), 1 - proc.eps)
        assert got == pytest.approx(want, abs=1e-5), (x_t, p0)


def test_categorical_posterior_matches_brute_force_for_three_classes():
    proc = CategoricalProcess(3, "linear")
    t, s = 0.7, 0.4
    ab_t, ab_s = 1 - t, 1 - s
    a_ts = ab_t / ab_s
    p0 = torch.tensor([0.2, 0.5, 0.3])
    for x_t in range(3):
        want = torch.zeros(3)
        for x0, xs in itertools.product(range(3), range(3)):
            q_s = ab_s * (xs == x0) + (1 - ab_s) / 3
            q_t = a_ts * (x_t == xs) + (1 - a_ts) / 3
            want[xs] += p0[x0] * q_s * q_t
        got = proc.posterior_prob(torch.tensor([x_t]), p0[None], torch.tensor([t]), torch.tensor([s]))[0]
        assert torch.allclose(got, want / want.sum(), atol=1e-6)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_two_class_categorical_equals_bernoulli(schedule):
    ber, cat = BernoulliProcess(schedule), CategoricalProcess(2, schedule)
    x0 = torch.randint(0, 2, (6, 5))
    t, s = torch.rand(6), torch.rand(6) * 0.5
    s = torch.minimum(s, t)
    assert torch.allclose(cat.marginal_prob(x0, t)[..., 1], ber.marginal_prob(x0.float(), t))
    x_t = ber.q_sample(x0.float(), t)
    p0 = torch.rand(6, 5)
    assert torch.allclose(
        cat.posterior_prob(x_t.long(), torch.stack([1 - p0, p0], -1), t, s)[..., 1],
        ber.posterior_prob(x_t, p0, t, s),
        atol=1e-6,
    )
    # Sampled frequencies of the two fast paths agree within Monte-Carlo error.
    ones = torch.ones(N, dtype=torch.long)
    tt = torch.full((N,), 0.6)
    f_cat = cat.q_sample(ones, tt, generator=torch.Generator().manual_seed(1)).float().mean()
    f_ber = ber.q_sample(ones.float(), tt, generator=torch.Generator().manual_seed(2)).mean()
    assert abs(float(f_cat - f_ber)) < 4 * math.sqrt(0.5 / N)


def test_loss_is_small_for_confident_correct_logits_and_kl_is_zero_for_equal_args():
    proc = BernoulliProcess("cosine")
    x0 = torch.randint(0, 2, (3, 8)).float()
    t, s = torch.full((3,), 0.5), torch.full((3,), 0.45)
    x_t = proc.q_sample(x0, t)
    good = proc.loss(20 * (2 * x0 - 1), x0, x_t, t, s)
    bad = proc.loss(-20 * (2 * x0 - 1), x0, x_t, t, s)
    assert good.shape == (3,) and float(good.max()) < 1e-3 < float(bad.min())
    p = torch.rand(10)
    assert torch.allclose(proc.kl(p, p), torch.zeros(10), atol=1e-6)
    cat = CategoricalProcess(4)
    x0c = torch.randint(0, 4, (3, 8))
    logits = 20 * torch.nn.functional.one_hot(x0c, 4).float()
    assert float(cat.loss(logits, x0c, cat.q_sample(x0c, t), t, s).max()) < 1e-3


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_sampler_with_oracle_recovers_the_target(schedule):
    """An oracle network (confident logits of a fixed mask) must lead the reverse chain to that mask."""
    target = (torch.rand(2, 16, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    calls = []

    def model_fn(x, t):
        calls.append(t)
        return 8 * (2 * target - 1)

    ber = BernoulliProcess(schedule)
    x, prob = ber.sample(model_fn, (2, 16), steps=20, generator=torch.Generator().manual_seed(0), return_prob=True)
    assert len(calls) == 20 and float(calls[0][0]) == 1.0
    assert torch.equal(x, target) and prob.shape == (2, 16)
    cat = CategoricalProcess(3, schedule)
    target_c = torch.randint(0, 3, (2, 16), generator=torch.Generator().manual_seed(4))
    xc = cat.sample(lambda x, t: 8 * torch.nn.functional.one_hot(target_c, 3).float(), (2, 16), steps=20,
                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(xc, target_c)


def test_invalid_options():
    with pytest.raises(ValueError, match="schedule='sqrt'"):
        BernoulliProcess("sqrt")
    with pytest.raises(ValueError, match="num_classes"):
        CategoricalProcess(1)
