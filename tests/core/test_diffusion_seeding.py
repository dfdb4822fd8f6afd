"""Per-sample seeds: sample i depends only on seeds[i], for initial noise and for sampler noise."""

from __future__ import annotations

import pytest
import torch

from dualsci.diffusion import karras_sigmas, per_sample_noise, sample_euler_ancestral, sample_generators, sample_heun

SEEDS = [11, 22, 33, 44]


def test_per_sample_noise_independent_of_batch_and_order():
    full = per_sample_noise((4, 3, 2), SEEDS)
    for i, seed in enumerate(SEEDS):
        assert torch.equal(per_sample_noise((1, 3, 2), [seed])[0], full[i])
    perm = [2, 0, 3, 1]
    assert torch.equal(per_sample_noise((4, 3, 2), [SEEDS[p] for p in perm]), full[perm])
    with pytest.raises(ValueError, match="seeds"):
        per_sample_noise((3, 2), SEEDS)


@pytest.mark.parametrize("sampler,churn", [(sample_euler_ancestral, 0.0), (sample_heun, 5.0)])
def test_stochastic_sampler_noise_is_per_sample(sampler, churn):
    def denoiser(x, sigma):
        return 0.25 * x / (0.25 + sigma[:, None] ** 2)

    sig = karras_sigmas(6)

    def run(seeds):
        x = sig[0].item() * per_sample_noise((len(seeds), 3), seeds)
        return sampler(denoiser, x, sig, generator=sample_generators(seeds), churn=churn)

    full = run(SEEDS)
    assert torch.equal(run([SEEDS[1]])[0], full[1])
    perm = [3, 1, 0, 2]
    assert torch.equal(run([SEEDS[p] for p in perm]), full[perm])


@pytest.mark.parametrize("process", ["bernoulli", "categorical"])
def test_discrete_samplers_are_per_sample_with_generator_lists(process):
    from dualsci.diffusion import BernoulliProcess, CategoricalProcess

    proc = BernoulliProcess() if process == "bernoulli" else CategoricalProcess(3)

    def model_fn(x, t):  # depends on each row only
        x = x.float()
        return x.unsqueeze(-1).expand(*x.shape, 3) - 1.0 if process == "categorical" else 2 * x - 1

    seeds = [11, 12, 13, 14]
    full = proc.sample(model_fn, (4, 6, 5), steps=5, generator=sample_generators(seeds))
    alone = proc.sample(model_fn, (1, 6, 5), steps=5, generator=sample_generators([13]))
    swapped = proc.sample(model_fn, (2, 6, 5), steps=5, generator=sample_generators([14, 11]))
    assert torch.equal(full[2:3], alone)
    assert torch.equal(full[[3, 0]], swapped)
    assert not torch.equal(full[0], full[1])
