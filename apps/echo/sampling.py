"""Few-step samplers for both chains, the K-member ensemble, fusion, uncertainty, post-processing.

- Gaussian chain: deterministic DDIM = Euler in VE coordinates on ``VPPath("linear")``
  (``dualsci.diffusion.sample_euler`` on ``time_grid``), or ancestral (``sample_euler_ancestral``; the
  anchor's 1000-step setting); x̂0 clipped to [−1, 1] at every step; P_G = (x0 + 1)/2.
- Bernoulli chain: ancestral skip-step posterior sampling from B(½) (``BernoulliProcess.sample``),
  returning the last predicted p̂0 = σ(logits) as the member's probability map (not the Gaussian sample,
  bug B2; not the raw logits, bug B3).
- The image encoder runs **once per image** and its features are shared by all members and steps.
- Fusion (documented rule, never the released code's squared mean, bug B4):
  ``"mean"`` (default): ``fused = (w_G·E_k[P_G,k] + w_B·E_k[P_B,k] + w_cal·σ(cal)) / (w_G + w_B + w_cal)``;
  ``"staple"``: binary STAPLE (Warfield 2004, EM in log space) over the 2K thresholded members and the
  thresholded calibration map; the fused map is STAPLE's posterior foreground probability W.
- Uncertainty over the 2K member maps: pixel variance, predictive entropy H(p̄) (nats), expected
  entropy E_k H(p_k), mutual information H(p̄) − E_k H(p_k).
- Post-processing of the final mask: threshold 0.5, largest 8-connected component, hole filling,
  opening with a disk (radius 1 at ≤ 128², scaled with size).
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from dualsci.diffusion import BernoulliProcess, GaussianDenoiser, sample_euler, sample_euler_ancestral, time_grid
from dualsci.diffusion.seeding import GeneratorArg, randn_like, sample_generators

FUSIONS = ("mean", "staple")
GAUSSIAN_SAMPLERS = ("ddim", "ancestral")
CHAINS = ("gaussian", "bernoulli", "cal")


def member_seed(seed: int, member: int, chain: str) -> int:
    """The seed of one member's chain: a function of (run seed, member index, chain) only, so member k's
    draws never depend on K, on the other images of the batch, or on whether the other chain runs."""
    if chain not in CHAINS[:2]:
        raise ValueError(f"chain must be one of {CHAINS[:2]}, got {chain!r}")
    ss = np.random.SeedSequence([int(seed), int(member), CHAINS.index(chain)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> 1)  # 63 bits: a valid manual_seed


def member_generators(seed: int, member_ids: Sequence[int], batch: int, chain: str) -> list[torch.Generator]:
    """``batch·len(member_ids)`` generators in ``repeat_interleave`` order (image-major, member-minor)."""
    return sample_generators([member_seed(seed, k, chain) for _ in range(batch) for k in member_ids])


def _default_objective():
    from apps.echo.objective import EchoDNDObjective

    return EchoDNDObjective()


@torch.no_grad()
def gaussian_chain(net, image: Tensor, feats: list[Tensor], steps: int, sampler: str = "ddim",
                   generator: GeneratorArg = None, objective=None) -> Tensor:
    """P_G ``(N, 1, S, S)`` in [0, 1] from ``steps`` network calls; image/feats already repeated per member.

    ``generator``: one generator, or N (one per row: row i's noise depends on ``generator[i]`` only)."""
    if sampler not in GAUSSIAN_SAMPLERS:
        raise ValueError(f"sampler must be one of {GAUSSIAN_SAMPLERS}, got {sampler!r}")
    obj = (objective or _default_objective()).gaussian
    den = GaussianDenoiser(lambda x_in, c: net.gaussian(image, x_in, c, feats).float(), obj)

    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        return den(x, sigma).clamp(-1.0, 1.0)

    sigmas = time_grid(steps, obj.path)
    x = randn_like(image, generator) * float(sigmas[0])
    fn = sample_euler if sampler == "ddim" else sample_euler_ancestral
    x0 = fn(denoise, x, sigmas, generator=generator)
    return ((x0 + 1.0) / 2.0).clamp(0.0, 1.0)


@torch.no_grad()
def bernoulli_chain(net, image: Tensor, feats: list[Tensor], steps: int, process: BernoulliProcess | None = None,
                    generator: GeneratorArg = None) -> Tensor:
    """P_B ``(N, 1, S, S)``: the last predicted p̂0 of an ancestral Bernoulli chain of ``steps`` calls
    (``generator``: one, or one per row)."""
    process = process or _default_objective().bernoulli
    _, prob = process.sample(lambda x, t: net.bernoulli(image, x, t, feats).float(), tuple(image.shape), steps,
                             generator=generator, return_prob=True)
    return prob


def staple(decisions: np.ndarray, max_iter: int = 50, tol: float = 1e-6, prior: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary STAPLE (Warfield et al., 2004).

    Args:
        decisions: ``(R, ...)`` binary rater decisions.
        prior: global foreground prior f (default: mean of the decisions).

    Returns:
        W ``(...)`` posterior foreground probability, sensitivities p ``(R,)``, specificities q ``(R,)``.
    """
    d = np.asarray(decisions, dtype=np.float64).reshape(len(decisions), -1)
    f = float(d.mean()) if prior is None else float(prior)
    f = min(max(f, 1e-6), 1 - 1e-6)
    p = np.full(len(d), 0.99)
    q = np.full(len(d), 0.99)
    w = d.mean(0)
    for _ in range(max_iter):
        lp, l1p = np.log(np.clip(p, 1e-9, 1))[:, None], np.log(np.clip(1 - p, 1e-9, 1))[:, None]
        lq, l1q = np.log(np.clip(q, 1e-9, 1))[:, None], np.log(np.clip(1 - q, 1e-9, 1))[:, None]
        la = np.log(f) + (d * lp + (1 - d) * l1p).sum(0)
        lb = np.log(1 - f) + ((1 - d) * lq + d * l1q).sum(0)
        w_new = 1.0 / (1.0 + np.exp(np.clip(lb - la, -700, 700)))
        p_new = (w_new * d).sum(1) / max(w_new.sum(), 1e-12)
        q_new = ((1 - w_new) * (1 - d)).sum(1) / max((1 - w_new).sum(), 1e-12)
        done = np.abs(w_new - w).max() < tol
        w, p, q = w_new, p_new, q_new
        if done:
            break
    return w.reshape(np.asarray(decisions).shape[1:]), p, q


def entropy(p: np.ndarray | Tensor) -> np.ndarray:
    """Binary entropy in nats, elementwise."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def postprocess(mask: np.ndarray, radius: int | None = None) -> np.ndarray:
    """Largest 8-connected component, holes filled, opened with a disk; ``(H, W)`` bool."""
    m = np.asarray(mask) > 0
    if not m.any():
        return m
    lab, n = ndimage.label(m, structure=np.ones((3, 3)))
    if n > 1:
        sizes = ndimage.sum(m, lab, range(1, n + 1))
        m = lab == 1 + int(np.argmax(sizes))
    m = ndimage.binary_fill_holes(m)
    r = max(1, round(max(m.shape) / 128)) if radius is None else radius
    if r > 0:
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        opened = ndimage.binary_opening(m, structure=(yy**2 + xx**2) <= r * r)
        m = opened if opened.any() else m
    return m


@torch.no_grad()
def segment_batch(net, image: Tensor, steps: int = 20, members: int = 5, fusion: str = "mean",
                  weights: Sequence[float] = (1.0, 1.0, 1.0), gaussian_sampler: str = "ddim", seed: int = 0,
                  bernoulli_steps: int | None = None, post: bool = True, objective=None,
                  member_ids: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Segment ``image: (B, 1, S, S)`` with a K-member ensemble of both chains.

    Every member has its own generator per chain (:func:`member_seed`), so member k of an image is the
    same whether it is sampled alone, in a batch of K, or next to other images (up to float summation
    order in batched convolutions).

    Args:
        steps: network calls per chain per member (Gaussian); ``bernoulli_steps`` defaults to the same.
        members: K; the members are ``0 .. K−1`` unless ``member_ids`` lists them (e.g. ``[3]`` re-runs
            member 3 alone; ``members`` is then ignored).
        weights: (w_G, w_B, w_cal) of the mean fusion; a zero weight drops that source (ablations).
        fusion: ``"mean"`` or ``"staple"``.
        objective: the trained ``EchoDNDObjective`` (its path and Bernoulli schedule); default settings if None.

    Returns (numpy): ``p_gauss, p_bern (B, K, S, S)``, ``cal (B, S, S)``, ``member (B, K, S, S)`` (per-member
    fused maps), ``fused (B, S, S)``, ``mask (B, S, S)`` bool, ``variance, entropy, expected_entropy,
    mutual_info (B, S, S)``.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    ids = list(range(members)) if member_ids is None else [int(k) for k in member_ids]
    if not ids or min(ids) < 0 or steps < 1:
        raise ValueError(f"members (or member_ids) and steps must be ≥ 1 / non-negative, got {members}, {member_ids}, {steps}")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (3,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() == 0:  # nan/inf: NaN maps
        raise ValueError(f"weights must be 3 finite non-negative numbers (gaussian, bernoulli, cal), not all 0; "
                         f"got {weights}")
    objective = objective or _default_objective()
    net.eval()
    B, K = image.shape[0], len(ids)
    image = image.float()
    feats, cal_logits = net.encode(image)  # once per image, shared by every member and step
    rep = lambda x: x.repeat_interleave(K, dim=0)  # noqa: E731
    img_k, feats_k = rep(image), [rep(f) for f in feats]
    shape = (B, K, *image.shape[-2:])
    p_g = (gaussian_chain(net, img_k, feats_k, steps, gaussian_sampler, member_generators(seed, ids, B, "gaussian"),
                          objective).reshape(shape).numpy() if w[0] > 0 else None)
    p_b = (bernoulli_chain(net, img_k, feats_k, bernoulli_steps or steps, objective.bernoulli,
                           member_generators(seed, ids, B, "bernoulli")).reshape(shape).numpy() if w[1] > 0 else None)
    cal = torch.sigmoid(cal_logits.float())[:, 0].numpy()
    zeros = np.zeros(shape)
    member = (w[0] * (p_g if p_g is not None else zeros) + w[1] * (p_b if p_b is not None else zeros)
              + w[2] * cal[:, None]) / w.sum()
    chains = [p for p in (p_g, p_b) if p is not None]
    stack = np.concatenate(chains, axis=1) if chains else cal[:, None]
    if fusion == "mean":
        fused = member.mean(1)
    else:
        raters = [stack[:, k] >= 0.5 for k in range(stack.shape[1])] + ([cal >= 0.5] if w[2] > 0 else [])
        fused = np.stack([staple(np.stack([r[b] for r in raters]))[0] for b in range(B)])
    masks = np.stack([postprocess(f >= 0.5) if post else f >= 0.5 for f in fused])
    h = entropy(fused)
    eh = entropy(stack).mean(1)
    return {"p_gauss": p_g if p_g is not None else zeros, "p_bern": p_b if p_b is not None else zeros, "cal": cal,
            "member": member, "fused": fused, "mask": masks, "variance": stack.var(1), "entropy": h,
            "expected_entropy": eh, "mutual_info": np.maximum(h - eh, 0.0)}
