"""Token and condition embeddings: timestep, calendar, patchify and grid coordinates.

Guide ``core.md`` §1.2: the timestep embedding is ``[cos(s·t·ω_k), sin(s·t·ω_k)]`` with
``ω_k = exp(−ln(10⁴)·k/(F/2))`` followed by ``Linear(F, D) → SiLU → Linear(D, D)``; ``s = 1000`` for
``t ∈ [0, 1]``, ``s = 1`` when feeding EDM's ``c_noise = ¼·ln σ̃``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn


def embedding_mlp(in_dim: int, dim: int) -> nn.Sequential:
    """``Linear(in, D) → SiLU → Linear(D, D)``: the embedding MLP shared by every embedder."""
    return nn.Sequential(nn.Linear(in_dim, dim), nn.SiLU(), nn.Linear(dim, dim))


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of a noise coordinate, then a two-layer MLP.

    Args:
        dim: output width ``D``.
        freq_dim: number of sinusoidal features ``F`` (even).
        scale: multiplier applied to ``t`` before the sinusoids.
    """

    def __init__(self, dim: int, freq_dim: int = 256, scale: float = 1000.0) -> None:
        super().__init__()
        if freq_dim <= 0 or freq_dim % 2:
            raise ValueError(f"TimestepEmbedding: freq_dim must be a positive even int, got {freq_dim}")
        self.dim, self.freq_dim, self.scale = dim, freq_dim, float(scale)
        half = freq_dim // 2
        omega = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float64) / half)
        self.register_buffer("omega", omega.float(), persistent=False)
        self.mlp = embedding_mlp(freq_dim, dim)

    def features(self, t: Tensor) -> Tensor:
        """Sinusoidal features in fp32: ``t: (...) -> (..., F)``, cos first then sin."""
        angles = (self.scale * t.float()).unsqueeze(-1) * self.omega
        return torch.cat((angles.cos(), angles.sin()), dim=-1)

    def forward(self, t: Tensor) -> Tensor:
        """Embed ``t: (B,)`` or per-token ``(B, L)`` into ``(B, D)`` or ``(B, L, D)``."""
        if t.ndim not in (1, 2):
            raise ValueError(f"TimestepEmbedding: t must be (B,) or (B, L), got shape {tuple(t.shape)}")
        return self.mlp(self.features(t))


def calendar_features(times: Sequence | np.ndarray, n_harmonics: int = 4) -> Tensor:
    """Cyclic calendar features of UTC timestamps.

    Args:
        times: ``(B,)`` numpy ``datetime64`` (any unit) or anything ``np.asarray`` turns into one.
        n_harmonics: number of year-fraction harmonics.

    Returns:
        ``(B, 2·n_harmonics + 2)`` fp32: ``[cos 2πkf, sin 2πkf]`` for ``k = 1..n_harmonics`` with the
        fraction of the (actual, leap-aware) year elapsed ``f``, then ``[cos, sin]`` of the hour of day.
    """
    t = np.asarray(times).astype("datetime64[s]")
    if t.ndim != 1:
        raise ValueError(f"calendar_features: times must be 1-D (B,), got shape {t.shape}")
    year = t.astype("datetime64[Y]")
    start = year.astype("datetime64[s]")
    length = ((year + 1).astype("datetime64[s]") - start).astype(np.float64)
    frac = (t - start).astype(np.float64) / length
    hour = (t - t.astype("datetime64[D]").astype("datetime64[s]")).astype(np.float64) / 3600.0
    k = np.arange(1, n_harmonics + 1, dtype=np.float64)
    year_angle = 2 * math.pi * frac[:, None] * k
    day_angle = 2 * math.pi * hour / 24.0
    feats = np.concatenate(
        [np.cos(year_angle), np.sin(year_angle), np.cos(day_angle)[:, None], np.sin(day_angle)[:, None]],
        axis=1,
    )
    return torch.from_numpy(feats).float()


class CalendarEmbedding(nn.Module):
    """Embed calendar features (:func:`calendar_features`) with a two-layer MLP.

    Args:
        dim: output width ``D``.
        n_harmonics: year-fraction harmonics (feature size ``2·n_harmonics + 2``).
    """

    def __init__(self, dim: int, n_harmonics: int = 4) -> None:
        super().__init__()
        self.n_harmonics = n_harmonics
        self.in_dim = 2 * n_harmonics + 2
        self.mlp = embedding_mlp(self.in_dim, dim)

    def forward(self, time: Tensor | np.ndarray | Sequence) -> Tensor:
        """``time``: ``(B, 2·n_harmonics + 2)`` features, or ``(B,)`` datetime64 converted here.

        Returns:
            ``(B, D)``.
        """
        if not isinstance(time, Tensor):
            time = calendar_features(time, self.n_harmonics)
        if time.ndim != 2 or time.shape[-1] != self.in_dim:
            raise ValueError(
                f"CalendarEmbedding: time must be (B, {self.in_dim}) features or (B,) datetime64, "
                f"got shape {tuple(time.shape)}"
            )
        weight = self.mlp[0].weight
        return self.mlp(time.to(device=weight.device, dtype=weight.dtype))


