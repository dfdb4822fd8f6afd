"""Per-sample seeding: sample i of a batch depends only on ``seeds[i]``.

A single batch generator makes sample i depend on the batch size and on its position (it consumes the
stream after samples 0..i−1). Ensembles and resumable generation need the opposite: re-running member 7
alone, or in another batch order, must give the same result. One ``torch.Generator`` per sample does that,
for the initial noise and for every ancestral / churn draw of the samplers.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def sample_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per sample, seeded with ``seeds[i]``; pass the list as ``generator=`` to a sampler."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def randn_like(x: Tensor, generator: GeneratorArg = None) -> Tensor:
    """Standard normal noise with the shape, dtype and device of ``x``.

    Args:
        x: ``(B, ...)``.
        generator: ``None`` (global RNG), one generator for the whole batch, or a sequence of B
            generators (sample i drawn from ``generator[i]`` only).
    """
    return _draw(torch.randn, x, generator)


def rand_like(x: Tensor, generator: GeneratorArg = None) -> Tensor:
    """Uniform [0, 1) draws with the shape, dtype and device of ``x``; ``generator`` as in ``randn_like``."""
    return _draw(torch.rand, x, generator)


def _draw(fn, x: Tensor, generator: GeneratorArg) -> Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        return fn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    # Draw on each generator's own device in float32, so the values do not depend on x's dtype/device.
    rows = [fn(x.shape[1:], generator=g, device=g.device) for g in generator]
    return torch.stack(rows).to(device=x.device, dtype=x.dtype)


def bernoulli(probs: Tensor, generator: GeneratorArg = None) -> Tensor:
    """``torch.bernoulli(probs)``, or with one generator per sample (row i uses ``generator[i]`` only)."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.bernoulli(probs, generator=generator)
    return (rand_like(probs, generator) < probs).to(probs.dtype)


def per_sample_noise(
    shape: Sequence[int],
    seeds: Sequence[int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Noise of ``shape = (B, ...)`` whose row i is ``randn(shape[1:])`` from a generator seeded ``seeds[i]``.

    Row i never depends on the batch size or on the other seeds.
    """
    shape = tuple(shape)
    if len(seeds) != shape[0]:
        raise ValueError(f"shape {shape} has batch {shape[0]} but {len(seeds)} seeds were given")
    return randn_like(torch.empty(shape, device=device, dtype=dtype), sample_generators(seeds))
