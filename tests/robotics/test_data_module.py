"""`RoboticsDataModule`: episode limits larger than the file, and errors naming the file's episode."""

from __future__ import annotations

import numpy as np
import pytest

from apps.robotics.data import DataError
from apps.robotics.data.module import RoboticsDataModule
from apps.robotics.data.zarr_io import write_replay_zarr


def _module(path, **kw):
    args = dict(state_keys=["state"], use_image=False, horizon=4, val_episodes=1)
    args.update(kw)
    return RoboticsDataModule(str(path), **args)


@pytest.mark.parametrize("fmt", ["zarr", "lerobot_v2.1"])
def test_max_episodes_beyond_the_file_uses_every_episode(tmp_path, toy_eps, fmt):
    from apps.robotics.data.convert import save_episodes

    eps = toy_eps.select(range(4))  # action-bearing episodes only
    path = save_episodes(eps, tmp_path / "d", fmt)
    dm = _module(path, max_episodes=20)
    assert dm.load().n_episodes == 4
    assert _module(path, max_episodes=3).load().episode_ids.tolist() == [0, 1, 2]


def test_nan_in_a_validation_episode_names_the_file_episode(tmp_path, toy_eps):
    eps = toy_eps.select(range(4))
    eps.fields["state"][eps.starts[3] + 1, 0] = np.nan  # the last episode: the validation split
    path = write_replay_zarr(eps, tmp_path / "nan.zarr")
    with pytest.raises(DataError, match=r"nan\.zarr, episode 3, key 'state'"):
        _module(path).setup("fit")
    # two held out: file episode 3 is the validation subset's episode 1
    with pytest.raises(DataError, match=r"nan\.zarr, episode 3, key 'state'"):
        _module(path, val_episodes=2).setup("fit")


def test_select_keeps_file_episode_ids(toy_eps):
    sub = toy_eps.select([3, 1]).select([1])
    assert sub.episode_ids.tolist() == [1]


def test_fmt_is_checked_at_construction():
    """A misspelt fmt was taken silently (and ignored when path was None); the CLI now refuses the Literal."""
    from typing import get_args

    from apps.robotics.data.convert import FORMATS
    from apps.robotics.data.module import Format

    assert get_args(Format) == FORMATS
    with pytest.raises(ValueError, match="fmt must be one of zarr, lerobot_v2.1, lerobot_v3, robomimic"):
        RoboticsDataModule(None, fmt="lerobot")


def test_checkpoint_shapes_must_match_the_data():
    """validate/test/resume on data whose state is wider than the checkpoint's training data (a sliced spec
    passes the state_dim check) ran on silently sliced observations."""
    dm = RoboticsDataModule(None, state_keys=["state[0:2]"], use_image=False, horizon=8, val_episodes=1, toy_episodes=3)
    dm.setup()
    assert dm.state_dict() == {"obs_field_shapes": {"state": [4]}}
    dm.load_state_dict({"obs_field_shapes": {"state": [4]}})  # same data: fine
    dm.load_state_dict({})  # checkpoints from before 2026-12-07 record nothing
    with pytest.raises(DataError, match=r"per-frame shapes \{'state': \[4\]\} differ from the checkpoint's training "
                                        r"data \{'state': \[5\]\}"):
        dm.load_state_dict({"obs_field_shapes": {"state": [5]}})
