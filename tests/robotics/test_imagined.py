from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.robotics.imagined import PLAN_COLOUR, check_drawable, overlay_imagined
from apps.robotics.sampling import Policy
from tests.robotics.conftest import tiny_net

SINCOS_KEYS = ["state[0:4]", "state[4:5]@sincos"]


def _plan_pixels(frame: np.ndarray) -> np.ndarray:
    return np.all(frame == np.array(PLAN_COLOUR, np.uint8), axis=-1)


def _near(mask: np.ndarray, target: np.ndarray, radius: int) -> float:
    """Fraction of `mask` pixels within `radius` (Chebyshev) of a `target` pixel."""
    grown = target.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            grown |= np.roll(np.roll(target, dy, 0), dx, 1)
    return float(grown[mask].mean())


@pytest.mark.parametrize("scale", [1, 3])
def test_imagined_t_at_the_true_pose_traces_the_rendered_block(scale):
    pytest.importorskip("gym_pusht")
    from apps.robotics.envs import PushTEnv

    env = PushTEnv(image=False)
    obs, _ = env.reset(seed=0, state=[100, 400, 300, 220, 1.1])
    frame = env.render(scale)
    env.close()
    block = np.all(np.abs(frame.astype(int) - [119, 136, 153]) <= 30, axis=-1)  # LightSlateGray T
    state = obs["state"].astype(np.float64)
    drawn = overlay_imagined(frame, state[None], ["state"], "pusht")
    plan = _plan_pixels(drawn)
    assert plan.sum() > 20 * scale and not _plan_pixels(frame).any()
    assert _near(plan, block, scale + 1) > 0.95  # the outline sits on the rendered T
    # the same pose in the (agent xy, block xy, sin, cos) layout draws the same outline
    sincos = np.array([*state[:4], np.sin(state[4]), np.cos(state[4])])
    np.testing.assert_array_equal(overlay_imagined(frame, sincos[None], SINCOS_KEYS, "pusht"), drawn)
    # a pose moved by 60 px is drawn away from the block: the check above can fail
    moved = state.copy()
    moved[2] += 60
    assert _near(_plan_pixels(overlay_imagined(frame, moved[None], ["state"], "pusht")), block, scale + 1) < 0.6


def test_toy_ring_is_centred_on_the_imagined_block():
    from apps.robotics.envs import ToyPushEnv

    env = ToyPushEnv(res=64)
    obs, _ = env.reset(seed=3)
    frame = env.render(2)
    future = np.stack([obs["state"], obs["state"]]).astype(np.float64)  # K = 2
    plan = _plan_pixels(overlay_imagined(frame, future, ["state"], "toy_push"))
    rows, cols = np.nonzero(plan)
    centre = obs["state"][2:4] * 128  # (x, y) in pixels of the 2x render
    assert abs(cols.mean() - centre[0]) < 1.5 and abs(rows.mean() - centre[1]) < 1.5


def test_refusals():
    ema = tiny_net()
    with pytest.raises(ValueError, match="drawing the imagined future needs imagined future states"):
        check_drawable(ema, ["state"], "toy_push")
    with pytest.raises(ValueError, match="record_imagined needs imagined future states"):
        Policy(ema, ["state"], record_imagined=True)
    net = tiny_net(image_size=0, future_target="state")
    with pytest.raises(ValueError, match="no known block columns"):
        check_drawable(net, ["state[0:2]"], "pusht")
    with pytest.raises(ValueError, match="state spec \\['state'\\]"):
        check_drawable(net, ["state[0:4]"], "toy_push")


def test_policy_records_raw_imagined_states():
    from apps.robotics.sampling import sample_chunk

    torch.manual_seed(0)
    net = tiny_net(image_size=0, future_target="state", future_frames=2)
    net.state_min.fill_(-5.0)
    net.state_max.fill_(20.0)
    policy = Policy(net, ["state"], n_action_steps=2, n_vision_steps=2, record_imagined=True)
    assert policy.imagined is None
    obs = np.random.default_rng(0).random((3, 4), np.float32)
    policy.select_action({"state": obs})
    history = torch.from_numpy(obs)[:, None].repeat(1, 2, 1)  # edge padding of the first observation
    ref = sample_chunk(net, history, None, n_action_steps=2, n_vision_steps=2, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(policy.imagined, net.unnormalize_state(ref["future"]).numpy(), rtol=1e-6)
    assert policy.imagined.shape == (3, 2, 4) and np.abs(ref["future"]).max() < 3 < np.abs(policy.imagined).max()
    policy.reset()
    assert policy.imagined is None


def test_evaluate_draws_the_plan_without_changing_the_rollout(tmp_path):
    pytest.importorskip("av")
    from apps.robotics.data.video import read_video
    from apps.robotics.rollout import evaluate

    torch.manual_seed(0)
    net = tiny_net(image_size=0, future_target="state", future_frames=2)
    policy = Policy(net, ["state"], n_action_steps=2, n_vision_steps=2, execute=4)
    kw = dict(env="toy_push", n_episodes=2, seed0=5, max_steps=12, n_videos=1, res=64)
    plain = evaluate(policy, video_dir=tmp_path / "plain", **kw)
    shown = evaluate(policy, video_dir=tmp_path / "shown", show_imagined=True, **kw)
    assert shown["episode_max_coverage"] == plain["episode_max_coverage"]
    assert shown["episode_steps"] == plain["episode_steps"]
    assert policy.record_imagined is False  # evaluate restores the policy's setting
    a = read_video(tmp_path / "plain" / "episode_5.mp4")
    b = read_video(tmp_path / "shown" / "episode_5.mp4")
    assert a.shape == b.shape
    assert np.abs(a[0].astype(int) - b[0].astype(int)).max() < 40  # the first frame precedes any chunk
    assert max(np.abs(a[i].astype(int) - b[i].astype(int)).max() for i in range(1, len(a))) > 100
    with pytest.raises(ValueError, match="drawing the imagined future"):
        evaluate(Policy(tiny_net(image_size=0, future_target="state", variant="action_only"), ["state"]),
                 show_imagined=True, **kw)
