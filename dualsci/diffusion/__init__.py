"""Noise processes, objectives and samplers of dualsci (public surface: ``docs/core_api.md``).

Convention everywhere: t = 0 data, t = 1 noise; Gaussian paths ``x_t = α_t·x0 + σ_t·ε`` with the VE view
``x̃ = x_t/α_t``, ``σ̃ = σ_t/α_t`` used by the samplers.
"""

from __future__ import annotations

from dualsci.diffusion.bernoulli import BernoulliProcess, CategoricalProcess
from dualsci.diffusion.guidance import CFGDenoiser, StreamDropGuidance, cfg
from dualsci.diffusion.joint import (
    JointSchedule,
    asynchronous,
    conditional_b,
    marginal_b,
    sample_joint,
    synchronous,
)
from dualsci.diffusion.loss_weights import WEIGHT_NAMES, weight
from dualsci.diffusion.objective import GaussianDenoiser, GaussianObjective
from dualsci.diffusion.parameterizations import EDMPrecond, EpsParam, VelocityParam, VParam, X0Param
from dualsci.diffusion.paths import EDMPath, GaussianPath, RectifiedFlowPath, VPPath
from dualsci.diffusion.samplers import (
    SAMPLERS,
    Churn,
    karras_sigmas,
    sample_dpmpp_2m,
    sample_dpmpp_3m,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    time_grid,
)
from dualsci.diffusion.seeding import per_sample_noise, randn_like, sample_generators
from dualsci.diffusion.time_distributions import (
    BetaTime,
    LogitNormalTime,
    LogNormalSigmaTime,
    ModeTime,
    UniformTime,
    shift_time,
)
from dualsci.diffusion.toy import gaussian_toy_error

__all__ = [
    "BernoulliProcess",
    "BetaTime",
    "Churn",
    "CFGDenoiser",
    "CategoricalProcess",
    "EDMPath",
    "EDMPrecond",
    "EpsParam",
    "GaussianDenoiser",
    "GaussianObjective",
    "GaussianPath",
    "JointSchedule",
    "LogNormalSigmaTime",
    "LogitNormalTime",
    "ModeTime",
    "RectifiedFlowPath",
    "SAMPLERS",
    "StreamDropGuidance",
    "UniformTime",
    "VParam",
    "VPPath",
    "VelocityParam",
    "WEIGHT_NAMES",
    "X0Param",
    "asynchronous",
    "cfg",
    "conditional_b",
    "gaussian_toy_error",
    "karras_sigmas",
    "marginal_b",
    "per_sample_noise",
    "randn_like",
    "sample_dpmpp_2m",
    "sample_dpmpp_3m",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_generators",
    "sample_heun",
    "sample_joint",
    "shift_time",
    "synchronous",
    "time_grid",
    "weight",
]