# ----------------------------------------------------------------------------------------- patches
def _pair(p: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    out = (int(p),) * n if isinstance(p, int) else tuple(int(v) for v in p)
    if len(out) != n or any(v <= 0 for v in out):
        raise ValueError(f"{name}: patch must be a positive int or {n} positive ints, got {p}")
    return out


def _check_divisible(size: Sequence[int], patch: Sequence[int], name: str) -> None:
    if any(s % q for s, q in zip(size, patch)):
        raise ValueError(f"{name}: spatial size {tuple(size)} is not divisible by patch {tuple(patch)}")


def patchify_2d(x: Tensor, p: int | Sequence[int]) -> Tensor:
    """Cut an image into non-overlapping patches.

    Args:
        x: ``(B, C, H, W)``.
        p: patch size ``p`` or ``(ph, pw)``.

    Returns:
        ``(B, H/ph·W/pw, C·ph·pw)``; tokens in row-major patch order, features ordered ``(C, ph, pw)``.
    """
    if x.ndim != 4:
        raise ValueError(f"patchify_2d: x must be (B, C, H, W), got shape {tuple(x.shape)}")
    ph, pw = _pair(p, 2, "patchify_2d")
    b, c, h, w = x.shape
    _check_divisible((h, w), (ph, pw), "patchify_2d")
    x = x.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // ph) * (w // pw), c * ph * pw)


def unpatchify_2d(x: Tensor, p: int | Sequence[int], size: Sequence[int]) -> Tensor:
    """Inverse of :func:`patchify_2d`: ``(B, N, C·ph·pw)`` and ``size = (H, W)`` -> ``(B, C, H, W)``."""
    ph, pw = _pair(p, 2, "unpatchify_2d")
    h, w = (int(v) for v in size)
    _check_divisible((h, w), (ph, pw), "unpatchify_2d")
    n = (h // ph) * (w // pw)
    if x.ndim != 3 or x.shape[1] != n or x.shape[2] % (ph * pw):
        raise ValueError(
            f"unpatchify_2d: x must be (B, {n}, C·{ph * pw}) for size {(h, w)}, got {tuple(x.shape)}"
        )
    b, c = x.shape[0], x.shape[2] // (ph * pw)
    x = x.reshape(b, h // ph, w // pw, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def patchify_3d(x: Tensor, p: int | Sequence[int]) -> Tensor:
    """Cut a video/volume into patches.

    Args:
        x: ``(B, C, T, H, W)``.
        p: ``(pt, ph, pw)`` or one int for all three.

    Returns:
        ``(B, T/pt·H/ph·W/pw, C·pt·ph·pw)``; tokens ordered (t, row, col), features ``(C, pt, ph, pw)``.
    """
    if x.ndim != 5:
        raise ValueError(f"patchify_3d: x must be (B, C, T, H, W), got shape {tuple(x.shape)}")
    pt, ph, pw = _pair(p, 3, "patchify_3d")
    b, c, t, h, w = x.shape
    _check_divisible((t, h, w), (pt, ph, pw), "patchify_3d")
    x = x.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b, (t // pt) * (h // ph) * (w // pw), c * pt * ph * pw)


def unpatchify_3d(x: Tensor, p: int | Sequence[int], size: Sequence[int]) -> Tensor:
    """Inverse of :func:`patchify_3d`: ``(B, N, C·pt·ph·pw)``, ``size = (T, H, W)`` -> ``(B, C, T, H, W)``."""
    pt, ph, pw = _pair(p, 3, "unpatchify_3d")
    t, h, w = (int(v) for v in size)
    _check_divisible((t, h, w), (pt, ph, pw), "unpatchify_3d")
    vol = pt * ph * pw
    n = (t // pt) * (h // ph) * (w // pw)
    if x.ndim != 3 or x.shape[1] != n or x.shape[2] % vol:
        raise ValueError(
            f"unpatchify_3d: x must be (B, {n}, C·{vol}) for size {(t, h, w)}, got {tuple(x.shape)}"
        )
    b, c = x.shape[0], x.shape[2] // vol
    x = x.reshape(b, t // pt, h // ph, w // pw, c, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return x.reshape(b, c, t, h, w)


def grid_coords_2d(h: int, w: int, device: torch.device | str | None = None) -> Tensor:
    """Float (row, col) coordinates of an ``h × w`` token grid in row-major order: ``(h·w, 2)``."""
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=device),
        torch.arange(w, dtype=torch.float32, device=device),
        indexing="ij",
    )
    return torch.stack((rows, cols), dim=-1).reshape(h * w, 2)


def grid_coords_3d(t: int, h: int, w: int, device: torch.device | str | None = None) -> Tensor:
    """Float (frame, row, col) coordinates of a ``t × h × w`` token grid: ``(t·h·w, 3)``."""
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in (t, h, w)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(t * h * w, 3)
