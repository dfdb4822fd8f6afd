"""Discrete diffusion on the Gaussian clock (t = 0 data, t = 1 noise), guide core.md §4.

``CategoricalProcess(K)`` is the uniform-kernel D3PM: ``q(x_t | x0) = Cat(ᾱ(t)·onehot(x0) + (1 − ᾱ(t))/K)``.
``BernoulliProcess`` is its K = 2 fast path on ``p = P(x = 1)``: ``q(x_t | x0) = B(ᾱ·x0 + (1 − ᾱ)/2)``,
which tends to B(½) as ᾱ → 0.

The BerDiff / Echo-DND anchors drop the ``+ (1 − ᾱ)/2`` term (a line break without continuation), so
their forward process collapses to all zeros while their sampler starts from B(½); the golden test in
``tests/core/test_diffusion_bernoulli.py`` pins the correct marginal.

Posterior for a jump t → s < t (D3PM x0-parameterisation): with ``α_{t|s} = ᾱ(t)/ᾱ(s)``,
``q(x_s | x_t, x0) ∝ [α_{t|s}·onehot(x_t) + (1 − α_{t|s})/K] ⊙ [ᾱ(s)·x0 + (1 − ᾱ(s))/K]``; plugging predicted
probabilities p̂0 for x0 marginalises the model's x0 belief because the second factor is linear in x0.
Networks output **logits**; every probability is clamped to ``[eps, 1 − eps]`` before logs.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from dualsci.diffusion.paths import check_option, expand_time
from dualsci.diffusion.seeding import GeneratorArg, bernoulli, rand_like

DiscreteSchedule = Literal["linear", "cosine"]
_COSINE_S = 0.008


def alpha_bar(t: Tensor | float, schedule: DiscreteSchedule) -> Tensor:
    """Signal fraction ᾱ(t) ∈ [0, 1]: ``1 − t`` (linear) or ``cos²(π/2·(t + s)/(1 + s))/cos²(π/2·s/(1 + s))``."""
    t = torch.as_tensor(t, dtype=torch.get_default_dtype()) if not torch.is_tensor(t) else t
    if schedule == "linear":
        ab = 1.0 - t
    else:
        f0 = math.cos(math.pi / 2 * _COSINE_S / (1 + _COSINE_S)) ** 2
        ab = torch.cos(math.pi / 2 * (t + _COSINE_S) / (1 + _COSINE_S)) ** 2 / f0
        # Pin the ends: cos(π/2) is not exactly 0 and the float32 ratio at t = 0 is not exactly 1.
        ab = torch.where(t >= 1, torch.zeros_like(ab), torch.where(t <= 0, torch.ones_like(ab), ab))
    return ab.clamp(0.0, 1.0)


def _jump_alpha(t: Tensor, s: Tensor, schedule: DiscreteSchedule) -> tuple[Tensor, Tensor]:
    """(α_{t|s}, ᾱ(s)) for a jump t → s."""
    ab_t, ab_s = alpha_bar(t, schedule), alpha_bar(s, schedule)
    return (ab_t / ab_s.clamp(min=1e-12)).clamp(0, 1), ab_s


def _time(t: Tensor | float, like: Tensor) -> Tensor:
    t = torch.as_tensor(t, device=like.device, dtype=torch.float32)
    return t if t.ndim > 0 else t.expand(like.shape[0])


class _DiscreteProcess:
    """Shared clock and reverse sampler; subclasses give ``_prior``, ``_to_prob`` and ``step``."""

    schedule: DiscreteSchedule

    def alpha_bar(self, t: Tensor | float) -> Tensor:
        """ᾱ(t), same shape as t."""
        return alpha_bar(t, self.schedule)

    def sample(
        self,
        model_fn: Callable[[Tensor, Tensor], Tensor],
        shape: tuple[int, ...],
        steps: int,
        generator: GeneratorArg = None,
        device=None,
        return_prob: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Ancestral sampling from the uniform prior at t = 1 to t = 0 on ``t_k = 1 − k/steps``.

        Args:
            model_fn: ``model_fn(x_t: shape, t: (B,)) -> x0 logits`` (``shape`` for Bernoulli,
                ``(*shape, K)`` for categorical); called once per step.
            shape: state shape ``(B, ...)``.
            steps: number of reverse jumps.
            return_prob: also return the last predicted x0 probabilities (soft mask).
        """
        if steps < 1:
            raise ValueError(f"steps={steps} must be >= 1")
        x = self._prior(tuple(shape), device, generator)
        prob = None
        for k in range(steps):
            t, s = 1 - k / steps, 1 - (k + 1) / steps
            logits = model_fn(x, torch.full((x.shape[0],), t, device=x.device))
            prob = self._to_prob(logits)
            x = self.step(x, logits, t, s, generator=generator)
        return (x, prob) if return_prob else x


