"""Closed-loop evaluation: fixed-seed episodes stepped in lockstep, one batched policy call per step.

``evaluate`` runs ``n_episodes`` environments with seeds ``seed0 + i`` (Diffusion Policy's PushT protocol:
seeds from 100000, <= 300 steps), stops each at success, records max coverage, and writes the first
``n_videos`` episodes as MP4. Batching all episodes through one policy call per control step keeps a
50-episode evaluation within minutes on a CPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from apps.robotics.envs import make_env
from apps.robotics.metrics import summarise_episodes


def evaluate(policy, env: str = "pusht", n_episodes: int = 50, seed0: int = 100000, max_steps: int | None = None,
             n_videos: int = 0, video_dir: str | Path | None = None, video_scale: int = 2,
             success_threshold: float = 0.95, res: int = 32, show_imagined: bool = False) -> dict:
    """Roll `policy` (`apps.robotics.sampling.Policy`) in `n_episodes` environments.

    With ``show_imagined`` the videos also draw the future the policy imagined with its latest chunk
    (`apps.robotics.imagined`; state-target DUST policies only, else ValueError before any rollout).

    Returns a dict with ``success_rate``, ``mean_max_coverage`` and their ``_ci95`` (Wilson),
    ``latency_ms_per_chunk`` (median), ``nfe_per_chunk``, per-episode lists and video paths.
    """
    if n_episodes < 1 or (max_steps is not None and max_steps < 1):  # envs[0] / a silent 0-step run
        raise ValueError(f"n_episodes and max_steps must be >= 1, got {n_episodes} and {max_steps}")
    if n_videos < 0 or seed0 < 0:  # envs[:-1] would record all but the last episode; seeds must be >= 0
        raise ValueError(f"n_videos and seed0 must be >= 0, got {n_videos} and {seed0}")
    if show_imagined:
        from apps.robotics.imagined import check_drawable, overlay_imagined

        check_drawable(policy.net, policy.state_keys, env)
    envs = [make_env(env, image=policy.net.use_image, max_steps=max_steps, res=res) for _ in range(n_episodes)]
    limit = envs[0].max_steps
    obs_list, max_cov = [], np.zeros(n_episodes)
    for i, e in enumerate(envs):
        o, info = e.reset(seed=seed0 + i)
        obs_list.append(o)
        max_cov[i] = info.get("coverage", 0.0)
    done = np.zeros(n_episodes, bool)
    success = np.zeros(n_episodes, bool)
    steps = np.zeros(n_episodes, int)
    frames: list[list[np.ndarray]] = [[e.render(video_scale)] for e in envs[:n_videos]]
    recording = getattr(policy, "record_imagined", False)
    policy.record_imagined = recording or show_imagined
    try:
        policy.reset()
        policy.latencies_ms.clear()
        t0 = time.perf_counter()
        for _ in range(limit):
            batch = {k: np.stack([o[k] for o in obs_list]) for k in obs_list[0]}
            actions = policy.select_action(batch)
            imagined = policy.imagined if show_imagined else None  # (B, K, D_s) of the latest chunk
            for i, e in enumerate(envs):
                if done[i]:
                    continue
                o, _, terminated, truncated, info = e.step(actions[i])
                obs_list[i] = o
                steps[i] += 1
                max_cov[i] = max(max_cov[i], float(info["coverage"]))
                success[i] = success[i] or max_cov[i] >= success_threshold or bool(info.get("is_success", False))
                done[i] = success[i] or truncated or steps[i] >= limit
                if i < n_videos:
                    frame = e.render(video_scale)
                    if imagined is not None:
                        frame = overlay_imagined(frame, imagined[i], policy.state_keys, env)
                    frames[i].append(frame)
            if done.all():
                break
        wall = time.perf_counter() - t0
    finally:
        policy.record_imagined = recording
    for e in envs:
        if hasattr(e, "close"):
            e.close()
    out = summarise_episodes(max_cov.tolist(), success.tolist(), success_threshold)
    lat = np.asarray(policy.latencies_ms) if policy.latencies_ms else np.zeros(1)
    out.update({
        "env": env, "seed0": seed0, "max_steps": int(limit),
        "latency_ms_per_chunk": float(np.median(lat)), "latency_ms_per_chunk_mean": float(lat.mean()),
        "latency_batch_size": n_episodes, "nfe_per_chunk": policy.nfe_per_chunk,
        "n_action_steps": policy.n_action_steps, "n_vision_steps": policy.n_vision_steps, "phase": policy.phase,
        "execute": policy.execute, "temporal_ensemble": policy.temporal_ensemble,
        "plan_samples": getattr(policy, "plan_samples", 1),
        "plan_score_mean": float(np.mean(policy.plan_scores)) if getattr(policy, "plan_scores", None) else None,
        "episode_max_coverage": max_cov.tolist(), "episode_success": success.tolist(),
        "episode_steps": steps.tolist(), "eval_seconds": wall,
    })
    if n_videos and video_dir is not None:
        from apps.robotics.data.video import write_video

        video_dir = Path(video_dir)
        paths = []
        for i, fr in enumerate(frames):
            p = video_dir / f"episode_{seed0 + i}.mp4"
            write_video(p, np.stack(fr), fps=10)
            paths.append(str(p))
        out["videos"] = paths
    return out


def chunk_latency(policy, obs: dict, repeats: int = 10) -> dict:
    """Median wall time of one chunk prediction for a single (unbatched) observation, in ms."""
    times = []
    for _ in range(repeats + 1):
        policy.reset()
        t0 = time.perf_counter()
        policy.select_action(obs)
        times.append((time.perf_counter() - t0) * 1000.0)
    times = times[1:]  # first call pays one-off allocations
    return {"latency_ms_per_chunk_b1": float(np.median(times)), "latency_ms_per_chunk_b1_min": float(np.min(times)),
            "repeats": repeats}


class ScriptedPolicy:
    """The built-in task's scripted expert (``kind="expert"``) or an agent that stays put (``"idle"``)
    behind the `Policy` interface: reference rows for reports and a check of the harness itself."""

    def __init__(self, kind: str = "expert"):
        if kind not in ("expert", "idle"):
            raise ValueError(f"kind must be one of expert, idle; got {kind!r}")
        self.kind = kind
        self.net = type("NoNet", (), {"use_image": False})()
        self.latencies_ms: list[float] = []
        self.nfe_per_chunk = self.n_action_steps = self.n_vision_steps = 0
        self.phase, self.execute, self.temporal_ensemble = "-", 1, None

    def reset(self) -> None:
        pass

    def select_action(self, obs: dict) -> np.ndarray:
        from apps.robotics.envs import toy_expert_action

        if self.kind == "idle":
            return np.asarray(obs["agent_pos"])
        return np.stack([toy_expert_action(s[:2].astype(float), s[2:].astype(float)) for s in obs["state"]])
