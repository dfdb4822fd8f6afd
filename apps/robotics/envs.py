"""Environments for closed-loop evaluation: the built-in 2-D push task and a gym-pusht wrapper.

Both return observations as a dict of *dataset field names* (``image`` `(h, w, 3)` uint8, ``state``,
``keypoint``, ...), so a policy gathers its state vector with the same column spec it was trained on,
and ``info`` always carries ``coverage`` (task progress in [0, 1]) and ``is_success``.
"""

from __future__ import annotations

import os

import numpy as np

# ------------------------------------------------------------------------------ built-in push task
AGENT_R, BLOCK_R, GOAL = 0.045, 0.09, np.array([0.5, 0.5])
MAX_SPEED, SUCCESS_DIST = 0.06, 0.05


class ToyPushEnv:
    """A deterministic 2-D push task on the unit square (10 Hz, kinematic).

    The agent (blue disc) moves toward the commanded target position (action, `(2,)` in [0, 1]) at
    most `MAX_SPEED` per step; the block (grey disc) is pushed out of overlap along the contact
    normal; success when the block centre is within `SUCCESS_DIST` of the fixed goal (green).
    ``coverage`` = 1 - clip(distance / initial distance), a progress score in [0, 1] (1 at the goal).

    Observation: ``image`` `(res, res, 3)` uint8, ``state`` `(4,)` = agent xy, block xy,
    ``agent_pos`` `(2,)`.
    """

    def __init__(self, res: int = 32, max_steps: int = 80):
        self.res, self.max_steps = int(res), int(max_steps)
        c = (np.arange(self.res) + 0.5) / self.res
        self._yy, self._xx = np.meshgrid(c, c, indexing="ij")
        self.agent = np.zeros(2)
        self.block = np.zeros(2)

    def reset(self, seed: int | None = None):
        rng = np.random.default_rng(seed)
        while True:
            self.block = rng.uniform(0.2, 0.8, 2)
            self.agent = rng.uniform(0.08, 0.92, 2)
            if (np.linalg.norm(self.block - GOAL) > 0.18
                    and np.linalg.norm(self.agent - self.block) > AGENT_R + BLOCK_R + 0.05):
                break
        self.d0 = float(np.linalg.norm(self.block - GOAL))
        self.t = 0
        return self._obs(), self._info()

    def step(self, action):
        target = np.clip(np.asarray(action, np.float64).reshape(2), 0.0, 1.0)
        delta = target - self.agent
        n = np.linalg.norm(delta)
        if n > MAX_SPEED:
            delta *= MAX_SPEED / n
        # Sub-steps so a fast agent cannot tunnel through the block.
        for _ in range(4):
            self.agent = np.clip(self.agent + delta / 4, 0.0, 1.0)
            d = self.block - self.agent
            dist = np.linalg.norm(d)
            if dist < AGENT_R + BLOCK_R:
                normal = d / max(dist, 1e-9)
                self.block = np.clip(self.agent + normal * (AGENT_R + BLOCK_R), BLOCK_R, 1 - BLOCK_R)
        self.t += 1
        info = self._info()
        return self._obs(), info["coverage"], info["is_success"], self.t >= self.max_steps, info

    def _info(self) -> dict:
        dist = float(np.linalg.norm(self.block - GOAL))
        return {"coverage": float(np.clip(1.0 - dist / self.d0, 0.0, 1.0)), "is_success": dist < SUCCESS_DIST,
                "distance": dist}

    def _obs(self) -> dict:
        return {"image": self.render(), "state": np.concatenate([self.agent, self.block]).astype(np.float32),
                "agent_pos": self.agent.astype(np.float32)}

    def render(self, scale: int = 1) -> np.ndarray:
        img = np.full((self.res, self.res, 3), 255, np.uint8)
        for centre, r, colour in ((GOAL, SUCCESS_DIST + 0.02, (144, 238, 144)), (self.block, BLOCK_R, (110, 120, 140)),
                                  (self.agent, AGENT_R, (65, 105, 225))):
            mask = (self._xx - centre[0]) ** 2 + (self._yy - centre[1]) ** 2 <= r * r
            img[mask] = colour
        if scale > 1:
            img = img.repeat(scale, 0).repeat(scale, 1)
        return img


