"""Classifier-free guidance (guide core.md §6).

``F_g = F_u + w·(F_c − F_u)`` is affine, so it is the same in ε, x0, v or flow form; ``w = 1`` returns the
conditional output exactly (no arithmetic). ``CFGDenoiser`` runs both branches in one call by doubling
the batch, supports one scale per output stream and a guidance interval outside of which the
unconditional branch is skipped (one call instead of a doubled one).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

Outputs = Tensor | tuple[Tensor, ...]


def cfg(cond: Tensor, uncond: Tensor, scale: float | Tensor) -> Tensor:
    """``uncond + scale·(cond − uncond)``; ``cond`` itself (bit-identical) when ``scale == 1``.

    ``scale`` may be a float or a per-sample ``(B,)`` tensor (broadcast over trailing dims).
    """
    if not torch.is_tensor(scale):
        return cond if scale == 1 else uncond + scale * (cond - uncond)
    scale = scale.to(cond.device, cond.dtype).reshape(-1, *([1] * (cond.ndim - 1)))
    return torch.where(scale == 1, cond, uncond + scale * (cond - uncond))


def _cat(values: Sequence[Any]) -> Any:
    return torch.cat(values) if torch.is_tensor(values[0]) else values[0]


class CFGDenoiser:
    """Wrap ``fn(*args, cond=...) -> Tensor | tuple[Tensor, ...]`` into its guided version.

    Every tensor positional argument (batch first, ``(B, ...)``) is doubled on the batch axis with
    ``cond`` followed by ``null_cond``; non-tensor arguments pass through. Works for a single-stream
    denoiser ``D(x̃, σ̃, cond=c)`` as for a joint function ``(x_a, t_a, x_b, t_b, cond=c)``.

    Args:
        fn: the conditional function.
        scale: one guidance scale, or one per output (per-stream guidance, e.g. ``(7.5, 1.0)``).
        null_cond: the null condition, broadcastable to ``cond`` (learned null token, zeros, or a fill
            value such as MONAI's −1).
        interval: optional ``(lo, hi)``: guide only samples whose time argument lies in ``[lo, hi]``
            (same units as that argument, σ̃ for a denoiser); others get scale 1.
        time_arg: index of the positional argument the interval is checked against.
    """

    def __init__(
        self,
        fn: Callable[..., Outputs],
        scale: float | Sequence[float],
        null_cond: Tensor,
        interval: tuple[float, float] | None = None,
        time_arg: int = 1,
    ) -> None:
        self.fn, self.null_cond, self.interval, self.time_arg = fn, null_cond, interval, time_arg
        self.scale = tuple(float(s) for s in scale) if isinstance(scale, (tuple, list)) else float(scale)
        if not all(math.isfinite(s) for s in (self.scale if isinstance(self.scale, tuple) else (self.scale,))):
            raise ValueError(f"guidance scale must be finite, got {scale}")
        if interval is not None and interval[0] > interval[1]:
            raise ValueError(f"interval={interval} must be (lo, hi) with lo <= hi")

    def _scales(self, n_out: int) -> tuple[float, ...]:
        if isinstance(self.scale, float):
            return (self.scale,) * n_out
        if len(self.scale) != n_out:
            raise ValueError(f"{len(self.scale)} guidance scales for {n_out} outputs")
        return self.scale

    def _active(self, args: tuple[Any, ...], batch: int) -> Tensor | None:
        """Per-sample bool: inside the guidance interval (None = everywhere)."""
        if self.interval is None:
            return None
        t = torch.as_tensor(args[self.time_arg]).reshape(batch, -1)[:, 0]
        return (t >= self.interval[0]) & (t <= self.interval[1])

    def __call__(self, *args: Any, cond: Tensor) -> Outputs:
        batch = cond.shape[0]
        active = self._active(args, batch)
        n_scales = 1 if isinstance(self.scale, float) else len(self.scale)
        if all(s == 1 for s in self._scales(n_scales)) or (active is not None and not active.any()):
            return self.fn(*args, cond=cond)
        null = self.null_cond.to(cond.device, cond.dtype).expand_as(cond)
        out = self.fn(*(_cat([a, a]) for a in args), cond=torch.cat([cond, null]))
        outs = out if isinstance(out, tuple) else (out,)
        guided = []
        for o, s in zip(outs, self._scales(len(outs))):
            if o is None:
                guided.append(None)
                continue
            c, u = o[:batch], o[batch:]
            w = s if active is None else torch.where(active, s, 1.0)
            guided.append(cfg(c, u, w))
        return tuple(guided) if isinstance(out, tuple) else guided[0]


class StreamDropGuidance:
    """Guidance by dropping the *other stream* instead of a prompt (UniDiffuser-style pinning).

    The unconditional branch for stream a sees stream b replaced by fresh noise at t_b = 1 (b dropped:
    the model's marginal of a), and vice versa; no null token is needed, only a model trained with
    stream dropout (``JointGaussianObjective(stream_drop_prob=...)``) or independent per-stream times.
    Both branches run in one call on a batch of 2 or 3·B rows (only the streams whose scale ≠ 1 add
    rows), so guidance costs one network call per step, as ``sample_joint`` counts it.

    ``x0_a = cfg(x0_a | b, x0_a | b dropped, scale_a)``, likewise for b; with both scales 1 the
    wrapper returns ``joint_fn`` unchanged (bit-identical outputs).

    Args:
        joint_fn: ``joint_fn(x_a, t_a, x_b, t_b) -> (x0_a, x0_b)`` as for ``sample_joint``.
        scale_a: guidance scale of stream a (against b dropped).
        scale_b: guidance scale of stream b (against a dropped).
        generator: source of the dropped streams' noise (seeded for reproducible samples).
    """

    def __init__(
        self,
        joint_fn: Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]],
        scale_a: float = 1.0,
        scale_b: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.joint_fn, self.scale_a, self.scale_b, self.generator = joint_fn, float(scale_a), float(scale_b), generator
        if not (math.isfinite(self.scale_a) and math.isfinite(self.scale_b)):
            raise ValueError(f"guidance scales must be finite, got scale_a={scale_a}, scale_b={scale_b}")

    def _noise(self, x: Tensor) -> Tensor:
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)

    def __call__(self, x_a: Tensor, t_a: Tensor, x_b: Tensor, t_b: Tensor) -> tuple[Tensor, Tensor]:
        """``x_s: (B, L_s, ...)``, ``t_s: (B,)`` or ``(B, L_s)`` -> guided ``(x0_a, x0_b)``."""
        if self.scale_a == 1 and self.scale_b == 1:
            return self.joint_fn(x_a, t_a, x_b, t_b)
        B = x_a.shape[0]
        rows_a, rows_t_a, rows_b, rows_t_b = [x_a], [t_a], [x_b], [t_b]
        if self.scale_a != 1:  # b dropped: a's unconditional branch
            rows_a.append(x_a), rows_t_a.append(t_a)
            rows_b.append(self._noise(x_b)), rows_t_b.append(torch.ones_like(t_b))
        if self.scale_b != 1:  # a dropped: b's unconditional branch
            rows_a.append(self._noise(x_a)), rows_t_a.append(torch.ones_like(t_a))
            rows_b.append(x_b), rows_t_b.append(t_b)
        out_a, out_b = self.joint_fn(torch.cat(rows_a), torch.cat(rows_t_a), torch.cat(rows_b), torch.cat(rows_t_b))
        x0_a, x0_b = out_a[:B], out_b[:B]
        row = B
        if self.scale_a != 1:
            x0_a = cfg(x0_a, out_a[row : row + B], self.scale_a)
            row += B
        if self.scale_b != 1:
            x0_b = cfg(x0_b, out_b[row : row + B], self.scale_b)
        return x0_a, x0_b
