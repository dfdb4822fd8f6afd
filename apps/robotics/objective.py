"""DUST's decoupled flow-matching objective in dualsci's convention (guide robotics.md §2).

DUST/GR00T write τ = 1 clean: ``A^τ = τ·A + (1−τ)·ε``, target ``A − ε``. dualsci uses t = 1 − τ (t = 1
noise) on the rectified-flow path ``x_t = (1−t)·x0 + t·ε`` with velocity target ``u = ε − x0`` (the
sign flips; `dust_to_dualsci` below is the tested converter). Loss per batch:

    L = mean_{action samples} ‖û_a − (ε_a − A)‖² + λ_WM · mean ‖û_b − (ε_b − õ)‖²

with ``t_a`` and ``t_b`` drawn independently (``variant="dust"``), shared (``"joint_noise"``, the DUST
ablation), or no vision stream (``"action_only"``). Video-only samples (``has_action`` False) are
trained on the vision stream only, with the action stream held at full noise (t_a = 1, UWM's trick).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from dualsci.diffusion import BetaTime, LogitNormalTime, UniformTime

from apps.robotics.model import DustPolicyNet, check_option

TimeDist = Literal["gr00t_beta", "uniform", "logit_normal"]
TIME_DISTS: tuple[str, ...] = get_args(TimeDist)


def make_time_dist(name: str):
    """``gr00t_beta`` (GR00T-N1.5: s ~ Beta(1.5, 1), t = s/0.999, biased to noise), ``uniform``,
    ``logit_normal`` (SD3: sigmoid(N(0, 1)))."""
    check_option("time_dist", name, TIME_DISTS)
    if name == "gr00t_beta":
        return BetaTime(1.5, 1.0, 0.999, style="gr00t")
    if name == "uniform":
        return UniformTime()
    return LogitNormalTime(0.0, 1.0)


def dust_to_dualsci(tau: Tensor, velocity_dust: Tensor) -> tuple[Tensor, Tensor]:
    """Convert DUST's (τ, V = x0 − ε) into dualsci's (t = 1 − τ, u = ε − x0)."""
    return 1.0 - tau, -velocity_dust


class DustObjective:
    """Decoupled flow matching for `DustPolicyNet`.

    Args:
        variant: ``dust`` (independent t_a, t_b), ``joint_noise`` (t_b = t_a), ``action_only``
            (no vision loss; the net must be built with the same variant).
        time_dist: distribution of t for both streams (see `make_time_dist`).
        lambda_wm: weight of the vision (world-model) loss.
        n_action_steps, n_vision_steps, phase: defaults for `sample` (predict).
    """

    def __init__(self, variant: str = "dust", time_dist: str = "gr00t_beta", lambda_wm: float = 1.0,
                 n_action_steps: int = 4, n_vision_steps: int = 4, phase: str = "end"):
        from apps.robotics.model import VARIANTS

        self.variant = check_option("variant", variant, VARIANTS)
        self.time_dist_name = check_option("time_dist", time_dist, TIME_DISTS)
        self.time_dist = make_time_dist(time_dist)
        if lambda_wm < 0:
            raise ValueError(f"lambda_wm must be >= 0, got {lambda_wm}")
        self.lambda_wm = float(lambda_wm)
        self.n_action_steps, self.n_vision_steps, self.phase = n_action_steps, n_vision_steps, phase

    def _times(self, b: int, device) -> Tensor:
        return self.time_dist.sample(b).to(device)

    def loss(self, net: nn.Module, batch: Any) -> dict[str, Tensor]:
        """`net`: a `DustPolicyNet`; batch keys as `apps.robotics.data.windows.WindowDataset` items."""
        if net.variant != self.variant and "action_only" in (net.variant, self.variant):
            raise ValueError(f"objective variant {self.variant!r} does not match the net's {net.variant!r}")
        if net.training:
            net.update_target()  # EMA target follows the online encoder (no-op for other targets)
        obs_tok, cond = net.encode_obs(batch["obs_state"], batch.get("obs_image"), batch.get("task"))
        b, dev = cond.shape[0], cond.device
        has_action = batch["has_action"].to(dev).bool()
        x0_a = net.normalize_action(batch["action"])
        t_a = self._times(b, dev)
        # Video-only samples: actions at full noise, no action loss.
        t_a = torch.where(has_action, t_a, torch.ones_like(t_a))
        eps_a = torch.randn_like(x0_a)
        xt_a = (1 - t_a[:, None, None]) * x0_a + t_a[:, None, None] * eps_a
        if self.variant == "action_only":
            u_a, _ = net(obs_tok, cond, xt_a, t_a, None, t_a)
            loss_b = torch.zeros((), device=dev)
        else:
            x0_b = net.future_tokens(batch["future_state"], batch.get("future_image"), batch.get("future_states"))
            t_b = t_a if self.variant == "joint_noise" else self._times(b, dev)
            if self.variant == "joint_noise":
                # Shared time for action samples; video-only samples still need a vision time.
                t_b = torch.where(has_action, t_a, self._times(b, dev))
            eps_b = torch.randn_like(x0_b)
            xt_b = (1 - t_b[:, None, None]) * x0_b + t_b[:, None, None] * eps_b
            u_a, u_b = net(obs_tok, cond, xt_a, t_a, xt_b, t_b)
            loss_b = ((u_b - (eps_b - x0_b)) ** 2).mean()
        per_a = ((u_a - (eps_a - x0_a)) ** 2).mean(dim=(1, 2))
        w = has_action.float()
        loss_a = (per_a * w).sum() / w.sum().clamp_min(1.0)
        loss = loss_a + self.lambda_wm * loss_b
        return {"loss": loss, "loss_action": loss_a.detach(), "loss_vision": loss_b.detach()}

    @torch.no_grad()
    def sample(self, net: DustPolicyNet, batch: dict[str, Tensor], **kw) -> dict[str, Tensor]:
        """Policy-mode sampling for ``predict``: ``{"action": (B, H, D_a) raw units, "future": tokens}``."""
        from apps.robotics.sampling import sample_chunk

        kw.setdefault("n_action_steps", self.n_action_steps)
        kw.setdefault("n_vision_steps", self.n_vision_steps)
        kw.setdefault("phase", self.phase)
        kw.setdefault("task", batch.get("task"))
        return sample_chunk(net, batch["obs_state"], batch.get("obs_image"), **kw)
