"""What the network predicts (guide core.md §3.2); every choice reduces to ``x̂0(x_t, t)`` for sampling.

Each parameterisation has
- ``net_input(x_t, t, path) -> (x_in, c_noise)``: what the network sees (``c_noise`` is the time
  coordinate for ``TimestepEmbedding``: t itself, or ``¼·ln σ̃`` for EDM);
- ``to_x0(F, x_t, t, path)``: the data estimate implied by the network output ``F``;
- ``target(x0, noise, x_t, t, path)``: the regression target of ``F``;
- ``native_weight(t, path)``: the weight ``w`` with ``‖F − target‖² = w·‖x̂0 − x0‖²``, i.e. which
  x0-error weight a plain MSE on ``F`` realises (used by ``GaussianObjective``).

Shapes: ``x_t, x0, noise, F``: ``(B, ...)``; ``t``: ``(B,)`` or per-token ``(B, L)``. The eps, v and flow
formulas are written for a general path (α, σ), not only the path they are usually paired with.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from dualsci.diffusion.paths import GaussianPath, check_option, expand_time


def _coeffs(path: GaussianPath, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """α_t, σ_t broadcast over ``x`` in ``x``'s dtype."""
    t = torch.as_tensor(t, device=x.device)
    return (
        expand_time(path.alpha(t), x).to(x.dtype),
        expand_time(path.sigma(t), x).to(x.dtype),
    )


