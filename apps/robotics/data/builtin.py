"""The embedded default dataset: scripted-expert demonstrations of the built-in push task.

Deterministic for a given seed and fast (100 episodes at 32x32 in about a second), written in the
replay-zarr format so the demo exercises the same reader as the real PushT file.
"""

from __future__ import annotations

import numpy as np

from apps.robotics.data.episodes import EpisodeSet
from apps.robotics.envs import ToyPushEnv, toy_expert_action


def generate_toy_push(n_episodes: int = 100, seed: int = 0, res: int = 32, noise: float = 0.01,
                      max_steps: int = 80, hold: int = 4, video_only: int = 0, min_length: int = 17) -> EpisodeSet:
    """Roll the scripted expert in `ToyPushEnv`.

    Args:
        n_episodes: episodes with actions. video_only: extra episodes whose actions are dropped
            (``has_action = False``), for action-free world-model training.
        noise: std of Gaussian noise on the expert's target (state units), for diverse demos.
        hold: frames recorded after success, the expert still pushing gently (more until the episode
            has `min_length` frames: at least one full action chunk plus its future frame).
    Returns:
        `EpisodeSet` with ``image (N, res, res, 3)`` uint8, ``state (N, 4)``, ``agent_pos (N, 2)``,
        ``action (N, 2)`` float32.
    """
    env = ToyPushEnv(res=res, max_steps=max_steps)
    rng = np.random.default_rng(seed)
    fields = {"image": [], "state": [], "agent_pos": [], "action": []}
    ends, total = [], 0
    for e in range(n_episodes + video_only):
        obs, info = env.reset(seed=int(rng.integers(1 << 31)))
        after, length = 0, 0
        for _ in range(max_steps):
            action = toy_expert_action(env.agent, env.block, rng, noise)
            for k in ("image", "state", "agent_pos"):
                fields[k].append(obs[k])
            fields["action"].append(action)
            total += 1
            length += 1
            obs, _, success, truncated, info = env.step(action)
            after += bool(success) or after > 0
            if (after > hold and length >= min_length) or truncated:
                break
        ends.append(total)
    out = {k: np.stack(v) for k, v in fields.items()}
    has_action = np.arange(len(ends)) < n_episodes
    starts = np.concatenate([[0], ends[:-1]])
    for e in np.nonzero(~has_action)[0]:
        out["action"][starts[e]:ends[e]] = 0.0
    return EpisodeSet(out, np.array(ends), has_action, fps=10.0, source=f"<toy_push seed={seed}>",
                      meta={"task": "push the grey disc onto the green goal"})
