"""LightningDataModule over any supported dataset (or the built-in push task)."""

from __future__ import annotations

from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader

from apps.robotics.data.convert import FORMATS, detect_format, load_episodes, load_first_episodes
from apps.robotics.data.episodes import DataError, EpisodeSet, field_shapes
from apps.robotics.data.windows import WindowDataset, collate_batch, dataset_stats


Format = Literal["zarr", "lerobot_v2.1", "lerobot_v3", "robomimic"]  # = convert.FORMATS (checked below)


class RoboticsDataModule(pl.LightningDataModule):
    """Episode-split windows for `DustPolicyNet`.

    Args:
        path: dataset (zarr dir/zip, LeRobot folder, robomimic .hdf5); None = the built-in push task.
        fmt: force a format (default: detected).
        state_keys: column spec of the state vector (e.g. ``["state[0:2]"]`` agent position).
        use_image: feed images (``image`` field) to the policy.
        n_obs, horizon, future_offset: window shape (future frame at t + future_offset, default H).
        future_frames: future states per window for a trajectory world model (must equal the net's).
        target_keys: column spec of the future states the world model imagines, when they differ from
            the observation's (must match the net's ``target_state_dim``); None = `state_keys`.
        batch_size, num_workers: loader settings (``num_workers=0`` on 2-core machines).
        val_episodes: episodes held out for validation (the last ones).
        max_episodes: use only the first N episodes (quick runs).
        video_only_path: extra dataset whose episodes train only the vision stream.
        toy_episodes, toy_video_only, toy_res: built-in task size when ``path`` is None.
        min_episode_length: shorter episodes are an error naming file and episode (default: horizon).
        task_key: per-frame task id field for multi-task nets (``n_tasks > 0``), e.g. ``task_index``.
        seed: shuffling seed.
    """

    def __init__(self, path: str | None = None, fmt: Format | None = None, state_keys: list[str] = ("state",),
                 use_image: bool = True, n_obs: int = 2, horizon: int = 16, future_offset: int | None = None,
                 batch_size: int = 64, num_workers: int = 0, val_episodes: int = 4, max_episodes: int | None = None,
                 video_only_path: str | None = None, toy_episodes: int = 100, toy_video_only: int = 0,
                 toy_res: int = 32, min_episode_length: int | None = None, task_key: str | None = None,
                 seed: int = 0, future_frames: int = 1, target_keys: list[str] | None = None):
        super().__init__()
        if fmt is not None and fmt not in FORMATS:  # the CLI checks the Literal; Python callers get this
            raise ValueError(f"fmt must be one of {', '.join(FORMATS)} or None; got {fmt!r}")
        self.save_hyperparameters()
        self.stats: dict | None = None
        self.train_set = self.val_set = None
        self.obs_field_shapes: dict[str, list[int]] | None = None

    def state_dict(self) -> dict:
        """Saved in Lightning checkpoints: the observation shapes a policy needs to check its input."""
        return {"obs_field_shapes": self.obs_field_shapes} if self.obs_field_shapes else {}

    def load_state_dict(self, state: dict) -> None:
        """Lightning calls this (after `setup`) when resuming, validating or testing a checkpoint: data
        whose fields differ from the checkpoint's training data is an error, not sliced to fit
        (``state[0:4]`` of a 6-value state passes the state_dim check)."""
        want = state.get("obs_field_shapes")
        have = self.obs_field_shapes
        if want and have is not None and any(k in have and list(have[k]) != list(v) for k, v in want.items()):
            source = self.train_set.eps.source if self.train_set is not None else self.hparams.path
            raise DataError(f"{source}: per-frame shapes {have} differ from the checkpoint's training data {want}")

    def load(self) -> EpisodeSet:
        h = self.hparams
        if h.path is None:
            from apps.robotics.data.builtin import generate_toy_push

            eps = generate_toy_push(h.toy_episodes, seed=h.seed, res=h.toy_res, video_only=h.toy_video_only)
        else:
            fmt = h.fmt or detect_format(h.path)
            kw = {"skip_images": True} if fmt == "zarr" and not h.use_image else {}  # state-only: no frames
            eps = load_first_episodes(h.path, fmt, h.max_episodes or None, **kw)
        if h.video_only_path:
            extra = load_episodes(h.video_only_path)
            extra.has_action[:] = False
            eps = EpisodeSet.concat([eps, extra])
        return eps

    def prepare_data(self) -> None:
        """Read and check the data now: Lightning calls this before its logger creates
        ``lightning_logs/version_N``, so bad data stops a run without leaving that folder."""
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        h = self.hparams
        eps = self.load()
        n_val = min(h.val_episodes, max(eps.n_episodes - 1, 0))
        action_eps = np.nonzero(eps.has_action)[0]
        val_ids = action_eps[len(action_eps) - n_val:] if n_val else np.array([], int)
        train_ids = [e for e in range(eps.n_episodes) if e not in set(val_ids.tolist())]
        kw = dict(state_keys=list(h.state_keys), n_obs=h.n_obs, horizon=h.horizon, future_offset=h.future_offset,
                  use_image=h.use_image,
                  min_length=h.horizon if h.min_episode_length is None else h.min_episode_length,
                  task_key=h.task_key, future_frames=h.future_frames,
                  target_keys=None if h.target_keys is None else list(h.target_keys))
        self.train_set = WindowDataset(eps.select(train_ids), **kw)
        self.val_set = WindowDataset(eps.select(val_ids), **kw) if len(val_ids) else None
        self.stats = dataset_stats(self.train_set)
        self.obs_field_shapes = field_shapes(eps.fields, list(h.state_keys))
        self._bind_model()

    def _bind_model(self) -> None:
        """Give the model the training statistics (fit from scratch) and check shapes against it."""
        trainer = getattr(self, "trainer", None)
        module = getattr(trainer, "lightning_module", None) if trainer is not None else None
        net = getattr(module, "net", None)
        if net is None or not hasattr(net, "set_stats"):
            return
        ds = self.train_set
        if ds.state.shape[1] != net.state_dim:
            raise DataError(f"{ds.eps.source}: state has {ds.state.shape[1]} columns ({list(self.hparams.state_keys)}), "
                            f"the model expects state_dim={net.state_dim}")
        if ds.action.shape[1] and ds.action.shape[1] != net.action_dim:
            raise DataError(f"{ds.eps.source}: action has {ds.action.shape[1]} dims, model action_dim={net.action_dim}")
        if net.use_image and (ds.image is None or tuple(ds.image.shape[2:]) != (net.image_size, net.image_size)):
            got = None if ds.image is None else tuple(ds.image.shape[2:])
            raise DataError(f"{ds.eps.source}: images are {got}, the model expects "
                            f"({net.image_size}, {net.image_size})")
        net_frames = getattr(net, "future_frames", 1)
        if net_frames != self.hparams.future_frames:
            raise DataError(f"{ds.eps.source}: the data module gives {self.hparams.future_frames} future frames, "
                            f"the model expects future_frames={net_frames}")
        net_target = getattr(net, "target_state_dim", None)
        data_target = None if ds.target is None else ds.target.shape[1]
        if net_target != data_target:
            have = "no spec of its own" if data_target is None else f"{data_target} columns {list(self.hparams.target_keys)}"
            raise DataError(f"{ds.eps.source}: the data module's future-state target has {have}, "
                            f"the model expects target_state_dim={net_target}")
        if not bool(net.stats_set):
            net.set_stats(self.stats)
        net.obs_field_shapes = dict(self.obs_field_shapes)

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.hparams.num_workers, generator=g,
                          collate_fn=collate_batch)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, shuffle=False,
                          num_workers=self.hparams.num_workers, collate_fn=collate_batch)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
