"""One stream's Gaussian diffusion maths: Path × Parameterisation × TimeDistribution × LossWeight.

The four choices stay separate objects (guide core.md §3) so that each can be tested on its own; this
module only combines them. ``GaussianDenoiser`` turns a trained network into the VE denoiser
``D(x̃, σ̃) → x̂0`` that every sampler in ``samplers.py`` consumes, whatever the path.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from torch import Tensor

from dualsci.diffusion.loss_weights import WEIGHT_NAMES, weight
from dualsci.diffusion.parameterizations import EDMPrecond, Parameterization
from dualsci.diffusion.paths import GaussianPath, check_option, expand_time

_NATIVE = {"EpsParam": "eps", "X0Param": "unit", "VParam": "v", "VelocityParam": "flow", "EDMPrecond": "edm"}


def _wide(t: Tensor) -> Tensor:
    """float64 for weight ratios (MPS has none: stay in float32 there)."""
    return t.to(torch.float32 if t.device.type == "mps" else torch.float64)


class GaussianObjective:
    """Training and sampling maths of one Gaussian stream.

    Args:
        path: ``RectifiedFlowPath``, ``VPPath`` or ``EDMPath``.
        param: ``EpsParam``, ``X0Param``, ``VParam``, ``VelocityParam`` or ``EDMPrecond``.
        time_dist: any object with ``sample(n, generator=None, device=None) -> (n,)``.
        loss_weight: the weight ``w(t)`` on the **x0 error** (``loss_weights.WEIGHT_NAMES``), or
            ``"native"`` for the plain MSE on the network's own target. ``"unit"`` therefore means
            w = 1 on ``‖x̂0 − x0‖²``, i.e. plain x0-MSE, whatever the network predicts.
        sigma_data: data std for the ``edm`` / ``soft_min_snr`` weights (default: the
            ``EDMPrecond``'s, else 0.5).
        gamma: Min-SNR clip.
    """

    def __init__(
        self,
        path: GaussianPath,
        param: Parameterization,
        time_dist: Any,
        loss_weight: Literal["eps", "v", "flow", "edm", "min_snr", "soft_min_snr", "unit", "native"] = "unit",
        sigma_data: float | None = None,
        gamma: float = 5.0,
    ) -> None:
        self.path, self.param, self.time_dist = path, param, time_dist
        self.loss_weight = check_option("loss_weight", loss_weight, (*WEIGHT_NAMES, "native"))
        if sigma_data is None:
            sigma_data = param.sigma_data if isinstance(param, EDMPrecond) else 0.5
        self.sigma_data, self.gamma = float(sigma_data), float(gamma)

    def sample_time(self, B: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """``(B,)`` training times from the time distribution."""
        return self.time_dist.sample(B, generator=generator, device=device)

    def corrupt(
        self, x0: Tensor, t: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(x_t, noise)`` with ``x_t = α_t·x0 + σ_t·ε``; x0: ``(B, ...)``, t: ``(B,)`` or ``(B, L)``."""
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return self.path.q_sample(x0, t, noise), noise

    def net_input(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_in, c_noise)`` to feed the network."""
        return self.param.net_input(x_t, t, self.path)

    def to_x0(self, F: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Data estimate from the network output ``F`` (same shape as ``x_t``)."""
        return self.param.to_x0(F, x_t, t, self.path)

    def target_factor(self, t: Tensor) -> Tensor:
        """``w(t)/w_native(t)``: multiplies the target-space squared error to realise ``w`` on the x0 error.

        Exactly 1 when the chosen weight is the parameterisation's own (so eps-param with the ``eps``
        weight is plain ε-MSE even at t = 0 where both weights diverge).
        """
        t = torch.as_tensor(t)
        native = _NATIVE[type(self.param).__name__]
        same = self.loss_weight == "native" or (
            self.loss_weight == native
            and (native != "edm" or self.param.sigma_data == self.sigma_data)
        )
        if same:
            return torch.ones_like(t)
        tw = _wide(t)
        w = weight(self.loss_weight, self.path, tw, sigma_data=self.sigma_data, gamma=self.gamma)
        return (w / self.param.native_weight(tw, self.path)).to(t.dtype)

    def loss(
        self,
        F: Tensor,
        x0: Tensor,
        x_t: Tensor,
        noise: Tensor,
        t: Tensor,
        mask: Tensor | None = None,
        spatial_weight: Tensor | None = None,
    ) -> Tensor:
        """Per-sample loss ``(B,)``: mean over real elements of ``factor(t)·spatial_weight·(F − target)²``.

        The factor is ``target_factor(t)``, so the value equals ``w(t)·‖x̂0 − x0‖²`` (mean over elements)
        for the chosen x0-weight ``w``, while the gradient flows through the target-space error.

        Args:
            F: network output ``(B, ...)``.
            x0, x_t, noise: ``(B, ...)``.
            t: ``(B,)`` or per-token ``(B, L)``.
            mask: True = real element; ``(B, L)`` token mask or any shape broadcastable to ``x0`` after
                trailing singleton dims are appended. Padded elements add nothing and are not counted.
            spatial_weight: same broadcasting as ``mask``; multiplies the squared error (the mean still
                divides by the number of real elements).
        """
        target = self.param.target(x0, noise, x_t, t, self.path)
        err = (F - target) ** 2 * expand_time(self.target_factor(t).to(F.device, F.dtype), F)
        if spatial_weight is not None:
            err = err * expand_time(spatial_weight.to(F.dtype), F)
        dims = tuple(range(1, F.ndim))
        if mask is None:
            return err.mean(dim=dims)
        m = expand_time(mask.to(F.dtype), F).expand_as(F)
        return (err * m).sum(dim=dims) / m.sum(dim=dims).clamp(min=1.0)

    def __repr__(self) -> str:
        return (
            f"GaussianObjective(path={self.path!r}, param={self.param!r}, "
            f"time_dist={type(self.time_dist).__name__}, loss_weight={self.loss_weight!r})"
        )


class GaussianDenoiser:
    """Wrap a network into the VE denoiser ``D(x̃, σ̃) → x̂0`` used by the samplers, for any path.

    ``D`` converts ``σ̃ → t`` with the path inverse and ``x̃ → x_t = α·x̃``, feeds
    ``net_fn(x_in, c_noise, **kwargs)`` (inputs in ``x̃``'s dtype, never float64 unless ``x̃`` is) and
    maps the output back with the parameterisation.

    Args:
        net_fn: ``net_fn(x_in: (B, ...), c_noise: (B,) or (B, L), **kwargs) -> F: (B, ...)``.
        objective: the stream's ``GaussianObjective``.
    """

    def __init__(self, net_fn: Callable[..., Tensor], objective: GaussianObjective) -> None:
        self.net_fn, self.objective = net_fn, objective

    def __call__(self, x: Tensor, sigma: Tensor, **kwargs: Any) -> Tensor:
        """x: ``(B, ...)`` in VE coordinates; sigma: ``(B,)`` or ``(B, L)`` σ̃ (finite, > 0)."""
        path = self.objective.path
        t = path.t_of_sigma_tilde(_wide(torch.as_tensor(sigma, device=x.device)))
        x_t = path.from_ve(x, t)
        t = t.to(x.dtype)
        x_in, c_noise = self.objective.net_input(x_t, t)
        F = self.net_fn(x_in, c_noise, **kwargs)
        return self.objective.to_x0(F, x_t, t)
