"""Evaluation statistics: Wilson intervals, episode summaries, offline world-model metrics."""

from __future__ import annotations

import math

import numpy as np
import torch

Z95 = 1.959963984540054


def wilson_interval(p_hat: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval for a proportion ``p_hat`` observed over ``n`` trials.

    ``centre = (p + z²/2n)/(1 + z²/n)``, ``half = z·sqrt(p(1−p)/n + z²/4n²)/(1 + z²/n)``. Applied to a
    mean of [0, 1] scores (mean max coverage) it is conservative: such a variable's variance is at
    most μ(1 − μ).
    """
    if n <= 0:
        return (0.0, 1.0)
    p = min(max(float(p_hat), 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarise_episodes(max_coverage: list[float], success: list[bool], threshold: float = 0.95) -> dict:
    """Success rate and mean max coverage with Wilson intervals (lerobot-eval-like keys too)."""
    n = len(max_coverage)
    cov = np.asarray(max_coverage, float)
    succ = np.asarray(success, bool)
    sr = float(succ.mean()) if n else 0.0
    mc = float(cov.mean()) if n else 0.0
    return {"n_episodes": n, "success_rate": sr, "success_rate_ci95": list(wilson_interval(sr, n)),
            "mean_max_coverage": mc, "mean_max_coverage_ci95": list(wilson_interval(mc, n)),
            "pc_success": 100.0 * sr, "avg_max_reward": mc, "success_threshold": threshold}


@torch.no_grad()
def offline_metrics(net, dataset, n_samples: int = 128, n_action_steps: int = 4, n_vision_steps: int = 4,
                    seed: int = 0, noise_levels=(0.0, 0.1, 0.5, 1.0)) -> dict:
    """Held-out offline metrics on `WindowDataset` samples.

    Returns ``action_mse`` (policy mode, normalised units), ``future_cosine`` (imagined vs true future
    tokens, mean over tokens), ``inverse_action_mse`` (actions given the true future), and DUST's
    dependency test ``corrupted_future_action_mse`` (true future mixed with noise at each level).
    """
    from apps.robotics.sampling import sample_chunk

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[:n_samples]
    items = [dataset[int(i)] for i in idx]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    keep = batch["has_action"].bool()
    dev = net.state_min.device
    batch = {k: v[keep].to(dev) for k, v in batch.items()}
    net.eval()
    truth = net.normalize_action(batch["action"])
    obs = (batch["obs_state"], batch.get("obs_image"))
    out = sample_chunk(net, *obs, n_action_steps=n_action_steps, n_vision_steps=n_vision_steps,
                       generator=torch.Generator().manual_seed(seed))
    res = {"n_samples": int(keep.sum()), "action_mse": float(((out["action_norm"] - truth) ** 2).mean())}
    if out["future"] is not None:
        fut = net.future_tokens(batch["future_state"], batch.get("future_image"), batch.get("future_states"))
        res["future_cosine"] = float(torch.nn.functional.cosine_similarity(out["future"], fut, dim=-1).mean())
        res["future_mse"] = float(((out["future"] - fut) ** 2).mean())
        curve = {}
        for lvl in noise_levels:
            noisy = (1 - lvl) * fut + lvl * torch.randn(fut.shape, generator=g).to(dev)
            inv = sample_chunk(net, *obs, n_action_steps=n_action_steps, mode="inverse", future=noisy,
                               generator=torch.Generator().manual_seed(seed))
            curve[str(lvl)] = float(((inv["action_norm"] - truth) ** 2).mean())
        res["inverse_action_mse"] = curve[str(noise_levels[0])]
        res["corrupted_future_action_mse"] = curve
    return res
