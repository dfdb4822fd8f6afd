"""The dual-noise training objective (Echo-DND maths, correct versions).

One shared ``t ~ U(0, 1)`` per example (0 data, 1 noise) for both chains:
- Gaussian chain on ``x0_G = 2·mask − 1`` along ``VPPath("linear")`` (β 1e-4 → 0.02, T = 1000),
  ε-prediction, plain ε-MSE (``dualsci.diffusion.GaussianObjective``);
- Bernoulli chain on ``x0_B = mask`` with the **correct** marginal ``B(ᾱ·x0 + (1 − ᾱ)/2)`` and posterior
  (``dualsci.diffusion.BernoulliProcess``); the network outputs logits, sigmoid applied before any
  probability formula; loss = BCE/ln 2 + ``vlb_weight``·KL(q(x_s|x_t,x0) ‖ p_θ(x_s|x_t))/ln 2 for the jump
  t → s = t − ``vlb_jump`` (the sampler's step);
- calibration: ``cal_weight``·mean‖mask − σ(cal)‖² (the spatial-coherence calibration loss).

Total: ``L_G + L_B + vlb_weight·L_vb,B + cal_weight·L_cal``. No learned Gaussian variance (the few-step
samplers are deterministic DDIM), hence no ``L_vb,G``: in Echo-DND that term only trains the variance head.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dualsci.diffusion import BernoulliProcess, EpsParam, GaussianObjective, UniformTime, VParam, VPPath, X0Param

LN2 = math.log(2.0)
GAUSSIAN_PARAMS = {"eps": EpsParam, "v": VParam, "x0": X0Param}


class EchoDNDObjective:
    """Loss of one batch ``{"image": (B, 1, S, S), "mask": (B, 1, S, S)}``.

    Args:
        bernoulli_schedule: ᾱ(t) of the Bernoulli chain on the shared clock (``"cosine"`` or ``"linear"``).
        vlb_weight: weight of the Bernoulli KL (VLB) term.
        vlb_jump: the jump t → t − vlb_jump used for that KL (1/20 = the default sampler's step).
        cal_weight: λ of the calibration loss.
        gaussian_weight, bernoulli_weight: chain weights (1, 1); set one to 0 for single-chain ablations.
        gaussian_param: what the Gaussian head predicts: ``"eps"`` (default, Echo-DND), ``"v"`` or ``"x0"``
            (trained with the plain MSE on that target). Measured: after 261 steps at 128² the ε chain's
            x̂0 was still poor for t ≥ 0.6, where x̂0 = (x_t − σ·ε̂)/α amplifies ε errors by 1/α.
    """

    def __init__(self, bernoulli_schedule: str = "cosine", vlb_weight: float = 0.01, vlb_jump: float = 0.05,
                 cal_weight: float = 1.0, gaussian_weight: float = 1.0, bernoulli_weight: float = 1.0,
                 gaussian_param: str = "eps"):
        if gaussian_param not in GAUSSIAN_PARAMS:
            raise ValueError(f"gaussian_param must be one of {tuple(GAUSSIAN_PARAMS)}, got {gaussian_param!r}")
        self.path = VPPath("linear", T=1000)
        self.gaussian = GaussianObjective(self.path, GAUSSIAN_PARAMS[gaussian_param](), UniformTime(), loss_weight="native")
        self.bernoulli = BernoulliProcess(bernoulli_schedule, kl_weight=0.0)
        if min(vlb_weight, cal_weight, gaussian_weight, bernoulli_weight) < 0:
            raise ValueError("loss weights must be ≥ 0")
        self.vlb_weight, self.vlb_jump, self.cal_weight = float(vlb_weight), float(vlb_jump), float(cal_weight)
        self.gaussian_weight, self.bernoulli_weight = float(gaussian_weight), float(bernoulli_weight)

    def loss(self, net: nn.Module, batch: dict) -> dict[str, Tensor]:
        image, mask = batch["image"], batch["mask"].float()
        B = image.shape[0]
        t = torch.rand(B, device=image.device)
        x0_g = 2.0 * mask - 1.0
        x_g, noise = self.gaussian.corrupt(x0_g, t)
        x_b = self.bernoulli.q_sample(mask, t)
        eps_hat, logits, cal = net(image, x_g, x_b, t)
        eps_hat, logits, cal = eps_hat.float(), logits.float(), cal.float()
        l_g = self.gaussian.loss(eps_hat, x0_g, x_g, noise, t).mean()
        bce = nn.functional.binary_cross_entropy_with_logits(logits, mask) / LN2
        s = (t - self.vlb_jump).clamp(min=0.0)
        kl = self.bernoulli.kl(self.bernoulli.posterior_prob(x_b, mask, t, s),
                               self.bernoulli.posterior_prob(x_b, torch.sigmoid(logits), t, s)).mean() / LN2
        l_cal = ((torch.sigmoid(cal) - mask) ** 2).mean()
        total = self.gaussian_weight * l_g + self.bernoulli_weight * (bce + self.vlb_weight * kl) + self.cal_weight * l_cal
        return {"loss": total, "gaussian": l_g.detach(), "bernoulli": bce.detach(), "vlb_bernoulli": kl.detach(),
                "calibration": l_cal.detach()}

    def sample(self, net: nn.Module, batch: dict, **kw) -> dict:
        """Ensemble segmentation of a batch (used by ``predict``); see :func:`apps.echo.sampling.segment_batch`."""
        from apps.echo.sampling import segment_batch

        return segment_batch(net, batch["image"], objective=self, **kw)
