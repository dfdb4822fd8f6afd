"""Gaussian toy with an exact answer, for sampler tests and the sampler benchmark.

Data ``x0 ~ N(μ, diag(s²))`` in a few dims. In VE coordinates ``x̃ = x0 + σ̃·ε`` the denoiser is exact,
``E[x0 | x̃] = μ + s²/(s² + σ̃²)·(x̃ − μ)``, and the probability-flow ODE has the closed-form solution
``x̃(σ) = μ + √(s² + σ²)/√(s² + σ₀²)·(x̃(σ₀) − μ)``. A deterministic sampler's error is therefore
its distance to the exact ODE end point from the same start; a stochastic sampler is scored by the error
of the sample mean and standard deviation against (μ, s).
"""

from __future__ import annotations

import torch
from torch import Tensor

from dualsci.diffusion.samplers import SAMPLERS, karras_sigmas

TOY_MU = (0.5, -1.0, 0.0, 2.0)
TOY_STD = (0.5, 0.25, 1.0, 2.0)


def gaussian_denoiser(mu: Tensor, std: Tensor):
    """Exact VE denoiser ``D(x̃: (B, d), σ̃: (B,)) -> E[x0 | x̃]`` for data ``N(mu, diag(std²))``."""

    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        s2 = sigma.to(x.dtype)[:, None] ** 2
        return mu + std**2 / (std**2 + s2) * (x - mu)

    return denoiser


def gaussian_toy_error(
    sampler_name: str,
    steps: int,
    batch: int = 4096,
    seed: int = 0,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    sigmas: Tensor | None = None,
) -> float:
    """Sampler error on the 4-D Gaussian toy with a Karras grid of ``steps`` steps (float64 throughout).

    Args:
        sampler_name: a key of ``samplers.SAMPLERS`` (``euler``, ``heun``, ``dpmpp_2m``, ``euler_ancestral``).
        steps: number of sampler steps N (Heun uses 2N − 1 denoiser calls).
        sigma_min, sigma_max: the Karras grid's ends.
        sigmas: another grid instead (e.g. ``time_grid(N, RectifiedFlowPath())``, capped at 1e4),
            ``(steps + 1,)`` descending to 0; the start is ``sigmas[0]·ε``.

    Returns:
        Deterministic samplers: RMS distance to the exact ODE solution. ``euler_ancestral``: RMS over
        dims of the sample-mean and sample-std errors (includes Monte-Carlo error ~ s/√batch).
    """
    if sampler_name not in SAMPLERS:
        raise ValueError(f"sampler_name={sampler_name!r} is not one of {sorted(SAMPLERS)}")
    mu = torch.tensor(TOY_MU, dtype=torch.float64)
    std = torch.tensor(TOY_STD, dtype=torch.float64)
    if sigmas is None:
        sigmas = karras_sigmas(steps, sigma_min, sigma_max)
    elif sigmas.shape != (steps + 1,):
        raise ValueError(f"sigmas must be ({steps + 1},) for steps={steps}, got {tuple(sigmas.shape)}")
    sigmas = sigmas.to(torch.float64)
    sigma_max = float(sigmas[0])
    gen = torch.Generator().manual_seed(seed)
    x_start = sigma_max * torch.randn(batch, len(TOY_MU), generator=gen, dtype=torch.float64)
    out = SAMPLERS[sampler_name](gaussian_denoiser(mu, std), x_start.clone(), sigmas, generator=gen)
    if sampler_name == "euler_ancestral":
        err = torch.cat([out.mean(0) - mu, out.std(0) - std])
        return float(err.pow(2).mean().sqrt())
    exact = mu + std / torch.sqrt(std**2 + sigma_max**2) * (x_start - mu)
    return float((out - exact).pow(2).mean().sqrt())
