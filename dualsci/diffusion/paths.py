"""Gaussian noising paths ``x_t = α_t·x0 + σ_t·ε`` on one clock, t = 0 data, t = 1 noise.

Every path also has a VE view: ``x̃ = x_t/α_t`` and ``σ̃ = σ_t/α_t``, so one sampler written in
``(x̃, σ̃)`` serves all of them (guide core.md §3.1). ``t_of_sigma_tilde`` inverts ``σ̃(t)``; the
samplers and the log-normal time distribution rely on it.

Coefficients are computed in float64 when the time tensor is float64 (sampler grids) and in the time
tensor's own dtype otherwise, so nothing silently promotes a network input to float64.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

VPSchedule = Literal["linear", "scaled_linear", "cosine"]


def check_option(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """Raise a ``ValueError`` naming the argument and the allowed values unless ``value`` is allowed."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")
    return value


def expand_time(t: Tensor, x: Tensor) -> Tensor:
    """Broadcast per-sample ``(B,)`` or per-token ``(B, L)`` times over the trailing dims of ``x``.

    Args:
        t: ``(B,)``, ``(B, L)`` or a 0-d tensor.
        x: ``(B, ...)`` with at least ``t.ndim`` dims.

    Returns:
        ``t`` viewed as ``(B, [L,] 1, ..., 1)`` with ``x.ndim`` dims.
    """
    if t.ndim > x.ndim:
        raise ValueError(f"time of shape {tuple(t.shape)} has more dims than x {tuple(x.shape)}")
    return t.reshape(*t.shape, *([1] * (x.ndim - t.ndim)))


def _as_time(t: Tensor | float) -> Tensor:
    t = torch.as_tensor(t)
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


