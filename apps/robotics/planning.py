"""World-model planning: best-of-N action chunks, scored on the futures the policy imagines with them.

A DUST policy samples an action chunk *and* the future it expects the chunk to produce. With a state
trajectory target (``future_target='state'``, K future frames) that future is a state the task can score,
so test-time compute buys more than extra denoising steps: draw N chunks with their imagined futures
(one batched sampler call, fresh noise per candidate), score each future with a task score, execute
the best. It needs the vision stream (the action-only baseline has nothing to score) and a score that
knows the task's goal, which is the assumption every model-based planner makes.

Scores take raw imagined states ``(B, K, D_s)`` and return ``(B,)``, higher is better. Ties (e.g. no
candidate reaches the block within the horizon) go to the first candidate, which is an ordinary sample.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from apps.robotics.envs import pusht_coverage, pusht_vertex_distance

FutureScore = Callable[[Tensor], Tensor]

# State specs (`gather_columns`) the PushT score understands: where the block's x, y and angle are.
_PUSHT_LAYOUTS = {
    ("state[0:4]", "state[4:5]@sincos"): dict(xy=(2, 3), sincos=(4, 5)),
    ("state",): dict(xy=(2, 3), angle=4),
    ("state[0:5]",): dict(xy=(2, 3), angle=4),
}


def pusht_layout(state_keys: list[str]) -> dict:
    """Where a policy's state spec keeps the PushT block pose (column indices), or a ValueError."""
    layout = _PUSHT_LAYOUTS.get(tuple(state_keys))
    if layout is None:
        raise ValueError(f"PushT state spec {list(state_keys)} has no known block columns; "
                         f"supported: {[list(k) for k in _PUSHT_LAYOUTS]}")
    return layout


def pusht_block_pose(states: np.ndarray, layout: dict) -> np.ndarray:
    """Block poses ``(N, 3)`` = x, y, angle (world pixels, radians) from raw state vectors ``(N, D_s)``."""
    x, y = states[:, layout["xy"][0]], states[:, layout["xy"][1]]
    if "sincos" in layout:
        angle = np.arctan2(states[:, layout["sincos"][0]], states[:, layout["sincos"][1]])
    else:
        angle = states[:, layout["angle"]]
    return np.stack([x, y, angle], 1)


class PushTCoverageScore:
    """gym-pusht goal coverage of the T at the imagined block pose of future frame `frame` (default the last).

    Subclasses score the same pose otherwise (`score_pose`).

    Args:
        state_keys: the policy's state spec; one of ``["state[0:4]", "state[4:5]@sincos"]`` (agent xy,
            block xy, sin, cos) or ``["state"]`` (agent xy, block xy, angle).
        frame: which of the K imagined frames to score (-1: t + F, the end of the chunk).
    """

    def __init__(self, state_keys: list[str], frame: int = -1):
        self.layout, self.frame = pusht_layout(state_keys), int(frame)

    @staticmethod
    def score_pose(pose: np.ndarray) -> np.ndarray:
        return pusht_coverage(pose)

    def __call__(self, future_states: Tensor) -> Tensor:
        s = future_states[:, self.frame].detach().double().cpu().numpy()  # (B, D_s)
        return torch.from_numpy(self.score_pose(pusht_block_pose(s, self.layout))).float()


class PushTPoseScore(PushTCoverageScore):
    """Minus the mean distance (pixels) of the T's vertices at the imagined pose from the goal's."""

    @staticmethod
    def score_pose(pose: np.ndarray) -> np.ndarray:
        return -pusht_vertex_distance(pose)


SCORES = {"pusht_coverage": PushTCoverageScore, "pusht_pose": PushTPoseScore}


def make_score(name: str, state_keys: list[str]) -> FutureScore:
    """A named future score (``pusht_coverage`` or ``pusht_pose``) for a policy with the given state spec."""
    if name not in SCORES:
        raise ValueError(f"plan score must be one of {', '.join(SCORES)}; got {name!r}")
    return SCORES[name](state_keys)


def check_plannable(net, purpose: str = "planning") -> None:
    """Planning (or drawing, `purpose`) uses imagined *states*: a vision stream with ``future_target='state'``."""
    if net.variant == "action_only" or net.future_target != "state":
        raise ValueError(f"{purpose} needs imagined future states (future_target='state' and a vision stream); "
                         f"this policy has variant={net.variant!r}, future_target={net.future_target!r}")
    if getattr(net, "target_state_dim", None) is not None:
        # The scores and drawings read the block pose through the observation's state spec; a target
        # with columns of its own (target_keys) is not laid out by that spec.
        raise ValueError(f"{purpose} reads imagined states in the observation's layout; this policy imagines "
                         f"future states of their own spec (target_state_dim={net.target_state_dim})")


@torch.no_grad()
def best_of_n(net, obs_state: Tensor, obs_image: Tensor | None, n_candidates: int, score: FutureScore,
              task: Tensor | None = None, **sample_kw) -> dict:
    """Sample ``n_candidates`` chunks per observation in one batch and keep the best-scoring one.

    Args:
        obs_state: ``(B, n_obs, D_s)``; obs_image: ``(B, n_obs, 3, h, w)`` or None; task: ``(B,)`` or None.
        sample_kw: `apps.robotics.sampling.sample_chunk` settings (steps, phase, mode, generator).
    Returns:
        ``{"action": (B, H, D_a), "future": (B, K, D_s) raw imagined states of the chosen chunks,
        "score": (B,), "scores": (B, N), "nfe": int}``.
    """
    from apps.robotics.sampling import sample_chunk

    check_plannable(net)
    if n_candidates < 1:
        raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
    rep = lambda x: None if x is None else x.repeat_interleave(n_candidates, 0)  # noqa: E731
    out = sample_chunk(net, rep(obs_state), rep(obs_image), task=rep(task), **sample_kw)
    b = obs_state.shape[0]
    future = net.unnormalize_future(out["future"])  # (B·N, K, D_s)
    scores = score(future).reshape(b, n_candidates)
    best = scores.argmax(1)  # first maximum on ties
    pick = torch.arange(b) * n_candidates + best
    return {"action": out["action"][pick.to(out["action"].device)], "future": future[pick.to(future.device)],
            "score": scores[torch.arange(b), best], "scores": scores, "nfe": out["nfe"]}
