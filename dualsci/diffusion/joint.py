"""Per-stream (joint) schedules and the joint sampler (guide core.md §5.1).

A ``JointSchedule`` is a ``(K + 1, 2)`` table of ``(t_a, t_b)``, each column non-increasing in [0, 1].
Every k < K costs **one** joint network call returning both streams' x0 predictions; stream s then
moves from ``t_s^k`` to ``t_s^{k+1}`` and stays frozen (bit-identical) when the two are equal. Heun adds
one corrector call per k where some moving stream ends above t = 0 (EDM: the last step is Euler).

Per-token times: ``known_a`` / ``known_b`` ``(B, L_s)`` bool masks mark tokens that are given clean
(inpainting, rolling horizons). Their time is 0, they are passed to the network as ``(B, L_s)`` times
and are never changed by the sampler.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, get_args

import torch
from torch import Tensor

from dualsci.diffusion.paths import GaussianPath, check_option

JointFn = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
Solver = Literal["euler", "heun"]


class JointSchedule:
    """``(K + 1, 2)`` float64 table of ``(t_a, t_b)`` (t = 1 noise, t = 0 data).

    Args:
        times: ``(K + 1, 2)``, K >= 1, values in [0, 1], each column non-increasing.
    """

    def __init__(self, times: Tensor) -> None:
        times = torch.as_tensor(times, dtype=torch.float64).cpu()
        if times.ndim != 2 or times.shape[1] != 2 or times.shape[0] < 2:
            raise ValueError(f"times must have shape (K+1, 2) with K >= 1, got {tuple(times.shape)}")
        if (times < 0).any() or (times > 1).any():
            raise ValueError("times must lie in [0, 1]")
        if (times[1:] > times[:-1]).any():
            raise ValueError("each column of times must be non-increasing (t = 1 noise → t = 0 data)")
        self.times = times

    @property
    def steps(self) -> int:
        """K, the number of joint network calls of an Euler pass."""
        return self.times.shape[0] - 1

    def stream_steps(self) -> tuple[int, int]:
        """``(N_a, N_b)``: how many k move each stream (Δt ≠ 0)."""
        moves = self.times[1:] != self.times[:-1]
        return int(moves[:, 0].sum()), int(moves[:, 1].sum())

    def __len__(self) -> int:
        return self.times.shape[0]

    def __repr__(self) -> str:
        n_a, n_b = self.stream_steps()
        return f"JointSchedule(K={self.steps}, N_a={n_a}, N_b={n_b})"

    @classmethod
    def synchronous(cls, n: int) -> JointSchedule:
        """Both streams on the same uniform grid, n steps (MedSegFactory, Echo-DND)."""
        t = _uniform(n)
        return cls(torch.stack([t, t], 1))

    @classmethod
    def asynchronous(cls, n_a: int, q: int, phase: Literal["end", "start"] = "end") -> JointSchedule:
        """DUST: K = q·n_a calls; b steps at every k, a steps once in every group of q calls.

        ``t_b^k = 1 − k/K``. With ``phase="end"`` a moves at the last call of each group,
        ``t_a^k = 1 − ⌊k/q⌋/n_a``, so its update uses the prediction made when b is most refined within
        the group; with ``phase="start"`` it moves at the first, ``t_a^k = 1 − ⌈k/q⌉/n_a``. Either way
        N_b = q·N_a.
        """
        if q < 1:
            raise ValueError(f"q={q} must be >= 1")
        check_option("phase", phase, ("end", "start"))
        t_b = _uniform(n_a * q)
        groups = torch.arange(n_a * q + 1, dtype=torch.float64) / q
        t_a = 1 - (groups.floor() if phase == "end" else groups.ceil()) / n_a
        return cls(torch.stack([t_a, t_b], 1))

    @classmethod
    def conditional_b(cls, n: int) -> JointSchedule:
        """a from noise to data while t_b ≡ 0: b is given clean (image → mask, UniDiffuser conditional)."""
        t = _uniform(n)
        return cls(torch.stack([t, torch.zeros_like(t)], 1))

    @classmethod
    def marginal_b(cls, n: int) -> JointSchedule:
        """a from noise to data while t_b ≡ 1: b stays fixed noise (marginal of a)."""
        t = _uniform(n)
        return cls(torch.stack([t, torch.ones_like(t)], 1))


def _uniform(n: int) -> Tensor:
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    return torch.linspace(1, 0, n + 1, dtype=torch.float64)


synchronous = JointSchedule.synchronous
asynchronous = JointSchedule.asynchronous
conditional_b = JointSchedule.conditional_b
marginal_b = JointSchedule.marginal_b


def _ab(path: GaussianPath, t: float) -> tuple[float, float]:
    tt = torch.tensor(t, dtype=torch.float64)
    return float(path.alpha(tt)), float(path.sigma(tt))


def _ddim(path: GaussianPath, x: Tensor, x0: Tensor, t: float, t_next: float) -> Tensor:
    """Euler step in path coordinates, ``x' = (σ'/σ)·x + (α' − σ'·α/σ)·x̂0`` (= VE Euler); exact at t = 1 on rf."""
    if t_next == 0:
        return x0
    a, s = _ab(path, t)
    a2, s2 = _ab(path, t_next)
    return (s2 / s) * x + (a2 - s2 * a / s) * x0


def _heun(path: GaussianPath, x: Tensor, x0: Tensor, x_pred: Tensor, x0_pred: Tensor, t: float,
          t_next: float) -> Tensor:
    """Trapezoidal corrector in VE coordinates, mapped back to the path."""
    a, s = _ab(path, t)
    a2, s2 = _ab(path, t_next)
    st, st2 = s / a, s2 / a2
    x_ve, x_pred_ve = x / a, x_pred / a2
    slope = (x_ve - x0) / st + (x_pred_ve - x0_pred) / st2
    return a2 * (x_ve + (st2 - st) * 0.5 * slope)


def _corrects(path: GaussianPath, t: float, t_next: float) -> bool:
    """Heun's corrector applies when the stream moves, ends above 0 and starts at finite σ̃."""
    return t_next != t and t_next > 0 and _ab(path, t)[0] > 0