class BernoulliProcess(_DiscreteProcess):
    """Bernoulli diffusion on binary tensors (values 0./1.), the K = 2 fast path.

    Args:
        schedule: ``"linear"`` (ᾱ = 1 − t) or ``"cosine"``.
        kl_weight: λ of the hybrid loss ``BCE + λ·KL`` (D3PM uses 0.001).
        eps: probability clamp.
    """

    def __init__(self, schedule: DiscreteSchedule = "cosine", kl_weight: float = 0.001, eps: float = 1e-6) -> None:
        self.schedule = check_option("schedule", schedule, get_args(DiscreteSchedule))
        self.kl_weight, self.eps = float(kl_weight), float(eps)

    def marginal_prob(self, x0: Tensor, t: Tensor | float) -> Tensor:
        """``P(x_t = 1 | x0) = ᾱ·x0 + (1 − ᾱ)/2``; x0: ``(B, ...)`` in [0, 1], t: ``(B,)``/``(B, L)``/scalar."""
        ab = expand_time(self.alpha_bar(_time(t, x0)), x0).to(x0.dtype)
        return ab * x0 + (1 - ab) / 2

    def q_sample(self, x0: Tensor, t: Tensor | float, generator: GeneratorArg = None) -> Tensor:
        """Draw ``x_t ~ B(marginal_prob(x0, t))`` (values 0./1., dtype of x0)."""
        return bernoulli(self.marginal_prob(x0, t), generator)

    def posterior_prob(self, x_t: Tensor, x0_prob: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """``P(x_s = 1 | x_t, x0)`` for a jump t → s < t; ``x0_prob`` binary x0 or predicted P(x0 = 1)."""
        jump = _jump_alpha(_time(t, x_t), _time(s, x_t), self.schedule)
        a_ts, ab_s = (expand_time(c, x_t).to(x_t.dtype) for c in jump)
        theta1 = (a_ts * x_t + (1 - a_ts) / 2) * (ab_s * x0_prob + (1 - ab_s) / 2)
        theta0 = (a_ts * (1 - x_t) + (1 - a_ts) / 2) * (ab_s * (1 - x0_prob) + (1 - ab_s) / 2)
        return (theta1 / (theta0 + theta1)).clamp(self.eps, 1 - self.eps)

    def kl(self, p: Tensor, q: Tensor) -> Tensor:
        """Elementwise ``KL(B(p) ‖ B(q))`` in nats."""
        p, q = p.clamp(self.eps, 1 - self.eps), q.clamp(self.eps, 1 - self.eps)
        return p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))

    def loss(self, logits: Tensor, x0: Tensor, x_t: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """Per-sample ``(B,)`` hybrid loss BCE(logits, x0) + λ·KL(q(x_s|x_t,x0) ‖ p_θ(x_s|x_t)).

        Both terms are means over elements; logits, x0, x_t: ``(B, ...)``.
        """
        dims = tuple(range(1, x0.ndim))
        bce = F.binary_cross_entropy_with_logits(logits, x0, reduction="none").mean(dim=dims)
        true_post = self.posterior_prob(x_t, x0, t, s)
        model_post = self.posterior_prob(x_t, torch.sigmoid(logits), t, s)
        return bce + self.kl_weight * self.kl(true_post, model_post).mean(dim=dims)

    def step(self, x_t: Tensor, logits: Tensor, t: Tensor | float, s: Tensor | float,
             generator: GeneratorArg = None) -> Tensor:
        """One reverse jump t → s: draw ``x_s`` from the model posterior."""
        return bernoulli(self.posterior_prob(x_t, torch.sigmoid(logits), t, s), generator)

    def _prior(self, shape: tuple[int, ...], device, generator: GeneratorArg) -> Tensor:
        return bernoulli(torch.full(shape, 0.5, device=device), generator)

    def _to_prob(self, logits: Tensor) -> Tensor:
        return torch.sigmoid(logits)


class CategoricalProcess(_DiscreteProcess):
    """Uniform-kernel D3PM with ``num_classes`` classes on the same clock as ``BernoulliProcess``.

    States are class indices (integer tensors ``(B, ...)``); probabilities and logits carry a trailing
    class axis ``(B, ..., K)``. ``x0`` arguments accept either indices or probability vectors.
    """

    def __init__(
        self, num_classes: int, schedule: DiscreteSchedule = "cosine", kl_weight: float = 0.001, eps: float = 1e-6
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes} must be >= 2")
        self.K = int(num_classes)
        self.schedule = check_option("schedule", schedule, get_args(DiscreteSchedule))
        self.kl_weight, self.eps = float(kl_weight), float(eps)

    def _probs(self, x: Tensor) -> Tensor:
        return F.one_hot(x.long(), self.K).float() if not x.is_floating_point() else x

    def _coef(self, t: Tensor | float, like: Tensor) -> Tensor:
        """Per-sample/per-token coefficient ``(B, [L,] 1, ..., 1)`` against ``like: (B, ..., K)``."""
        return expand_time(_time(t, like), like)

    def marginal_prob(self, x0: Tensor, t: Tensor | float) -> Tensor:
        """``q(x_t | x0) = ᾱ·onehot(x0) + (1 − ᾱ)/K``: ``(B, ..., K)``."""
        p0 = self._probs(x0)
        ab = self.alpha_bar(self._coef(t, p0)).to(p0.dtype)
        return ab * p0 + (1 - ab) / self.K

    def _draw(self, probs: Tensor, generator: GeneratorArg) -> Tensor:
        # Inverse-CDF draw: one uniform per element, honours a generator (multinomial needs 2-D input).
        u = rand_like(probs[..., 0], generator)
        cdf = probs.cumsum(-1)
        return (u.unsqueeze(-1) > cdf / cdf[..., -1:]).sum(-1).clamp(max=self.K - 1)

    def q_sample(self, x0: Tensor, t: Tensor | float, generator: GeneratorArg = None) -> Tensor:
        """Class indices ``(B, ...)`` drawn from the marginal."""
        return self._draw(self.marginal_prob(x0, t), generator)

    def posterior_prob(self, x_t: Tensor, x0_prob: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """``q(x_s | x_t, x0)``: ``(B, ..., K)``; ``x_t`` indices, ``x0_prob`` indices or probabilities."""
        onehot_t, p0 = self._probs(x_t), self._probs(x0_prob)
        a_ts, ab_s = _jump_alpha(self._coef(t, p0), self._coef(s, p0), self.schedule)
        fact_t = a_ts * onehot_t + (1 - a_ts) / self.K
        fact_0 = ab_s * p0 + (1 - ab_s) / self.K
        post = fact_t * fact_0
        return (post / post.sum(-1, keepdim=True)).clamp(self.eps, 1 - self.eps)

    def kl(self, p: Tensor, q: Tensor) -> Tensor:
        """``KL(Cat(p) ‖ Cat(q))`` over the last axis: ``(B, ...)``."""
        p, q = p.clamp(self.eps, 1 - self.eps), q.clamp(self.eps, 1 - self.eps)
        return (p * (torch.log(p) - torch.log(q))).sum(-1)

    def loss(self, logits: Tensor, x0: Tensor, x_t: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """Per-sample ``(B,)`` CE(logits, x0) + λ·KL; logits ``(B, ..., K)``, x0/x_t indices ``(B, ...)``."""
        dims = tuple(range(1, x0.ndim))
        ce = F.cross_entropy(logits.movedim(-1, 1), x0.long(), reduction="none").mean(dim=dims)
        kl = self.kl(self.posterior_prob(x_t, x0, t, s), self.posterior_prob(x_t, logits.softmax(-1), t, s))
        return ce + self.kl_weight * kl.mean(dim=dims)

    def step(self, x_t: Tensor, logits: Tensor, t: Tensor | float, s: Tensor | float,
             generator: GeneratorArg = None) -> Tensor:
        """One reverse jump t → s: class indices drawn from the model posterior."""
        return self._draw(self.posterior_prob(x_t, logits.softmax(-1), t, s), generator)

    def _prior(self, shape: tuple[int, ...], device, generator: GeneratorArg) -> Tensor:
        return self._draw(torch.full((*shape, self.K), 1.0 / self.K, device=device), generator)

    def _to_prob(self, logits: Tensor) -> Tensor:
        return logits.softmax(-1)