def toy_expert_action(agent: np.ndarray, block: np.ndarray, rng: np.random.Generator | None = None,
                      noise: float = 0.0) -> np.ndarray:
    """Scripted expert: go behind the block (seen from the goal), detouring around it, then push."""
    u = GOAL - block
    u /= max(np.linalg.norm(u), 1e-9)
    behind = block - u * (AGENT_R + BLOCK_R + 0.015)
    rel = agent - block
    along = float(rel @ u)
    if np.linalg.norm(agent - behind) < 0.03 or (along < -(AGENT_R + BLOCK_R) * 0.8
                                                  and abs(rel[0] * u[1] - rel[1] * u[0]) < BLOCK_R * 0.6):
        target = agent + u * MAX_SPEED                                     # aligned: push toward the goal
    elif along > -(AGENT_R + BLOCK_R) * 0.5 and np.linalg.norm(rel) < AGENT_R + BLOCK_R + 0.08:
        perp = np.array([-u[1], u[0]])
        side = 1.0 if rel @ perp >= 0 else -1.0
        target = block + (side * perp - u) * (AGENT_R + BLOCK_R + 0.04)        # detour around the block
    else:
        target = behind
    if rng is not None and noise > 0:
        target = target + rng.normal(0.0, noise, 2)
    return np.clip(target, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------- gym-pusht
class PushTEnv:
    """gym-pusht 0.1.8 (``gym_pusht/PushT-v0``) with dataset-named observations.

    Observation: ``image`` `(96, 96, 3)` uint8 (only when `image=True`), ``state`` `(5,)` = agent xy,
    block xy, block angle mod 2pi (the zarr's ``data/state``), ``agent_pos`` `(2,)`. ``info["coverage"]`` is the env's goal coverage; success = coverage > 0.95.
    Rendering is headless (``SDL_VIDEODRIVER=dummy``).
    """

    def __init__(self, image: bool = True, max_steps: int = 300):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import gym_pusht  # noqa: F401  (registers the id)
        import gymnasium as gym

        self.image, self.max_steps = image, int(max_steps)
        self.env = gym.make("gym_pusht/PushT-v0", obs_type="pixels_agent_pos" if image else "state",
                            render_mode="rgb_array", observation_width=96, observation_height=96,
                            max_episode_steps=max_steps)
        self.u = self.env.unwrapped

    def _fields(self, obs) -> dict:
        u = self.u
        state = np.array([*u.agent.position, *u.block.position, u.block.angle % (2 * np.pi)], np.float32)
        # The zarr's data/keypoint comes from diffusion_policy's own keypoint sampler (9 points), not
        # gym-pusht's 8 vertices, so it is not reproduced here; policies use `state` columns instead.
        out = {"state": state, "agent_pos": state[:2].copy()}
        if self.image:
            out["image"] = np.asarray(obs["pixels"], np.uint8)
        return out

    def reset(self, seed: int | None = None, state=None):
        """Reset from `seed`, or to a recorded zarr `state` `(5,)`.

        gym-pusht's own ``reset_to_state`` sets the block position before the angle, which moves the
        block about its centre of gravity (by up to ~90 px); we set the angle first so a recorded
        state and its image are reproduced exactly.
        """
        obs, info = self.env.reset(seed=seed)
        if state is not None:
            s = np.asarray(state, np.float64).reshape(5)
            u = self.u
            u.agent.position = [float(s[0]), float(s[1])]
            u.block.angle = float(s[4])
            u.block.position = [float(s[2]), float(s[3])]
            u.space.step(u.dt)
            obs = {"pixels": u._render(visualize=False)} if self.image else None
        info = dict(info, coverage=float(self.u._get_coverage()))
        return self._fields(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(action, np.float64))
        return self._fields(obs), reward, terminated, truncated, info

    def render(self, scale: int = 1) -> np.ndarray:
        frame = self.u._render(visualize=False)
        if scale > 1:
            frame = frame.repeat(scale, 0).repeat(scale, 1)
        return frame

    def close(self):
        self.env.close()


# gym-pusht's T block in body coordinates (``add_tee``: scale 30, length 4) as one polygon, and its goal pose.
PUSHT_T_VERTICES = np.array([(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120), (-15, 30), (-60, 30)],
                            np.float64)
PUSHT_GOAL_POSE = (256.0, 256.0, np.pi / 4)


def _place_t(pose: np.ndarray) -> np.ndarray:
    """The T's vertices at block poses ``(N, 3)`` (x, y, angle), in world pixels: ``(N, 8, 2)``."""
    x, y, a = (pose[:, k, None] for k in range(3))
    vx, vy = PUSHT_T_VERTICES[:, 0], PUSHT_T_VERTICES[:, 1]
    return np.stack([x + np.cos(a) * vx - np.sin(a) * vy, y + np.sin(a) * vx + np.cos(a) * vy], -1)


_GOAL_T = _place_t(np.asarray([PUSHT_GOAL_POSE], np.float64))  # (1, 8, 2), scored against on every chunk


def pusht_vertex_distance(pose: np.ndarray) -> np.ndarray:
    """Mean distance in pixels between the T's 8 vertices at block poses ``(N, 3)`` and at the goal -> ``(N,)``.

    A pose error that, unlike coverage, still ranks poses that do not overlap the goal at all.
    """
    pose = np.asarray(pose, np.float64).reshape(-1, 3)
    return np.linalg.norm(_place_t(pose) - _GOAL_T, axis=-1).mean(-1)


def pusht_coverage(pose: np.ndarray) -> np.ndarray:
    """gym-pusht's goal coverage of the T at block poses ``(N, 3)`` = x, y, angle -> ``(N,)`` in [0, 1].

    The env's own ``_get_coverage`` for a block at that pose (area of T ∩ goal T over the goal's area),
    computed with vectorised shapely and without a physics space, so imagined poses can be scored in bulk.
    """
    import shapely

    block = shapely.polygons(_place_t(np.asarray(pose, np.float64).reshape(-1, 3)))
    goal = shapely.polygons(_GOAL_T)[0]
    return shapely.area(shapely.intersection(block, goal)) / shapely.area(goal)


def make_env(name: str, image: bool = True, max_steps: int | None = None, res: int = 32):
    """Environment factory: ``toy_push`` (built-in) or ``pusht`` (gym-pusht)."""
    if name == "toy_push":
        return ToyPushEnv(res=res, max_steps=max_steps or 80)
    if name == "pusht":
        return PushTEnv(image=image, max_steps=max_steps or 300)
    raise ValueError(f"env must be one of 'toy_push', 'pusht', got {name!r}")
