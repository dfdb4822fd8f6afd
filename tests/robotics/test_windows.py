from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.robotics.data import EpisodeSet
from apps.robotics.data.windows import WindowDataset, dataset_stats, future_offsets


def _eps():
    # two episodes of lengths 3 and 5; state = frame id, action = 100 + frame id
    n = 8
    state = np.arange(n, dtype=np.float32)[:, None]
    return EpisodeSet({"state": state, "action": 100 + state, "image": np.zeros((n, 4, 4, 3), np.uint8)},
                      np.array([3, 8]))


def test_edge_padding_never_crosses_episodes():
    ds = WindowDataset(_eps(), ["state"], n_obs=2, horizon=4, use_image=True)
    assert len(ds) == 8
    it = ds[0]
    assert it["obs_state"][:, 0].tolist() == [0, 0]        # before start: repeat frame 0
    assert it["action"][:, 0].tolist() == [100, 101, 102, 102]  # after end: repeat last action
    assert it["future_state"].item() == 2                  # t + H clamped to the episode end
    it = ds[3]                                             # first frame of episode 1
    assert it["obs_state"][:, 0].tolist() == [3, 3]
    assert it["action"][:, 0].tolist() == [103, 104, 105, 106]
    assert it["future_state"].item() == 7
    assert ds[4]["obs_state"][:, 0].tolist() == [3, 4]
    assert it["obs_image"].shape == (2, 3, 4, 4) and it["obs_image"].dtype == torch.uint8


def test_batched_gather_matches_items():
    ds = WindowDataset(_eps(), ["state"], n_obs=2, horizon=4, future_offset=2)
    batch = ds.__getitems__([1, 5, 7])
    for j, i in enumerate([1, 5, 7]):
        item = ds[i]
        for k in item:
            assert torch.equal(batch[k][j], item[k])


def test_stats_skip_video_only_actions():
    eps = _eps()
    eps.has_action[:] = [False, True]
    eps.fields["action"][:3] = 0.0
    ds = WindowDataset(eps, ["state"], horizon=4)
    st = dataset_stats(ds)
    assert st["action"]["min"].item() == 103 and st["action"]["max"].item() == 107
    assert st["state"]["min"].item() == 0 and st["state"]["max"].item() == 7
    assert not ds[0]["has_action"] and ds[4]["has_action"]


def test_future_offsets_spacing_and_bounds():
    assert future_offsets(16, 4) == [4, 8, 12, 16]
    assert future_offsets(16, 1) == [16]
    assert future_offsets(4, 3) == [1, 3, 4]
    for bad in (0, 17):
        with pytest.raises(ValueError, match="future_frames"):
            future_offsets(16, bad)


def test_future_state_trajectory_is_clamped_to_the_episode():
    ds = WindowDataset(_eps(), ["state"], n_obs=2, horizon=4, use_image=False, future_frames=2)
    assert ds[3]["future_states"][:, 0].tolist() == [5, 7]   # t + 2, t + 4 inside episode 1 (frames 3..7)
    assert ds[5]["future_states"][:, 0].tolist() == [7, 7]   # t + 2 = 7, t + 4 clamped to the last frame
    assert ds[0]["future_states"][:, 0].tolist() == [2, 2]   # episode 0 ends at frame 2
    assert ds[5]["future_state"].item() == ds[5]["future_states"][-1, 0].item()  # the last one is t + F
    batch = ds.__getitems__([0, 3, 5])
    assert batch["future_states"].shape == (3, 2, 1)
    assert "future_states" not in WindowDataset(_eps(), ["state"], horizon=4, use_image=False)[0]


def test_target_keys_give_the_future_its_own_columns():
    """An image policy that observes only part of the state can imagine the whole future state."""
    eps = _eps()
    eps.fields["pose"] = np.stack([10 + np.arange(8), 20 + np.arange(8)], 1).astype(np.float32)
    ds = WindowDataset(eps, ["state"], horizon=4, use_image=False, target_keys=["pose"], future_frames=2)
    it = ds[3]                                          # first frame of episode 1
    assert it["obs_state"][:, 0].tolist() == [3, 3]     # observations keep their own spec
    assert it["future_state"].tolist() == [17, 27]      # t + 4 = frame 7 of the target columns
    assert it["future_states"].tolist() == [[15, 25], [17, 27]]
    st = dataset_stats(ds)
    assert st["target"]["min"].tolist() == [10, 20] and st["target"]["max"].tolist() == [17, 27]
    assert st["state"]["max"].item() == 7
    plain = WindowDataset(eps, ["state"], horizon=4, use_image=False)
    assert plain.target is None and "target" not in dataset_stats(plain)
    assert plain[3]["future_state"].tolist() == [7]
