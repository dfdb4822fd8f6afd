"""Training-time densities π(t) on [0, 1] (t = 0 data, t = 1 noise), guide core.md §3.3.

A time density is *not* a loss weight: both change ``E_t[w(t)·ℓ(t)]`` but only the density changes
which t the gradient sees. Keep them separate (diffusers SD3 issues #8534, #9056).

Each distribution has ``sample(n, generator=None, device=None) -> (n,)`` float32. Draws happen on the
generator's device (CPU when none is given) and are moved to ``device``.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

from dualsci.diffusion.paths import GaussianPath, check_option


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _rand(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator, device=_device(generator))


def _randn(n: int, generator: torch.Generator | None) -> Tensor:
    return torch.randn(n, generator=generator, device=_device(generator))


def shift_time(t: Tensor, s: float) -> Tensor:
    """Resolution shift ``t' = s·t/(1 + (s − 1)·t)``, which is exactly ``σ̃' = s·σ̃`` on the rf path.

    FLUX's resolution-dependent shift is this with ``s = e^μ``. ``s > 1`` moves mass to the noisy end.
    """
    if s <= 0:
        raise ValueError(f"shift s={s} must be > 0")
    return s * t / (1.0 + (s - 1.0) * t)


class UniformTime:
    """``t ~ U(0, 1)``; with ``stratified=True`` the batch covers [0, 1] evenly: ``t_i = (i + u_i)/n``."""

    def __init__(self, stratified: bool = False) -> None:
        self.stratified = bool(stratified)

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        u = _rand(n, generator)
        if self.stratified:
            u = (torch.arange(n, device=u.device) + u) / n
        return u.to(device) if device is not None else u


class LogitNormalTime:
    """SD3 logit-normal: ``t = sigmoid(mean + std·n)``, n ~ N(0, 1); median ``sigmoid(mean)``."""

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        if std <= 0:
            raise ValueError(f"std={std} must be > 0")
        self.mean, self.std = float(mean), float(std)

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        t = torch.sigmoid(self.mean + self.std * _randn(n, generator))
        return t.to(device) if device is not None else t


class ModeTime:
    """SD3 "mode" sampling: ``t = 1 − u − scale·(cos²(πu/2) − 1 + u)``, u ~ U(0, 1).

    ``scale = 0`` is uniform; the map stays monotone (a valid density) for
    ``scale ∈ [−1, 2/(π − 2)]``, which is validated.
    """

    def __init__(self, scale: float = 1.29) -> None:
        hi = 2 / (math.pi - 2)
        if not -1.0 <= scale <= hi:
            raise ValueError(f"scale={scale} must lie in [-1, {hi:.4f}] for a monotone map")
        self.scale = float(scale)

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        u = _rand(n, generator)
        t = 1 - u - self.scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
        t = t.clamp(0, 1)
        return t.to(device) if device is not None else t


class LogNormalSigmaTime:
    """EDM training density: ``ln σ̃ ~ N(p_mean, p_std²)`` mapped to t by the path's inverse.

    σ̃ outside the path's range clamps to t ∈ {0, 1} (for ``EDMPath`` defaults that is
    ~1e-5 of the draws).
    """

    def __init__(self, path: GaussianPath, p_mean: float = -1.2, p_std: float = 1.2) -> None:
        if p_std <= 0:
            raise ValueError(f"p_std={p_std} must be > 0")
        self.path, self.p_mean, self.p_std = path, float(p_mean), float(p_std)

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        sigma = torch.exp(self.p_mean + self.p_std * _randn(n, generator))
        t = self.path.t_of_sigma_tilde(sigma).to(torch.float32)
        return t.to(device) if device is not None else t


BetaStyle = Literal["pi0", "gr00t"]


class BetaTime:
    """Beta density of action heads, in our convention (t = 1 noise); both styles favour the noisy end.

    ``x ~ Beta(a, b)``; ``style="pi0"`` (LeRobot π0): ``t = s·x + (1 − s)`` ∈ [1 − s, 1];
    ``style="gr00t"``: GR00T's clean fraction ``τ = (s − x)/s`` becomes ``t = 1 − τ = x/s``, clamped to 1.
    """

    def __init__(self, a: float = 1.5, b: float = 1.0, s: float = 0.999, style: BetaStyle = "pi0") -> None:
        if a <= 0 or b <= 0:
            raise ValueError(f"Beta parameters a={a}, b={b} must be > 0")
        if not 0 < s <= 1:
            raise ValueError(f"s={s} must lie in (0, 1]")
        self.a, self.b, self.s = float(a), float(b), float(s)
        self.style = check_option("style", style, get_args(BetaStyle))

    def sample(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        # torch's Beta sampler takes no generator: seed a forked global RNG from the generator instead,
        # so a seeded generator still gives reproducible draws.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=_device(generator)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            x = torch.distributions.Beta(torch.tensor(self.a), torch.tensor(self.b)).sample((n,))
        t = self.s * x + (1 - self.s) if self.style == "pi0" else (x / self.s).clamp(max=1.0)
        t = t.to(torch.float32)
        return t.to(device) if device is not None else t
