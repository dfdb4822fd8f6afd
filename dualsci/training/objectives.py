"""``JointGaussianObjective``: two Gaussian streams through one dual-stream network.

The generic two-stream case of the :class:`~dualsci.training.module.Objective` protocol: each stream
keeps its own ``GaussianObjective`` (path, parameterisation, time density, loss weight); this class
only draws the two times, makes the one joint network call and adds the two losses. Sampling runs
``dualsci.diffusion.sample_joint`` along any ``JointSchedule`` (synchronous, asynchronous,
conditional, marginal).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from dualsci.diffusion import GaussianObjective, JointSchedule, sample_joint

# Optional batch entries forwarded to the network, by name (see DualStreamTransformer.forward).
_NET_KEYS = ("cond", "cond_a", "cond_b", "pos_a", "pos_b", "mask_a", "mask_b")
# Condition entries dropped independently by cond_drop_prob (per-stream prompts: MedSegFactory style).
_COND_KEYS = ("cond", "cond_a", "cond_b")


def _kept_mean(
    stream: GaussianObjective, keep: Tensor, F: Tensor, x0: Tensor, x_t: Tensor, noise: Tensor, t: Tensor,
    mask: Tensor | None,
) -> Tensor:
    """Batch mean of one stream's per-sample loss over the samples where ``keep: (B,)`` is True.

    A dropped stream (pure noise at t = 1) carries no information about its target, so it is left
    out; its rows are removed *before* the loss because some parameterisations divide by α_t = 0
    there, and 0·inf would still poison the gradient. Dropped rows count as 0 in the mean over B.
    """
    if bool(keep.all()):
        return stream.loss(F, x0, x_t, noise, t, mask=mask).mean()
    rows = lambda v: None if v is None else v[keep]  # noqa: E731
    per_sample = stream.loss(F[keep], x0[keep], x_t[keep], noise[keep], t[keep], mask=rows(mask))
    return per_sample.sum() / keep.numel()


class JointGaussianObjective:
    """Loss and joint sampling for a batch ``{"a": (B, L_a, C_a), "b": (B, L_b, C_b), ...}``.

    Optional batch entries ``cond``, ``cond_a``, ``cond_b``, ``pos_a``, ``pos_b``, ``mask_a``, ``mask_b`` go to the network
    as keyword arguments of the same name (masks also mask the losses).

    Args:
        stream_a: stream a's ``GaussianObjective``.
        stream_b: stream b's ``GaussianObjective``.
        shared_time: one t for both streams (SD3/MedSegFactory inference style); False draws them
            independently (DUST), which is what asynchronous and conditional sampling need.
        weight_b: weight of stream b's loss in ``loss = loss_a + weight_b·loss_b``.
        sample_steps: steps of the default synchronous schedule used by ``sample``.
        stream_drop_prob: per sample, the probability that one stream (a or b, evenly) is dropped:
            set to pure noise at t = 1 and left out of the loss, so the model also learns each stream's
            marginal; what ``dualsci.diffusion.StreamDropGuidance`` guides against.
        cond_drop_prob: per sample, the probability that ``batch["cond"]`` (and, independently,
            ``cond_a`` and ``cond_b``) is replaced by the null condition (zeros), for classifier-free
            guidance with ``CFGDenoiser(null_cond=zeros)``.
    """

    def __init__(
        self,
        stream_a: GaussianObjective,
        stream_b: GaussianObjective,
        shared_time: bool = False,
        weight_b: float = 1.0,
        sample_steps: int = 20,
        stream_drop_prob: float = 0.0,
        cond_drop_prob: float = 0.0,
    ) -> None:
        for name, p in (("stream_drop_prob", stream_drop_prob), ("cond_drop_prob", cond_drop_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"JointGaussianObjective: {name} must lie in [0, 1], got {p}")
        if weight_b < 0:
            raise ValueError(f"JointGaussianObjective: weight_b must be >= 0, got {weight_b}")
        if sample_steps < 1:
            raise ValueError(f"JointGaussianObjective: sample_steps must be >= 1, got {sample_steps}")
        self.stream_a, self.stream_b = stream_a, stream_b
        self.shared_time = bool(shared_time)
        self.weight_b = float(weight_b)
        self.sample_steps = int(sample_steps)
        self.stream_drop_prob, self.cond_drop_prob = float(stream_drop_prob), float(cond_drop_prob)

    def loss(self, net: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``{"loss", "loss_a", "loss_b"}``, each the batch mean of the per-sample stream losses."""
        x_a, x_b = batch["a"], batch["b"]
        B = x_a.shape[0]
        t_a = self.stream_a.sample_time(B, device=x_a.device).to(x_a.dtype)
        t_b = t_a if self.shared_time else self.stream_b.sample_time(B, device=x_b.device).to(x_b.dtype)
        keep_a = keep_b = torch.ones(B, dtype=torch.bool, device=x_a.device)
        if self.stream_drop_prob > 0:
            drop = torch.rand(B, device=x_a.device) < self.stream_drop_prob
            drop_a = drop & (torch.rand(B, device=x_a.device) < 0.5)
            keep_a, keep_b = ~drop_a, ~(drop & ~drop_a)
            t_a = torch.where(keep_a, t_a, torch.ones_like(t_a))
            t_b = torch.where(keep_b, t_b, torch.ones_like(t_b))
        if self.cond_drop_prob > 0:
            batch = {**batch, **{key: self._drop_cond(batch[key]) for key in _COND_KEYS if batch.get(key) is not None}}
        xt_a, noise_a = self.stream_a.corrupt(x_a, t_a)
        xt_b, noise_b = self.stream_b.corrupt(x_b, t_b)
        F_a, F_b = self._call(net, batch, xt_a, t_a, xt_b, t_b)
        loss_a = _kept_mean(self.stream_a, keep_a, F_a, x_a, xt_a, noise_a, t_a, batch.get("mask_a"))
        loss_b = _kept_mean(self.stream_b, keep_b, F_b, x_b, xt_b, noise_b, t_b, batch.get("mask_b"))
        return {"loss": loss_a + self.weight_b * loss_b, "loss_a": loss_a, "loss_b": loss_b}

    def _drop_cond(self, cond: Tensor) -> Tensor:
        """Replace each sample's condition by the null (zeros) with probability ``cond_drop_prob``."""
        null = torch.rand(cond.shape[0], device=cond.device) < self.cond_drop_prob
        return torch.where(null.reshape(-1, *[1] * (cond.ndim - 1)), torch.zeros_like(cond), cond)

    @torch.no_grad()
    def sample(
        self,
        net: nn.Module,
        batch: dict[str, Tensor],
        schedule: JointSchedule | None = None,
        solver: str = "euler",
        generator: torch.Generator | None = None,
        return_nfe: bool = False,
    ) -> dict[str, Any]:
        """Sample both streams jointly along ``schedule`` (default: synchronous, ``sample_steps``).

        A stream starts from ``q_sample(batch[s], t_s^0, ε)``: pure noise when its schedule starts
        at t = 1 (rf), the given clean ``batch[s]`` when it starts at 0 (e.g. ``conditional_b``).

        Returns:
            ``{"a": (B, L_a, C_a), "b": (B, L_b, C_b)}`` (plus ``"nfe"`` with ``return_nfe``).
        """
        schedule = schedule or JointSchedule.synchronous(self.sample_steps)
        start = schedule.times[0]
        x_a = self._start(self.stream_a, batch["a"], float(start[0]), generator)
        x_b = self._start(self.stream_b, batch["b"], float(start[1]), generator)

        def joint_fn(xa: Tensor, ta: Tensor, xb: Tensor, tb: Tensor) -> tuple[Tensor, Tensor]:
            F_a, F_b = self._call(net, batch, xa, ta, xb, tb)
            return self.stream_a.to_x0(F_a, xa, ta), self.stream_b.to_x0(F_b, xb, tb)

        out = sample_joint(
            joint_fn, x_a, x_b, schedule, self.stream_a.path, self.stream_b.path, solver=solver, return_nfe=True
        )
        result: dict[str, Any] = {"a": out[0], "b": out[1]}
        if return_nfe:
            result["nfe"] = out[2]
        return result

    def _call(
        self, net: nn.Module, batch: dict[str, Tensor], xt_a: Tensor, t_a: Tensor, xt_b: Tensor, t_b: Tensor
    ) -> tuple[Tensor, Tensor]:
        in_a, c_a = self.stream_a.net_input(xt_a, t_a)
        in_b, c_b = self.stream_b.net_input(xt_b, t_b)
        extra = {key: batch[key] for key in _NET_KEYS if batch.get(key) is not None}
        return net(in_a, in_b, c_a, c_b, **extra)

    @staticmethod
    def _start(stream: GaussianObjective, x0: Tensor, t0: float, generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        t = torch.full((x0.shape[0],), t0, dtype=x0.dtype, device=x0.device)
        return stream.path.q_sample(x0, t, noise)

    def __repr__(self) -> str:
        return (
            f"JointGaussianObjective(stream_a={self.stream_a!r}, stream_b={self.stream_b!r}, "
            f"shared_time={self.shared_time}, weight_b={self.weight_b})"
        )