def _times(t: float, x: Tensor, known: Tensor | None) -> Tensor:
    if known is None:
        return x.new_full((x.shape[0],), t)
    return torch.where(known.to(x.device), 0.0, t).to(x.dtype)


def _keep_known(x_new: Tensor, x_old: Tensor, known: Tensor | None) -> Tensor:
    if known is None:
        return x_new
    m = known.to(x_new.device).reshape(*known.shape, *([1] * (x_new.ndim - known.ndim)))
    return torch.where(m, x_old, x_new)


def sample_joint(
    joint_fn: JointFn,
    x_a: Tensor,
    x_b: Tensor,
    schedule: JointSchedule,
    path_a: GaussianPath,
    path_b: GaussianPath,
    solver: Solver = "euler",
    known_a: Tensor | None = None,
    known_b: Tensor | None = None,
    return_nfe: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, int]:
    """Integrate both streams along a joint schedule, one joint call per k (Heun: plus correctors).

    Args:
        joint_fn: ``joint_fn(x_a, t_a, x_b, t_b) -> (x0_a, x0_b)``, one network call; ``t_s`` is ``(B,)``
            (or ``(B, L_s)`` when ``known_s`` is given) in ``x_s``'s dtype.
        x_a: ``(B, L_a, ...)`` start in path coordinates at ``t_a^0`` (noise ``ε`` when t = 1 on rf/VP; the
            clean data for a stream held at t = 0).
        x_b: ``(B, L_b, ...)`` likewise.
        schedule: the ``JointSchedule``.
        path_a, path_b: each stream's Gaussian path.
        solver: ``"euler"`` (DDIM form) or ``"heun"``.
        known_a, known_b: optional ``(B, L_s)`` bool, True = token given clean and never updated.
        return_nfe: also return the exact number of ``joint_fn`` calls.

    Returns:
        ``(x_a, x_b)`` at the schedule's last row, plus ``nfe`` when asked.
    """
    check_option("solver", solver, get_args(Solver))
    paths, known = (path_a, path_b), (known_a, known_b)
    xs = [x_a, x_b]
    nfe = 0
    rows = schedule.times.tolist()
    for k in range(schedule.steps):
        now, nxt = rows[k], rows[k + 1]
        x0s = joint_fn(xs[0], _times(now[0], xs[0], known[0]), xs[1], _times(now[1], xs[1], known[1]))
        nfe += 1
        new = [
            xs[i] if now[i] == nxt[i]
            else _keep_known(_ddim(paths[i], xs[i], x0s[i], now[i], nxt[i]), xs[i], known[i])
            for i in range(2)
        ]
        fix = [solver == "heun" and _corrects(paths[i], now[i], nxt[i]) for i in range(2)]
        if any(fix):
            x0p = joint_fn(new[0], _times(nxt[0], new[0], known[0]), new[1], _times(nxt[1], new[1], known[1]))
            nfe += 1
            for i in range(2):
                if fix[i]:
                    corrected = _heun(paths[i], xs[i], x0s[i], new[i], x0p[i], now[i], nxt[i])
                    new[i] = _keep_known(corrected, xs[i], known[i])
        xs = new
    return (xs[0], xs[1], nfe) if return_nfe else (xs[0], xs[1])
