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

``prior="damped"`` adds damped anomaly persistence: the prior state of frame j is
``D(h_j) + a_j·(x0 − D(h_0))`` (the init's departure from the daily cycle decays by ``a_j``), i.e.
``p_j = D(h_j) − D(h_0) − (1 − a_j)(x0 − D(h_0))``. ``a_j`` per (frame, channel) is the least-squares
regression of the anomaly at lag ``j·step`` on the anomaly at the init, over every hour of the training
period (``fit_damping``), clipped to [0, 1]. At short leads ``a_j ≈ 1`` (persistence plus the cycle); at
long leads the prior relaxes towards the daily climatology, so the ensemble mean of a network that adds
little falls back on the better of the two baselines instead of on persistence. The second 24 h block
starts from a sampled state, so its damping compounds (``a_24·a_j``), like an AR(1) process.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from apps.weather.dataset import NS_PER_HOUR, WindowDataset, time_lag_index

PriorKind = Literal["persistence", "diurnal", "damped"]
PRIOR_KINDS: tuple[str, ...] = ("persistence", "diurnal", "damped")


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
    sums = cells = None
    counts = np.zeros(24)
    for t in range(len(times)):
        x = windows.frame(t).astype(np.float64)  # masked cells (SST over land) read 0: out of the sums
        if sums is None:
            sums = np.zeros((24,) + x.shape)
            # per-cell sample counts only with a masked field (a second table of the size of `sums`)
            cells = np.zeros((24,) + x.shape) if windows.masked else None
        sums[hours[t]] += x
        if cells is not None:
            cells[hours[t]] += windows.frame_valid(t)
        counts[hours[t]] += 1
    present = np.flatnonzero(counts > 0)
    nh = max(0, min(harmonics, (len(present) - 1) // 2))
    # bin means over the samples holding data (0, the mean, where a masked cell never does); the fit's
    # weights are the bins' sample counts
    if cells is None:
        means = sums[present] / counts[present, None, None, None]
    else:
        means = sums[present] / np.maximum(cells[present], 1)
    a = _harmonic_design(present, nh) * np.sqrt(counts[present])[:, None]
    b = means.reshape(len(present), -1) * np.sqrt(counts[present])[:, None]
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    table = _harmonic_design(np.arange(24), nh) @ coef
    return table.reshape((24,) + sums.shape[1:]).astype(np.float32)


def fit_damping(windows: WindowDataset, table: np.ndarray) -> np.ndarray:
    """(k, C) damping ``a_j``: regression of the anomaly at lag ``j·step`` on the anomaly at the init.

    Anomaly = normalised state minus the hour-of-day table ``D``; sums run over every init hour of the
    dataset's period with all k frames in the file (looked up by time: a gap drops the init, never shifts a
    frame) and over all cells. Inits are visited in time order and frames read through the dataset's
    block cache, so memory does not grow with the period.

    Args:
        windows: the training :class:`WindowDataset` (``frames`` k, ``step_hours`` and ``times`` are used).
        table: (24, C, H, W) hour-of-day climatology from :func:`fit_diurnal`.

    Returns:
        (k, C) float32 in [0, 1].
    """
    times = windows.times
    hours = (times.astype("datetime64[h]").astype(np.int64) % 24).astype(int)
    k = windows.frames
    lag = time_lag_index(times, np.arange(0, k + 1, dtype=np.int64) * windows.step_hours * NS_PER_HOUR)  # (T, k + 1)
    n_ch = table.shape[1]
    cross = np.zeros((k, n_ch))
    auto = np.zeros(n_ch)

    recent: dict[int, np.ndarray] = {}  # anomalies of the current window's times (each time is in up to k + 1)

    def anomaly(t: int) -> np.ndarray:  # (C, H, W); 0 at cells a masked field leaves empty (out of the sums)
        if t not in recent:
            a = windows.frame(t).astype(np.float64) - table[hours[t]]
            recent[t] = np.where(windows.frame_valid(t), a, 0.0)
        return recent[t]

    for row in lag[(lag >= 0).all(axis=1)]:  # row: time indices of the init and its k frames, in time order
        for t in [t for t in recent if t < row[0]]:  # earlier than this init: no later window uses it
            del recent[t]
        a0 = anomaly(int(row[0]))
        auto += (a0**2).sum(axis=(1, 2))
        for j in range(1, k + 1):
            cross[j - 1] += (anomaly(int(row[j])) * a0).sum(axis=(1, 2))
    if not auto.any():
        raise ValueError("fit_damping: the period is shorter than one block (no init with all frames)")
    return np.clip(cross / np.maximum(auto, 1e-12)[None], 0.0, 1.0).astype(np.float32)


def prior_tendency(
    table: Tensor,
    init_time: Tensor,
    frames: int,
    step_hours: int,
    x0: Tensor | None = None,
    damping: Tensor | None = None,
) -> Tensor:
    """Climatological change from the init hour to each frame's hour (optionally with damped anomalies).

    Args:
        table: (24, C, H, W) hour-of-day climatology ``D``.
        init_time: (B,) int64 ns since 1970 (block init times).
        frames, step_hours: k frames, hours between frames.
        x0: (B, C, H, W) normalised state at the init; needed with ``damping``.
        damping: (k, C) ``a_j`` from :func:`fit_damping` (``prior="damped"``), or None.

    Returns:
        (B, k, C, H, W) ``D[h0 + j·step] − D[h0]`` for j = 1..k, minus ``(1 − a_j)(x0 − D[h0])`` with
        ``damping``.
    """
    h0 = torch.div(init_time, NS_PER_HOUR, rounding_mode="floor") % 24
    hj = (h0[:, None] + step_hours * torch.arange(1, frames + 1, device=h0.device)[None]) % 24
    p = table[hj] - table[h0][:, None]
    if damping is None:
        return p
    if x0 is None:
        raise ValueError("prior_tendency: damping needs x0 (the normalised state at the init)")
    damping = torch.as_tensor(damping).to(p)
    anomaly = x0.to(p) - table[h0]
    return p - (1.0 - damping)[None, :, :, None, None] * anomaly[:, None]