class _TimeInput:
    """Network sees ``x_t`` unchanged and ``c_noise = t``."""

    def net_input(self, x_t: Tensor, t: Tensor, path: GaussianPath) -> tuple[Tensor, Tensor]:
        return x_t, torch.as_tensor(t, device=x_t.device).to(x_t.dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EpsParam(_TimeInput):
    """Noise prediction: ``F = ε̂``, ``x̂0 = (x_t − σ·ε̂)/α`` (undefined where α = 0)."""

    name = "eps"

    def to_x0(self, F: Tensor, x_t: Tensor, t: Tensor, path: GaussianPath) -> Tensor:
        a, s = _coeffs(path, t, x_t)
        return (x_t - s * F) / a

    def target(self, x0: Tensor, noise: Tensor, x_t: Tensor, t: Tensor, path: GaussianPath) -> Tensor:
        return noise

    def native_weight(self, t: Tensor, path: GaussianPath) -> Tensor:
        return (path.alpha(t) / path.sigma(t)) ** 2  # SNR


class X0Param(_TimeInput):
    """Data prediction: ``F = x̂0``."""

    name = "x0"

    def to_x0(self, F: Tensor, x_t: Tensor, t: Tensor, path: GaussianPath) -> Tensor:
        return F

    def target(self, x0: Tensor, noise: Tensor, x_t: Tensor, t: Tensor, path: GaussianPath) -> Tensor:
        return x0

    def native_weight(self, t: Tensor, path: GaussianPath) -> Tensor:
        return torch.ones_like(torch.as_tensor(t))


class VParam(_TimeInput):
    """v-prediction ``v = α·ε − σ·x0``; ``x̂0 = (α·x_t − σ·v̂)/(α² + σ²)`` (= ``α·x_t − σ·v̂`` on VP)."""

    name = "v"

    def to_x0(self, F: Tensor, x_t: Tensor, t: Tensor, path: GaussianPath) -> Tensor:
        a, s = _coeffs(path, t, x_t)
        return (a * x_t - s * F) / (a * a + s * s)

    def target(self, x0: Tensor, noise: Tensor, x_t: Tensor, t: Tensor, path: GaussianPath) -> Tensor:
        a, s = _coeffs(path, t, x0)
        return a * noise - s * x0

    def native_weight(self, t: Tensor, path: GaussianPath) -> Tensor:
        a, s = path.alpha(t), path.sigma(t)
        return (a * a + s * s) ** 2 / (s * s)  # 1/σ² on VP


class VelocityParam(_TimeInput):
    """Flow velocity (SD3 sign) ``u = ε − x0``; ``x̂0 = (x_t − σ·û)/(α + σ)`` (= ``x_t − t·û`` on rf).

    MONAI RFlow's target is ``x0 − ε`` (opposite sign): convert at the app edge.
    """

    name = "flow"

    def to_x0(self, F: Tensor, x_t: Tensor, t: Tensor, path: GaussianPath) -> Tensor:
        a, s = _coeffs(path, t, x_t)
        return (x_t - s * F) / (a + s)

    def target(self, x0: Tensor, noise: Tensor, x_t: Tensor, t: Tensor, path: GaussianPath) -> Tensor:
        return noise - x0

    def native_weight(self, t: Tensor, path: GaussianPath) -> Tensor:
        a, s = path.alpha(t), path.sigma(t)
        return ((a + s) / s) ** 2  # 1/t² on rf


EDMPrediction = Literal["x0", "v"]


class EDMPrecond:
    """EDM preconditioning in VE coordinates (works on any path through ``x̃ = x_t/α``, ``σ̃ = σ/α``).

    ``x̂0 = c_skip·x̃ + c_out·F(c_in·x̃, c_noise)`` with ``c_skip = σd²/(σ̃² + σd²)``,
    ``c_out = σ̃·σd/√(σ̃² + σd²)``, ``c_in = 1/√(σ̃² + σd²)``, ``c_noise = ¼·ln σ̃``.
    ``prediction="v"`` negates ``c_out`` (k-diffusion ``VDenoiser``): with ``sigma_data=1`` on a VP path,
    ``F`` is then exactly the VP v-prediction ``α·ε − σ·x0`` of the input ``c_in·x̃ = x_t``.
    Feed ``c_noise`` to ``TimestepEmbedding(scale=1.0)``.
    """

    name = "edm"

    def __init__(self, sigma_data: float = 0.5, prediction: EDMPrediction = "x0") -> None:
        if sigma_data <= 0:
            raise ValueError(f"sigma_data={sigma_data} must be > 0")
        self.sigma_data = float(sigma_data)
        self.prediction = check_option("prediction", prediction, get_args(EDMPrediction))

    def coefficients(self, sigma_tilde: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(c_skip, c_out, c_in)`` for ``σ̃`` of any shape."""
        sd2 = self.sigma_data**2
        norm = torch.sqrt(sigma_tilde**2 + sd2)
        c_out = sigma_tilde * self.sigma_data / norm
        if self.prediction == "v":
            c_out = -c_out
        return sd2 / (sigma_tilde**2 + sd2), c_out, 1.0 / norm

    def _ve(self, x_t: Tensor, t: Tensor, path: GaussianPath) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t = torch.as_tensor(t, device=x_t.device)
        st = path.sigma_tilde(t)
        c_skip, c_out, c_in = (expand_time(c, x_t).to(x_t.dtype) for c in self.coefficients(st))
        return path.to_ve(x_t, t), c_skip, c_out, c_in

    def net_input(self, x_t: Tensor, t: Tensor, path: GaussianPath) -> tuple[Tensor, Tensor]:
        x_ve, _, _, c_in = self._ve(x_t, t, path)
        st = path.sigma_tilde(torch.as_tensor(t, device=x_t.device))
        return c_in * x_ve, (0.25 * torch.log(st)).to(x_t.dtype)

    def to_x0(self, F: Tensor, x_t: Tensor, t: Tensor, path: GaussianPath) -> Tensor:
        x_ve, c_skip, c_out, _ = self._ve(x_t, t, path)
        return c_skip * x_ve + c_out * F

    def target(self, x0: Tensor, noise: Tensor, x_t: Tensor, t: Tensor, path: GaussianPath) -> Tensor:
        x_ve, c_skip, c_out, _ = self._ve(x_t, t, path)
        return (x0 - c_skip * x_ve) / c_out

    def native_weight(self, t: Tensor, path: GaussianPath) -> Tensor:
        return 1.0 / self.coefficients(path.sigma_tilde(t))[1] ** 2  # 1/σ̃² + 1/σd²

    def __repr__(self) -> str:
        return f"EDMPrecond(sigma_data={self.sigma_data}, prediction={self.prediction!r})"


Parameterization = EpsParam | X0Param | VParam | VelocityParam | EDMPrecond
