"""Loss weights ``w(t)`` on the x0 error ``‖x̂0 − x0‖²`` (guide core.md §3.4).

Writing every weight on the x0 error makes them comparable across parameterisations; the equivalences
(for a general path x_t = α·x0 + σ·ε, σ̃ = σ/α, SNR = α²/σ²):

| name           | w(t)                        | equals                                                   |
|----------------|-----------------------------|----------------------------------------------------------|
| ``unit``       | 1                           | plain x0-MSE                                              |
| ``eps``        | SNR = 1/σ̃²                  | plain ε-MSE: ε̂ − ε = −(α/σ)(x̂0 − x0)                      |
| ``v``          | (α² + σ²)²/σ² (1/σ² on VP)  | plain v-MSE: v̂ − v = −((α² + σ²)/σ)(x̂0 − x0)              |
| ``flow``       | ((α + σ)/σ)² (1/t² on rf)   | plain velocity MSE: û − u = −((α + σ)/σ)(x̂0 − x0)         |
| ``edm``        | 1/σ̃² + 1/σd²                | unit weight on the EDM-preconditioned target (1/c_out²)   |
| ``min_snr``    | min(SNR, γ)                 | Min-SNR-γ                                                 |
| ``soft_min_snr`` | 1/(σ̃² + σd²)              | soft minimum 1/(1/SNR + 1/γ) with γ = σd⁻² (k-diffusion)  |
| ``native``     | the parameterisation's own  | plain MSE on whatever the network predicts                |

``native`` is resolved by ``GaussianObjective`` (it depends on the parameterisation, not on t alone).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from dualsci.diffusion.paths import GaussianPath, check_option

WeightName = Literal["eps", "v", "flow", "edm", "min_snr", "soft_min_snr", "unit"]
WEIGHT_NAMES: tuple[str, ...] = get_args(WeightName)


def weight(
    name: WeightName,
    path: GaussianPath,
    t: Tensor,
    sigma_data: float = 0.5,
    gamma: float = 5.0,
) -> Tensor:
    """Weight on the x0 error at time ``t``.

    Args:
        name: one of ``WEIGHT_NAMES``.
        path: the Gaussian path.
        t: ``(B,)`` or ``(B, L)`` times.
        sigma_data: data std for ``edm`` and ``soft_min_snr``.
        gamma: clip for ``min_snr``.

    Returns:
        ``w(t)`` with the shape and dtype of ``t`` (``inf`` where the weight diverges, e.g. SNR at t = 0).
    """
    check_option("loss_weight", name, WEIGHT_NAMES)
    t = torch.as_tensor(t)
    if name == "unit":
        return torch.ones_like(t)
    a, s = path.alpha(t), path.sigma(t)
    snr = (a / s) ** 2
    if name == "eps":
        return snr
    if name == "v":
        return (a * a + s * s) ** 2 / (s * s)
    if name == "flow":
        return ((a + s) / s) ** 2
    if name == "min_snr":
        return snr.clamp(max=gamma)
    st2 = (s / a) ** 2
    if name == "edm":
        return 1.0 / st2 + 1.0 / sigma_data**2
    return 1.0 / (st2 + sigma_data**2)  # soft_min_snr
