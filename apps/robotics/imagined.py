"""Draw what a policy imagines into its rollout videos.

A DUST policy with a state target (``future_target='state'``, K future frames) predicts, with every
action chunk, the states it expects at t + F/K ... t + F. `overlay_imagined` draws them on the env's
rendered frame, so a video shows the plan beside what happened: the block at the imagined end state
(t + F) as an orange outline, the imagined agent positions as a magenta path of dots ending in a ring.
Embedding targets (``ema``, ``random_conv``, ``patches``) have no decoder back to pixels and are refused.

The frame must be the env's own render (gym-pusht: a square view of its 512 x 512 world, y down;
the built-in task: the unit square, y down), at any scale.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from apps.robotics.envs import BLOCK_R, PUSHT_T_VERTICES
from apps.robotics.planning import check_plannable, pusht_block_pose, pusht_layout

PLAN_COLOUR = (255, 140, 0)   # imagined block at t + F
AGENT_COLOUR = (200, 0, 200)  # imagined agent path
_PUSHT_WORLD = 512.0
_TOY_LAYOUT = ("state",)       # the built-in task's state: agent xy, block xy in [0, 1]


def check_drawable(net, state_keys: list[str], env: str) -> None:
    """Raise ValueError unless `net` imagines raw states that `env`'s frames can show."""
    check_plannable(net, "drawing the imagined future")
    if env == "pusht":
        pusht_layout(state_keys)
    elif env == "toy_push":
        if tuple(state_keys) != _TOY_LAYOUT:
            raise ValueError(f"toy_push: imagined states are drawn for the state spec ['state'], got {list(state_keys)}")
    else:
        raise ValueError(f"env must be one of 'toy_push', 'pusht', got {env!r}")


def overlay_imagined(frame: np.ndarray, future: np.ndarray, state_keys: list[str], env: str) -> np.ndarray:
    """Draw one episode's imagined future on a copy of its frame.

    Args:
        frame: ``(h, w, 3)`` uint8, the env's render.
        future: ``(K, D_s)`` raw imagined states, t + F/K ... t + F (the policy's state spec).
        state_keys: the policy's state spec; env: ``"pusht"`` or ``"toy_push"``.
    Returns:
        ``(h, w, 3)`` uint8.
    """
    future = np.asarray(future, np.float64).reshape(len(future), -1)
    h, w = frame.shape[:2]
    scale = np.array([w, h], np.float64) / (_PUSHT_WORLD if env == "pusht" else 1.0)
    image = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(image)
    width = max(1, round(w / 96))
    agents = future[:, :2] * scale
    if env == "pusht":
        x, y, a = pusht_block_pose(future[-1:], pusht_layout(state_keys))[0]
        c, s = np.cos(a), np.sin(a)
        vx, vy = PUSHT_T_VERTICES[:, 0], PUSHT_T_VERTICES[:, 1]
        t_shape = np.stack([x + c * vx - s * vy, y + s * vx + c * vy], 1) * scale
        draw.polygon([tuple(p) for p in t_shape], outline=PLAN_COLOUR, width=width)
    else:
        cx, cy = future[-1, 2:4] * scale
        r = BLOCK_R * scale[0]
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=PLAN_COLOUR, width=width)
    dot = max(1.0, w / 160)
    if len(agents) > 1:
        draw.line([tuple(p) for p in agents], fill=AGENT_COLOUR, width=max(1, width // 2))
    for px, py in agents[:-1]:
        draw.ellipse([px - dot, py - dot, px + dot, py + dot], fill=AGENT_COLOUR)
    px, py = agents[-1]
    draw.ellipse([px - 3 * dot, py - 3 * dot, px + 3 * dot, py + 3 * dot], outline=AGENT_COLOUR, width=width)
    return np.asarray(image)
