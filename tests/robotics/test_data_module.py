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


def test_image_policy_with_a_state_target_trains_saves_and_loads(tmp_path):
    """``target_keys`` + ``target_state_dim``: the image policy observes the agent only and imagines the
    whole future state; the target statistics reach the net and travel with the saved policy."""
    import torch

    from apps.robotics.train import build_module, fit, load_policy_net, save_policy

    nk = dict(action_dim=2, state_dim=2, horizon=8, n_obs=2, image_size=16, crop_size=12, dim=32, num_heads=2,
              depth_dual=1, depth_tail=1, enc_channels=8, grid=2, future_target="state", target_state_dim=4)
    data_kw = dict(state_keys=["state[0:2]"], use_image=True, horizon=8, val_episodes=1, toy_episodes=4,
                   toy_res=16, batch_size=4, target_keys=["state"])
    dm = RoboticsDataModule(None, **data_kw)
    module = build_module(nk, {"variant": "dust"})
    fit(module, dm, max_steps=3)
    net = module.net
    assert bool(net.stats_set)
    torch.testing.assert_close(net.target_max, dm.stats["target"]["max"])
    torch.testing.assert_close(net.state_max, dm.stats["state"]["max"])
    assert net.target_max.shape == (4,) and net.state_max.shape == (2,)
    path = save_policy(tmp_path / "p.pt", module, nk, {"variant": "dust"}, data_kw)
    loaded, info = load_policy_net(path)
    assert loaded.target_state_dim == 4 and info["data_kwargs"]["target_keys"] == ["state"]
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    # A data module whose target spec the net does not share is refused at bind time.
    module2 = build_module(dict(nk, target_state_dim=None), {"variant": "dust"})
    with pytest.raises(DataError, match=r"future-state target has 4 columns \['state'\], the model expects "
                                        r"target_state_dim=None"):
        fit(module2, RoboticsDataModule(None, **data_kw), max_steps=1)
