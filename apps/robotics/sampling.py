"""Sampling: DUST's asynchronous joint sampler, the four inference modes, and the `Policy` API.

Joint schedules (t = 1 noise -> 0 data, one joint network call per row step; core ``sample_joint``):
  policy    both streams from noise; vision steps every call, actions every q-th call,
            ``N_o = q·N_A`` calls (``phase="end"``: the action update uses the last, most refined
            vision state of each group -- core ``asynchronous``; ``"start"``: the first of each group).
  forward   forward dynamics: actions given clean (t_a ≡ 0), the future tokens are generated.
  inverse   inverse dynamics: future tokens given clean (t_b ≡ 0), actions generated.
  marginal  "zero vision steps": vision held at noise (t_b ≡ 1); the action-only variant always
            samples this way.
`Policy` adds observation history, receding-horizon execution or ACT temporal ensembling, and
latency bookkeeping; ``select_action(obs)`` takes dataset-named fields (batched or not).
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor

from dualsci.diffusion import JointSchedule, RectifiedFlowPath, asynchronous, marginal_b, sample_joint

from apps.robotics.data.episodes import gather_columns, spec_fields
from apps.robotics.model import DustPolicyNet, check_option

Mode = Literal["policy", "forward", "inverse", "marginal"]
Phase = Literal["end", "start"]
MODES: tuple[str, ...] = get_args(Mode)
PHASES: tuple[str, ...] = get_args(Phase)
_RF = RectifiedFlowPath()


def joint_schedule(n_action_steps: int, n_vision_steps: int, phase: str = "end") -> JointSchedule:
    """DUST's asynchronous schedule with ``N_o = q·N_A`` joint calls (``(t_a, t_b)`` rows)."""
    check_option("phase", phase, PHASES)
    if n_action_steps < 1 or n_vision_steps < n_action_steps or n_vision_steps % n_action_steps:
        raise ValueError(f"n_vision_steps ({n_vision_steps}) must be a positive multiple of "
                         f"n_action_steps ({n_action_steps})")
    return asynchronous(n_action_steps, n_vision_steps // n_action_steps, phase)


def _fixed(n: int, t_a: float | None, t_b: float | None) -> JointSchedule:
    """n calls with one stream pinned at a constant time and the other on a uniform grid."""
    t = torch.linspace(1, 0, n + 1, dtype=torch.float64)
    a = t if t_a is None else torch.full_like(t, t_a)
    b = t if t_b is None else torch.full_like(t, t_b)
    return JointSchedule(torch.stack([a, b], 1))


@torch.no_grad()
def sample_chunk(net: DustPolicyNet, obs_state: Tensor, obs_image: Tensor | None = None, *,
                 n_action_steps: int = 4, n_vision_steps: int = 4, phase: str = "end", mode: str = "policy",
                 actions: Tensor | None = None, future: Tensor | None = None,
                 generator: torch.Generator | None = None, task: Tensor | None = None) -> dict:
    """Sample one action chunk (and the imagined future tokens).

    Args:
        obs_state: ``(B, n_obs, D_s)`` raw; obs_image: ``(B, n_obs, 3, h, w)`` uint8 or None.
        mode: ``policy | forward | inverse | marginal`` (module docstring).
        actions: ``(B, H, D_a)`` raw actions for ``forward``; future: ``(B, L_b, target_dim)`` target
            tokens (from ``net.future_tokens``) for ``inverse``.
    Returns:
        ``{"action": (B, H, D_a) raw units, "action_norm": normalised, "future": (B, L_b, target_dim)
        or None, "nfe": int}``.
    """
    check_option("mode", mode, MODES)
    was = net.training
    net.eval()
    obs_tok, cond = net.encode_obs(obs_state, obs_image, task)
    b, dev = cond.shape[0], cond.device
    shape_a = (b, net.horizon, net.action_dim)
    shape_b = (b, net.n_future_tokens, net.target_dim)
    # Noise drawn on the CPU generator, then moved: the same seed gives the same chunk on any device.
    x_a = torch.randn(shape_a, generator=generator).to(dev)
    x_b = torch.randn(shape_b, generator=generator).to(dev)
    if net.variant == "action_only":
        if mode in ("forward", "inverse"):
            raise ValueError(f"mode={mode!r} needs a vision stream; the action_only variant has none")
        mode = "marginal"
    if mode == "policy":
        sched = joint_schedule(n_action_steps, n_vision_steps, phase)
    elif mode == "marginal":
        sched = marginal_b(n_action_steps)
    elif mode == "forward":
        if actions is None:
            raise ValueError("mode='forward' needs actions (B, H, D_a)")
        x_a = net.normalize_action(actions.to(dev).float())
        sched = _fixed(n_vision_steps, 0.0, None)
    else:
        if future is None:
            raise ValueError("mode='inverse' needs future tokens (B, L_b, target_dim)")
        x_b = future.to(dev).float()
        sched = _fixed(n_action_steps, None, 0.0)

    def joint_fn(xa, ta, xb, tb):
        u_a, u_b = net(obs_tok, cond, xa, ta, xb, tb)
        x0_a = xa - ta[:, None, None] * u_a
        x0_b = xb if u_b is None else xb - tb[:, None, None] * u_b
        return x0_a, x0_b

    x_a, x_b, nfe = sample_joint(joint_fn, x_a, x_b, sched, _RF, _RF, return_nfe=True)
    net.train(was)
    return {"action": net.unnormalize_action(x_a), "action_norm": x_a,
            "future": None if net.variant == "action_only" else x_b, "nfe": nfe}


def _uint8_frames(img: np.ndarray) -> np.ndarray:
    """Frames as uint8 0..255 (what the envs and datasets give and the net's normaliser assumes).

    Integer arrays within 0..255 are cast; floats are refused: LeRobot-style 0..1 frames would be
    divided by 255 again and reach the net as near-black images without any error."""
    if img.dtype == np.uint8:
        return img
    if np.issubdtype(img.dtype, np.integer) and (img.size == 0 or (img.min() >= 0 and img.max() <= 255)):
        return img.astype(np.uint8)
    raise ValueError(f"observation: 'image' must be uint8 0..255 frames, got {img.dtype}"
                     + (f" with values {img.min()}..{img.max()}" if img.size else "")
                     + ("; a float 0..1 frame needs (x * 255).round().astype(np.uint8)"
                        if np.issubdtype(img.dtype, np.floating) else ""))


class Policy:
    """Closed-loop policy around a trained `DustPolicyNet`.

    Args:
        net: the network (its buffers hold the normalisation statistics).
        state_keys: column spec that builds the state vector from observation fields (as in training).
        n_action_steps, n_vision_steps, phase, mode: sampler settings (N_A, N_o).
        execute: receding horizon -- actions executed from each chunk before re-planning.
        temporal_ensemble: None, or ACT's m: re-plan every step and average all chunks covering the
            step with weights ``exp(-m·i)``, i = 0 the oldest.
        seed: sampler noise seed (reset by `reset`).
        plan_samples, plan_score: world-model planning (`apps.robotics.planning.best_of_n`): draw
            ``plan_samples`` chunks per observation and execute the one whose imagined future scores
            highest under ``plan_score`` (needed when ``plan_samples > 1``).
        record_imagined: keep the raw imagined future states of the latest chunk in ``self.imagined``
            (``(B, K, D_s)`` numpy; needs ``future_target='state'``), e.g. to draw them into videos.
    """

    def __init__(self, net: DustPolicyNet, state_keys: list[str], n_action_steps: int = 4, n_vision_steps: int = 4,
                 phase: str = "end", mode: str = "policy", execute: int = 8, temporal_ensemble: float | None = None,
                 seed: int = 0, plan_samples: int = 1, plan_score=None, record_imagined: bool = False):
        self.net = net.eval()
        self.state_keys = list(state_keys)
        self.n_action_steps, self.n_vision_steps = n_action_steps, n_vision_steps
        self.phase = check_option("phase", phase, PHASES)
        self.mode = check_option("mode", mode, MODES)
        if not 1 <= execute <= net.horizon:
            raise ValueError(f"execute must be in [1, {net.horizon}], got {execute}")
        if temporal_ensemble is not None and not (math.isfinite(temporal_ensemble) and temporal_ensemble >= 0):
            # exp(-m·i) with m < 0 weights the newest chunks ever more; NaN makes every action NaN
            raise ValueError(f"temporal_ensemble must be None or a finite number >= 0, got {temporal_ensemble}")
        self.execute, self.temporal_ensemble, self.seed = execute, temporal_ensemble, seed
        joint_schedule(n_action_steps, n_vision_steps, phase)  # validate early
        if plan_samples < 1:
            raise ValueError(f"plan_samples must be >= 1, got {plan_samples}")
        if plan_samples > 1:
            from apps.robotics.planning import check_plannable

            check_plannable(net)
            if mode != "policy":
                raise ValueError(f"planning scores the futures the policy imagines: it needs mode='policy', got {mode!r}")
            if plan_score is None:
                raise ValueError("plan_samples > 1 needs a plan_score (e.g. apps.robotics.planning.make_score)")
        self.plan_samples, self.plan_score = int(plan_samples), plan_score
        if record_imagined:
            from apps.robotics.planning import check_plannable

            check_plannable(net, "record_imagined")
        self.record_imagined = bool(record_imagined)
        self.latencies_ms: list[float] = []
        self.nfe_per_chunk = 0
        self.reset()

    def reset(self) -> None:
        """Forget history, queued actions and ensembles; re-seed the sampler."""
        self._forget_plan()
        self.generator = torch.Generator().manual_seed(self.seed)
        self.plan_scores: list[float] = []  # imagined score of each chosen chunk (planning only)
        self.imagined: np.ndarray | None = None  # (B, K, D_s) raw imagined states of the latest chunk
        self.batched = True

    def _forget_plan(self) -> None:
        """Drop observation history, queued actions and ensembled chunks (not the sampler seed)."""
        self.history: deque = deque(maxlen=self.net.n_obs)
        self.queue: deque = deque()
        self.chunks: list[list] = []  # [chunk (B, H, D_a) numpy, age]

    def _prepare(self, obs: dict) -> tuple[Tensor, Tensor | None]:
        self.task = None
        if self.net.n_tasks > 0:
            if "task_index" not in obs:
                raise KeyError("observation has no 'task_index' but the policy was trained on several tasks")
            self.task = torch.empty(0)  # checked against the batch size below
        fields = self._batch_fields(obs)
        self._check_widths(fields)
        dev = self.net.state_min.device
        state = torch.from_numpy(gather_columns(fields, self.state_keys, "observation")).to(dev)
        # checked here, before the observation enters the history: a bad one must not poison later calls
        if state.shape[1] != self.net.state_dim:
            raise ValueError(f"observation: state spec {self.state_keys} gives {state.shape[1]} columns, "
                             f"the policy expects state_dim={self.net.state_dim}")
        if not torch.isfinite(state).all():  # would stay in the history and make every later chunk NaN
            raise ValueError(f"observation: state spec {self.state_keys} gives non-finite values (NaN/inf)")
        if self.task is not None:
            self.task = self._task_ids(obs["task_index"], len(state)).to(dev)
        image = None
        if self.net.use_image:
            if "image" not in fields:
                raise KeyError("observation has no 'image' but the policy was trained on images")
            side = self.net.image_size
            if fields["image"].shape[1:] != (side, side, 3):
                raise ValueError(f"observation: image is {fields['image'].shape[1:]}, "
                                 f"the policy expects ({side}, {side}, 3) per observation")
            frames = _uint8_frames(fields["image"])
            image = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).to(dev)
        return state, image

    def _task_ids(self, value: object, batch: int) -> Tensor:
        """``task_index`` as ``(B,)`` long ids in ``[0, n_tasks)``: one id per observation, or one
        shared by the whole batch; anything else names the problem (was an error deep in torch)."""
        ids = np.asarray(value).reshape(-1)
        if ids.size == 1:
            ids = np.repeat(ids, batch)
        if ids.size != batch:
            raise ValueError(f"observation: 'task_index' has {ids.size} ids for a batch of {batch}")
        if not np.issubdtype(ids.dtype, np.integer) and not (
            np.issubdtype(ids.dtype, np.floating) and np.all(np.isfinite(ids)) and np.all(ids == np.round(ids))
        ):
            raise ValueError(f"observation: 'task_index' must be whole numbers, got {ids.tolist()}")
        if ids.min() < 0 or ids.max() >= self.net.n_tasks:
            raise ValueError(f"observation: 'task_index' {ids.tolist()} outside 0..{self.net.n_tasks - 1} "
                             "(the tasks the policy was trained on)")
        return torch.from_numpy(ids.astype(np.int64))

    def _batch_fields(self, obs: dict) -> dict[str, np.ndarray]:
        """The fields the policy reads (state spec fields, ``image``), batched ``(B, ...)``; sets
        ``self.batched``. One observation or a batch: a field's rank tells them apart (its per-frame
        rank from training when the checkpoint records it, else 1; images 3); anything else, fields
        of different batch sizes or an empty batch is a ValueError naming the fields."""
        shapes = getattr(self.net, "obs_field_shapes", None) or {}
        names = spec_fields(self.state_keys) + (["image"] if "image" in obs else [])
        fields = {k: np.asarray(obs[k]) for k in dict.fromkeys(names) if k in obs}
        if not fields:
            raise KeyError(f"observation has none of the fields the policy reads {names or self.state_keys}; "
                           f"got {sorted(obs)}")
        rank = {k: 3 if k == "image" else len(shapes.get(k, [0])) for k in fields}
        for k, v in fields.items():
            if v.ndim not in (rank[k], rank[k] + 1):
                dims = "H, W, 3" if k == "image" else ", ".join(map(str, shapes[k])) if k in shapes else "D"
                raise ValueError(f"observation: {k!r} has shape {v.shape}; expected ({dims}) or (B, {dims})")
        lead = "image" if "image" in fields else next(iter(fields))
        self.batched = fields[lead].ndim == rank[lead] + 1
        for k, v in fields.items():
            if (v.ndim == rank[k] + 1) != self.batched:
                raise ValueError(f"observation: {k!r} {v.shape} and {lead!r} {fields[lead].shape}: one is a batch, "
                                 "the other a single observation")
        if not self.batched:
            return {k: v[None] for k, v in fields.items()}
        sizes = {k: len(v) for k, v in fields.items()}
        if len(set(sizes.values())) > 1 or 0 in sizes.values():
            raise ValueError(f"observation: batch sizes {sizes} must be equal and >= 1")
        return fields

    def _check_widths(self, fields: dict[str, np.ndarray]) -> None:
        """A field of another width than in training is an error, not sliced: ``state[0:4]`` of a
        6-value state would silently drop a column the policy never saw (``fields`` batched)."""
        for name, shape in (getattr(self.net, "obs_field_shapes", None) or {}).items():
            if name in fields:
                got, want = (int(np.prod(x, dtype=np.int64)) for x in (fields[name].shape[1:], shape))
                if got != want:
                    raise ValueError(f"observation: {name!r} has {got} values per frame, the policy was trained "
                                     f"on {want} (state spec {self.state_keys})")

    def predict_action_chunk(self, obs_state: Tensor, obs_image: Tensor | None) -> np.ndarray:
        """``obs_state (B, n_obs, D_s)``, ``obs_image (B, n_obs, 3, h, w)`` -> raw chunk ``(B, H, D_a)``."""
        t0 = time.perf_counter()
        kw = dict(n_action_steps=self.n_action_steps, n_vision_steps=self.n_vision_steps, phase=self.phase,
                  mode=self.mode, generator=self.generator, task=getattr(self, "task", None))
        if self.plan_samples > 1:
            from apps.robotics.planning import best_of_n

            out = best_of_n(self.net, obs_state, obs_image, self.plan_samples, self.plan_score, **kw)
            self.plan_scores.extend(out["score"].tolist())
        else:
            out = sample_chunk(self.net, obs_state, obs_image, **kw)
        self.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
        if self.record_imagined:  # best_of_n already returns raw states, sample_chunk normalised ones
            future = out["future"] if self.plan_samples > 1 else self.net.unnormalize_future(out["future"])
            self.imagined = future.cpu().numpy()
        self.nfe_per_chunk = out["nfe"]
        return out["action"].cpu().numpy()

    def select_action(self, obs: dict) -> np.ndarray:
        """Next action(s) ``(B, D_a)`` (or ``(D_a,)`` for an unbatched observation)."""
        state, image = self._prepare(obs)
        if self.history and self.history[-1][0].shape[0] != state.shape[0]:
            # another batch size is another set of episodes: queued actions and history of the old
            # batch cannot serve it (a 1-row queue answered a 2-row request with 1 action), so re-plan
            self._forget_plan()
        if not self.history:
            for _ in range(self.net.n_obs):  # edge padding, as in training windows
                self.history.append((state, image))
        else:
            self.history.append((state, image))
        need = self.temporal_ensemble is not None or not self.queue
        if need:
            s = torch.stack([h[0] for h in self.history], 1)
            im = torch.stack([h[1] for h in self.history], 1) if image is not None else None
            chunk = self.predict_action_chunk(s, im)
            if self.temporal_ensemble is None:
                self.queue.extend(chunk[:, i] for i in range(self.execute))
            else:
                self.chunks.append([chunk, 0])
        if self.temporal_ensemble is None:
            action = self.queue.popleft()
        else:
            self.chunks = [c for c in self.chunks if c[1] < self.net.horizon]
            w = np.exp(-self.temporal_ensemble * np.arange(len(self.chunks)))  # i = 0 the oldest
            acts = np.stack([c[0][:, c[1]] for c in self.chunks])  # (n, B, D_a)
            action = (w[:, None, None] * acts).sum(0) / w.sum()
            for c in self.chunks:
                c[1] += 1
        return action if self.batched else action[0]