class GaussianPath:
    """Base class: subclasses define ``alpha``, ``sigma`` and ``t_of_sigma_tilde``."""

    def alpha(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def t_of_sigma_tilde(self, sigma_tilde: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Inverse of ``sigma_tilde``; values outside the path's range clamp to t ∈ [0, 1]."""
        raise NotImplementedError

    def sigma_tilde(self, t: Tensor) -> Tensor:
        """VE-equivalent noise level ``σ̃ = σ_t/α_t`` (``inf`` where α = 0)."""
        t = _as_time(t)
        return self.sigma(t) / self.alpha(t)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Corrupt data: ``x_t = α_t·x0 + σ_t·ε``.

        Args:
            x0: ``(B, ...)`` clean data.
            t: ``(B,)`` or per-token ``(B, L)``.
            noise: ``ε`` with the shape of ``x0``.
        """
        t = _as_time(t).to(x0.device)
        a = expand_time(self.alpha(t), x0).to(x0.dtype)
        s = expand_time(self.sigma(t), x0).to(x0.dtype)
        return a * x0 + s * noise

    def to_ve(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``x̃ = x_t/α_t`` (t of shape ``(B,)`` or ``(B, L)``)."""
        return x_t / expand_time(self.alpha(_as_time(t).to(x_t.device)), x_t).to(x_t.dtype)

    def from_ve(self, x_ve: Tensor, t: Tensor) -> Tensor:
        """``x_t = α_t·x̃`` (t of shape ``(B,)`` or ``(B, L)``)."""
        return x_ve * expand_time(self.alpha(_as_time(t).to(x_ve.device)), x_ve).to(x_ve.dtype)


class RectifiedFlowPath(GaussianPath):
    """Rectified flow (SD3, FLUX): ``α = 1 − t``, ``σ = t``, ``σ̃ = t/(1 − t)``."""

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - _as_time(t)

    def sigma(self, t: Tensor) -> Tensor:
        return _as_time(t)

    def t_of_sigma_tilde(self, sigma_tilde: Tensor) -> Tensor:
        s = _as_time(sigma_tilde)
        # 1/(1 + 1/σ̃) rather than σ̃/(1 + σ̃): exact at σ̃ = 0 and σ̃ = inf.
        return (1.0 / (1.0 + 1.0 / s)).clamp(0.0, 1.0)

    def __repr__(self) -> str:
        return "RectifiedFlowPath()"


class VPPath(GaussianPath):
    """Variance-preserving (DDPM) path ``α = √ᾱ(t)``, ``σ = √(1 − ᾱ(t))`` with continuous t.

    ``ln ᾱ`` is tabulated at the T + 1 discrete steps ``t = i/T`` (``ᾱ(0) = 1``, ``ᾱ(i/T) = Π_{j≤i}(1 − β_j)``)
    and interpolated linearly in t in between, so integer steps reproduce the discrete DDPM schedule
    exactly and the inverse ``t(σ̃)`` is exact on the same interpolant.

    Args:
        schedule: ``"linear"`` (β 1e-4 → 0.02), ``"scaled_linear"`` (SD1.5: β = linspace(√0.00085,
            √0.012)²) or ``"cosine"`` (Nichol & Dhariwal, s = 0.008, β clipped at 0.999).
        T: number of discrete steps of the table.
    """

    def __init__(self, schedule: VPSchedule = "linear", T: int = 1000) -> None:
        self.schedule = check_option("schedule", schedule, get_args(VPSchedule))
        if T < 1:
            raise ValueError(f"T={T} must be >= 1")
        self.T = int(T)
        if schedule == "linear":
            betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
        elif schedule == "scaled_linear":
            betas = torch.linspace(0.00085**0.5, 0.012**0.5, T, dtype=torch.float64) ** 2
        else:
            s = 0.008
            grid = torch.arange(T + 1, dtype=torch.float64) / T
            f = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        log_ab = torch.cumsum(torch.log1p(-betas), 0)
        self._log_ab = torch.cat([torch.zeros(1, dtype=torch.float64), log_ab])  # (T+1,), decreasing

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        """``ln ᾱ(t)``, piecewise linear in t; same dtype as ``t``."""
        t = _as_time(t)
        table = self._log_ab.to(t.device)
        pos = t.to(torch.float64 if t.dtype == torch.float64 else torch.float32).clamp(0, 1) * self.T
        lo = pos.floor().long().clamp(max=self.T - 1)
        frac = pos - lo
        table = table.to(pos.dtype)
        return (table[lo] + frac * (table[lo + 1] - table[lo])).to(t.dtype)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * self.log_alpha_bar(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(self.log_alpha_bar(t)))

    def t_of_sigma_tilde(self, sigma_tilde: Tensor) -> Tensor:
        s = _as_time(sigma_tilde)
        # σ̃² = (1 − ᾱ)/ᾱ  ⇒  ln ᾱ = −ln(1 + σ̃²); then invert the piecewise-linear table.
        target = -torch.log1p(s.to(torch.float64) ** 2)
        neg = -self._log_ab.to(s.device)  # increasing
        idx = torch.searchsorted(neg, -target).clamp(1, self.T)
        lo, hi = neg[idx - 1], neg[idx]
        frac = ((-target - lo) / (hi - lo)).clamp(0, 1)
        return ((idx - 1 + frac) / self.T).clamp(0, 1).to(s.dtype)

    def __repr__(self) -> str:
        return f"VPPath(schedule={self.schedule!r}, T={self.T})"


class EDMPath(GaussianPath):
    """Variance-exploding EDM path: ``α = 1``, ``σ(t) = (σmin^{1/ρ} + t·(σmax^{1/ρ} − σmin^{1/ρ}))^ρ``.

    The Karras ρ-interpolation maps t ∈ [0, 1] onto σ ∈ [σmin, σmax]; a uniform t grid therefore is the
    Karras sampling grid. ``t_of_sigma_tilde`` clamps σ outside ``[σmin, σmax]`` to the ends.
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min={sigma_min} < sigma_max={sigma_max}")
        if rho <= 0:
            raise ValueError(f"rho={rho} must be > 0")
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)
        self._lo = self.sigma_min ** (1 / self.rho)
        self._hi = self.sigma_max ** (1 / self.rho)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(_as_time(t))

    def sigma(self, t: Tensor) -> Tensor:
        t = _as_time(t)
        return (self._lo + t * (self._hi - self._lo)) ** self.rho

    def t_of_sigma_tilde(self, sigma_tilde: Tensor) -> Tensor:
        s = _as_time(sigma_tilde)
        return ((s.clamp(min=0) ** (1 / self.rho) - self._lo) / (self._hi - self._lo)).clamp(0, 1)

    def __repr__(self) -> str:
        return f"EDMPath(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, rho={self.rho})"
