from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.robotics.envs import PUSHT_GOAL_POSE, pusht_coverage, pusht_vertex_distance
from apps.robotics.planning import PushTCoverageScore, best_of_n, make_score
from apps.robotics.sampling import Policy, sample_chunk
from tests.robotics.conftest import tiny_net

SINCOS_KEYS = ["state[0:4]", "state[4:5]@sincos"]


def _state_net(**kw):
    torch.manual_seed(0)
    return tiny_net(state_dim=6, image_size=0, future_target="state", future_frames=2, **kw)


def test_coverage_geometry_matches_gym_pusht():
    pytest.importorskip("gym_pusht")
    from apps.robotics.envs import PushTEnv

    env = PushTEnv(image=False)
    rng = np.random.default_rng(0)
    poses, ref = [], []
    for i in range(40):
        xy = rng.uniform(150, 360, 2) if i % 2 else 256 + rng.normal(0, 15, 2)
        angle = rng.uniform(0, 2 * np.pi) if i % 2 else np.pi / 4 + rng.normal(0, 0.3)
        _, info = env.reset(seed=0, state=[100, 100, *xy, angle])
        poses.append([*env.u.block.position, env.u.block.angle])
        ref.append(info["coverage"])
    env.close()
    ref = np.asarray(ref)
    assert (ref > 0.3).sum() >= 10  # the sample covers partial overlaps, not just misses
    np.testing.assert_allclose(pusht_coverage(np.asarray(poses)), ref, atol=1e-9)


def test_coverage_limits_and_score_layouts():
    gx, gy, ga = PUSHT_GOAL_POSE
    assert pusht_coverage(np.array([[gx, gy, ga]]))[0] == pytest.approx(1.0)
    assert pusht_coverage(np.array([[gx, gy, ga + 2 * np.pi]]))[0] == pytest.approx(1.0)
    assert pusht_coverage(np.array([[50.0, 50.0, 0.0]]))[0] == 0.0
    at_goal = torch.tensor([[[0, 0, gx, gy, np.sin(ga), np.cos(ga)]]], dtype=torch.float32)
    far = torch.tensor([[[0, 0, 50, 50, 0, 1]]], dtype=torch.float32)
    s = PushTCoverageScore(SINCOS_KEYS)(torch.cat([at_goal, far]))
    assert s.shape == (2,) and s[0] == pytest.approx(1.0, abs=1e-5) and s[1] == 0.0
    raw = PushTCoverageScore(["state"])(torch.tensor([[[0, 0, gx, gy, ga]]], dtype=torch.float32))
    assert raw[0] == pytest.approx(1.0, abs=1e-5)
    pose = make_score("pusht_pose", SINCOS_KEYS)(torch.cat([at_goal, far]))
    assert pose[0] == pytest.approx(0.0, abs=1e-3) and pose[1] < -100  # minus the vertex distance in pixels
    with pytest.raises(ValueError, match="no known block columns"):
        PushTCoverageScore(["state[0:2]"])
    with pytest.raises(ValueError, match="plan score must be one of pusht_coverage"):
        make_score("reward", SINCOS_KEYS)


def test_vertex_distance():
    gx, gy, ga = PUSHT_GOAL_POSE
    d = pusht_vertex_distance(np.array([[gx, gy, ga], [gx + 30, gy - 40, ga], [gx, gy, ga + np.pi]]))
    assert d[0] == pytest.approx(0.0, abs=1e-9) and d[1] == pytest.approx(50.0)  # a shift moves every vertex
    # half a turn about the body origin moves vertex v to -v: mean 2|v| over the 8 vertices
    v = np.array([(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120), (-15, 30), (-60, 30)], float)
    assert d[2] == pytest.approx(2 * np.linalg.norm(v, axis=1).mean())


def test_best_of_n_executes_the_best_imagined_future():
    net = _state_net()
    obs = torch.randn(3, 2, 6)
    n = 5
    score = lambda fut: fut[:, -1, 0]  # noqa: E731  (any differentiable-free ranking of the future)
    kw = dict(n_action_steps=2, n_vision_steps=4)
    out = best_of_n(net, obs, None, n, score, generator=torch.Generator().manual_seed(7), **kw)
    ref = sample_chunk(net, obs.repeat_interleave(n, 0), None, generator=torch.Generator().manual_seed(7), **kw)
    all_scores = net.unnormalize_state(ref["future"])[:, -1, 0].reshape(3, n)
    best = all_scores.argmax(1)
    assert len(set(best.tolist())) > 1 or n == 1  # candidates differ, so the pick is not constant
    torch.testing.assert_close(out["scores"], all_scores)
    torch.testing.assert_close(out["score"], all_scores.max(1).values)
    torch.testing.assert_close(out["action"], ref["action"][torch.arange(3) * n + best])
    assert out["future"].shape == (3, 2, 6) and out["nfe"] == 4


def test_planning_needs_state_futures_and_a_score():
    with pytest.raises(ValueError, match="future_target='state'"):
        best_of_n(tiny_net(), torch.zeros(1, 2, 4), torch.zeros(1, 2, 3, 16, 16, dtype=torch.uint8), 2,
                  lambda f: f[:, 0, 0])
    with pytest.raises(ValueError, match="variant='action_only'"):
        Policy(_state_net(variant="action_only"), SINCOS_KEYS, plan_samples=2, plan_score=lambda f: f[:, 0, 0])
    with pytest.raises(ValueError, match="needs mode='policy'"):
        Policy(_state_net(), SINCOS_KEYS, mode="marginal", plan_samples=2, plan_score=lambda f: f[:, 0, 0])
    with pytest.raises(ValueError, match="needs a plan_score"):
        Policy(_state_net(), SINCOS_KEYS, plan_samples=2)
    with pytest.raises(ValueError, match="plan_samples must be >= 1"):
        Policy(_state_net(), SINCOS_KEYS, plan_samples=0)
    with pytest.raises(ValueError, match="future states of their own spec"):  # not laid out by the obs spec
        best_of_n(tiny_net(future_target="state", target_state_dim=6), torch.zeros(1, 2, 4),
                  torch.zeros(1, 2, 3, 16, 16, dtype=torch.uint8), 2, lambda f: f[:, 0, 0])


def test_planning_policy_closed_loop_on_pusht():
    pytest.importorskip("gym_pusht")
    from apps.robotics.rollout import evaluate

    pol = Policy(_state_net(), SINCOS_KEYS, n_action_steps=2, n_vision_steps=2, execute=2, plan_samples=3,
                 plan_score=make_score("pusht_coverage", SINCOS_KEYS))
    res = evaluate(pol, "pusht", n_episodes=2, max_steps=4)
    assert res["plan_samples"] == 3 and res["episode_steps"] == [4, 4]
    assert len(pol.plan_scores) == 2 * 2 and res["plan_score_mean"] == pytest.approx(np.mean(pol.plan_scores))
