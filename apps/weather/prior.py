"""Diurnal prior: the climatological change of the state between the init hour and each frame's hour.

With ``prior="diurnal"`` the forecaster diffuses ``(y_j − x0 − p_j)/s_j`` instead of ``(y_j − x0)/s_j``,
where ``p_j = D(h_0 + j·step) − D(h_0)`` and ``D(h)`` is a smooth hour-of-day climatology of the
normalised state fitted on the training period. The network then learns only the departure from
"persistence plus the mean daily cycle", which on a short hourly record (weeks) is most of what a
CPU-sized model can learn; without it the 6/12 h frames spend capacity re-learning the daily cycle.

``D`` is a per-cell least-squares fit of a mean plus ``harmonics`` daily harmonics (24 h, 12 h, ...)
to the hour-of-day bin means weighted by their counts — the same as fitting the raw samples, but
streaming. The raw 24 bin means of a few weeks are noisy (a few samples per hour and cell); the fit
smooths them and copes with 3- or 6-hourly data (fewer hours than 24).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from apps.weather.dataset import WindowDataset

NS_PER_HOUR = 3_600_000_000_000
PriorKind = Literal["persistence", "diurnal"]
PRIOR_KINDS: tuple[str, ...] = ("persistence", "diurnal")


def check_prior(kind: str) -> str:
    """Validate a ``prior`` option (error names the argument and the allowed values)."""
    if kind not in PRIOR_KINDS:
        raise ValueError(f"prior={kind!r} is not one of {PRIOR_KINDS}")
    return kind


def _harmonic_design(hours: np.ndarray, harmonics: int) -> np.ndarray:
    """(N, 1 + 2·harmonics) design: 1, cos(2πk h/24), sin(2πk h/24) for k = 1..harmonics."""
    cols = [np.ones(len(hours))]
    for k in range(1, harmonics + 1):
        ang = 2 * np.pi * k * np.asarray(hours, float) / 24.0
        cols += [np.cos(ang), np.sin(ang)]
    return np.stack(cols, axis=1)


def fit_diurnal(windows: WindowDataset, harmonics: int = 2) -> np.ndarray:
    """Smooth hour-of-day climatology of the normalised state over the dataset's period.

    Reads the period once in the dataset's cached time blocks (memory bounded by the block size).

    Args:
        windows: the training :class:`WindowDataset` (its ``ds``, ``stats`` and ``times`` are used).
        harmonics: daily harmonics fitted; capped so the fit is determined by the hours present.

    Returns:
        (24, C, H, W) float32 table ``D[h]``.
    """
    times = windows.times
    hours = (times.astype("datetime64[h]").astype(np.int64) % 24).astype(int)
    sums = None
    counts = np.zeros(24)
    for t in range(len(times)):
        x = windows.frame(t).astype(np.float64)
        if sums is None:
            sums = np.zeros((24,) + x.shape)
        ok = np.isfinite(x)
        sums[hours[t]] += np.where(ok, x, 0.0)
        counts[hours[t]] += 1
    present = np.flatnonzero(counts > 0)
    nh = max(0, min(harmonics, (len(present) - 1) // 2))
    means = sums[present] / counts[present, None, None, None]
    a = _harmonic_design(present, nh) * np.sqrt(counts[present])[:, None]
    b = means.reshape(len(present), -1) * np.sqrt(counts[present])[:, None]
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    table = _harmonic_design(np.arange(24), nh) @ coef
    return table.reshape((24,) + sums.shape[1:]).astype(np.float32)


def prior_tendency(table: Tensor, init_time: Tensor, frames: int, step_hours: int) -> Tensor:
    """Climatological change from the init hour to each frame's hour.

    Args:
        table: (24, C, H, W) hour-of-day climatology ``D``.
        init_time: (B,) int64 ns since 1970 (block init times).
        frames, step_hours: k frames, hours between frames.

    Returns:
        (B, k, C, H, W) ``D[h0 + j·step] − D[h0]`` for j = 1..k.
    """
    h0 = torch.div(init_time, NS_PER_HOUR, rounding_mode="floor") % 24
    hj = (h0[:, None] + step_hours * torch.arange(1, frames + 1, device=h0.device)[None]) % 24
    return table[hj] - table[h0][:, None]
