"""Episode-aware training windows and normalisation statistics.

A sample anchored at frame t of episode e holds (Diffusion Policy edge padding, never crossing
episodes):
  obs frames t-n_obs+1 .. t     (before the episode start: repeat frame 0)
  actions    t .. t+H-1         (after the episode end: repeat the last action)
  future obs t+F                (F = future_offset, default H: the frame right after the chunk;
                                 clamped to the last frame)
  future states t+F/K .. t+F    (with future_frames = K > 1: K states evenly spaced up to t+F, the
                                 future trajectory of a state-target world model)
The future states come from the observation's state spec, or from their own spec (``target_keys``): an
image policy that sees only the agent position can still learn to imagine the whole future state.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from apps.robotics.data.episodes import EpisodeSet, gather_columns


def future_offsets(future_offset: int, future_frames: int) -> list[int]:
    """Frame offsets of ``future_frames`` future states evenly spaced up to ``future_offset``.

    ``future_offsets(16, 4) == [4, 8, 12, 16]``; ``future_offsets(16, 1) == [16]``. Offsets are
    distinct and positive, so ``future_frames`` may not exceed ``future_offset``.
    """
    f, k = int(future_offset), int(future_frames)
    if k < 1 or k > f:
        raise ValueError(f"future_frames must be in [1, future_offset={f}], got {k}")
    return [round(f * (j + 1) / k) for j in range(k)]


class WindowDataset(Dataset):
    """Windows over an `EpisodeSet`.

    Args:
        eps: episodes; must hold the fields named by `state_keys` (and ``image`` if `use_image`).
        state_keys: column spec for the state vector (see `gather_columns`), e.g.
            ``["keypoint", "state[0:2]"]`` for PushT keypoints + agent position.
        n_obs: observation horizon. horizon: action chunk length H. future_offset: F.
        future_frames: K; K > 1 adds the item ``future_states`` (states at `future_offsets(F, K)`).
        use_image: include ``obs_image`` / ``future_image``.
        min_length: episodes shorter than this are an error (windows are edge-padded, but an
            episode shorter than the action horizon is usually a recording fault).
        task_key: per-frame integer task id field (e.g. LeRobot ``task_index``) -> item ``task``.
        target_keys: column spec of the future states (the world model's target) when it differs from
            the observation's (e.g. the full PushT state for an image policy); None = `state_keys`.
    Items:
        ``obs_state (n_obs, D_s)``, ``action (H, D_a)``, ``future_state (D_t,)``, ``has_action ()`` bool,
        with ``future_frames > 1`` also ``future_states (K, D_t)`` (clamped to the episode's last frame;
        ``D_t`` = ``D_s`` unless `target_keys` gives the future its own spec),
        and with images ``obs_image (n_obs, 3, h, w)`` uint8, ``future_image (3, h, w)`` uint8.
        Values are raw (not normalised): the model owns the normaliser, so a policy takes raw obs.
    """

    def __init__(self, eps: EpisodeSet, state_keys: list[str], n_obs: int = 2, horizon: int = 16,
                 future_offset: int | None = None, use_image: bool = True, action_key: str = "action",
                 image_key: str = "image", min_length: int = 1, task_key: str | None = None,
                 future_frames: int = 1, target_keys: list[str] | None = None):
        self.eps = eps
        self.n_obs, self.horizon = int(n_obs), int(horizon)
        self.future_offset = int(horizon if future_offset is None else future_offset)
        self.future_frames = int(future_frames)
        self.future_steps = torch.tensor(future_offsets(self.future_offset, self.future_frames))
        required = [image_key] if use_image else []
        eps.validate(min_length=min_length, required=tuple(required))
        self.state = torch.from_numpy(gather_columns(eps.fields, state_keys, eps.source))
        # The future states' own columns (None: the future is the observation's state).
        self.target = (None if target_keys is None
                       else torch.from_numpy(gather_columns(eps.fields, list(target_keys), eps.source)))
        self.future = self.state if self.target is None else self.target
        if action_key in eps.fields:
            self.action = torch.from_numpy(np.asarray(eps.fields[action_key], np.float32).reshape(eps.n_frames, -1))
        else:
            self.action = torch.zeros(eps.n_frames, 0)
        self.image = None
        if use_image:
            img = np.asarray(eps.fields[image_key])
            if img.ndim != 4 or img.shape[-1] != 3:
                from apps.robotics.data.episodes import data_error

                raise data_error(eps.source, f"images must be (N, H, W, 3), got {img.shape}", key=image_key)
            self.image = torch.from_numpy(np.ascontiguousarray(img.transpose(0, 3, 1, 2)))  # (N, 3, h, w) uint8
        self.task = None
        if task_key is not None:
            if task_key not in eps.fields:
                from apps.robotics.data.episodes import data_error

                raise data_error(eps.source, f"missing task ids (have {sorted(eps.fields)})", key=task_key)
            self.task = torch.from_numpy(np.asarray(eps.fields[task_key]).reshape(-1).astype(np.int64))
        epi = eps.episode_index()
        self.frame_episode = torch.from_numpy(epi)
        self.start = torch.from_numpy(eps.starts[epi])
        self.end = torch.from_numpy(eps.episode_ends[epi])
        self.has_action = torch.from_numpy(eps.has_action[epi])

    def __len__(self) -> int:
        return len(self.start)

    def indices(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Absolute frame indices (obs `(n_obs,)`, actions `(H,)`, future) of sample `i`."""
        s, e = int(self.start[i]), int(self.end[i])
        obs = torch.arange(i - self.n_obs + 1, i + 1).clamp(min=s)
        act = torch.arange(i, i + self.horizon).clamp(max=e - 1)
        fut = min(i + self.future_offset, e - 1)
        return obs, act, fut

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        """A whole batch at once (vectorised gathers; the DataLoader uses it with `collate_batch`)."""
        i = torch.as_tensor(indices, dtype=torch.long)
        s, e = self.start[i, None], self.end[i, None]
        obs = torch.maximum(i[:, None] + torch.arange(-self.n_obs + 1, 1), s)
        act = torch.minimum(i[:, None] + torch.arange(self.horizon), e - 1)
        fut = torch.minimum(i + self.future_offset, self.end[i] - 1)
        batch = {"obs_state": self.state[obs], "action": self.action[act], "future_state": self.future[fut],
                 "has_action": self.has_action[i]}
        if self.future_frames > 1:
            batch["future_states"] = self.future[torch.minimum(i[:, None] + self.future_steps, e - 1)]
        if self.image is not None:
            batch["obs_image"] = self.image[obs]
            batch["future_image"] = self.image[fut]
        if self.task is not None:
            batch["task"] = self.task[i]
        return batch


def collate_batch(batch):
    """Collate for `WindowDataset.__getitems__` (already a batch dict)."""
    return batch


def minmax_stats(x: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-dimension min/max of `x: (N, D)` (for min-max scaling to [-1, 1])."""
    x = torch.as_tensor(x, dtype=torch.float32).reshape(len(x), -1)
    return {"min": x.min(0).values, "max": x.max(0).values}


def image_stats(images: torch.Tensor, max_frames: int = 2000, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-channel mean/std of uint8 images `(N, 3, h, w)` on [0, 1] from a fixed random subset."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(images), generator=g)[:max_frames]
    x = images[idx].float() / 255.0
    return {"mean": x.mean(dim=(0, 2, 3)), "std": x.std(dim=(0, 2, 3)).clamp_min(1e-3)}


def dataset_stats(ds: WindowDataset) -> dict[str, dict[str, torch.Tensor]]:
    """Normalisation statistics of a window dataset (actions only from action-bearing episodes)."""
    stats = {"state": minmax_stats(ds.state)}
    if ds.target is not None:
        stats["target"] = minmax_stats(ds.target)
    rows = ds.has_action
    if rows.any() and ds.action.shape[1] > 0:
        stats["action"] = minmax_stats(ds.action[rows])
    if ds.image is not None:
        stats["image"] = image_stats(ds.image)
    return stats
