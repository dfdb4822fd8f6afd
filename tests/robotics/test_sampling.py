from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.robotics.data.windows import dataset_stats
from apps.robotics.sampling import Policy, joint_schedule, sample_chunk
from tests.robotics.conftest import tiny_net, toy_batch


@pytest.mark.parametrize("phase", ["end", "start"])
@pytest.mark.parametrize("n_a,n_o", [(4, 4), (4, 8), (2, 8)])
def test_async_schedule(phase, n_a, n_o):
    s = joint_schedule(n_a, n_o, phase)
    assert s.steps == n_o and s.stream_steps() == (n_a, n_o)
    t = s.times
    q = n_o // n_a
    moves = (t[1:, 0] != t[:-1, 0]).nonzero().flatten().tolist()
    expect = [k for k in range(n_o) if ((k + 1) % q == 0 if phase == "end" else k % q == 0)]
    assert moves == expect
    assert t[-1].tolist() == [0.0, 0.0]


def test_schedule_rejects_non_multiples():
    with pytest.raises(ValueError, match="multiple"):
        joint_schedule(4, 6)
    with pytest.raises(ValueError, match="phase must be one of end, start"):
        joint_schedule(4, 4, "middle")


def _net(toy_eps, **kw):
    net = tiny_net(**kw)
    ds, b = toy_batch(toy_eps)
    net.set_stats(dataset_stats(ds))
    return net, b


def test_modes_and_nfe(toy_eps):
    net, b = _net(toy_eps)
    obs = (b["obs_state"][:3], b["obs_image"][:3])
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    out = sample_chunk(net, *obs, n_action_steps=4, n_vision_steps=8, generator=g())
    assert out["nfe"] == 8 and out["action"].shape == (3, 8, 2) and out["future"].shape == (3, 4, net.target_dim)
    # an untrained (zero-output) net maps noise straight through: x0 = x_t at every step
    again = sample_chunk(net, *obs, n_action_steps=4, n_vision_steps=8, generator=g())
    torch.testing.assert_close(out["action"], again["action"])
    fwd = sample_chunk(net, *obs, mode="forward", actions=b["action"][:3], n_vision_steps=4, generator=g())
    torch.testing.assert_close(fwd["action"], b["action"][:3], atol=1e-4, rtol=0)  # actions stay given
    fut = net.future_tokens(b["future_state"][:3], b["future_image"][:3])
    inv = sample_chunk(net, *obs, mode="inverse", future=fut, generator=g())
    torch.testing.assert_close(inv["future"], fut)
    assert sample_chunk(net, *obs, mode="marginal", generator=g())["nfe"] == 4
    with pytest.raises(ValueError, match="needs actions"):
        sample_chunk(net, *obs, mode="forward")


def test_action_only_samples_marginal(toy_eps):
    net, b = _net(toy_eps, variant="action_only")
    out = sample_chunk(net, b["obs_state"][:2], b["obs_image"][:2], n_vision_steps=16)
    assert out["nfe"] == 4 and out["future"] is None


def test_policy_receding_horizon_and_unbatched(toy_eps, monkeypatch):
    net, _ = _net(toy_eps)
    pol = Policy(net, ["state"], execute=3)
    calls = []

    def fake_chunk(state, image):
        calls.append(state.shape)
        return np.arange(8, dtype=np.float32)[None, :, None].repeat(state.shape[0], 0).repeat(2, 2) + 10 * len(calls)

    monkeypatch.setattr(pol, "predict_action_chunk", fake_chunk)
    obs = {"state": np.zeros(4, np.float32), "image": np.zeros((16, 16, 3), np.uint8)}
    acts = [pol.select_action(obs) for _ in range(7)]
    assert acts[0].shape == (2,)
    assert [a[0] for a in acts] == [10, 11, 12, 20, 21, 22, 30]
    assert len(calls) == 3 and calls[0] == (1, 2, 4)


def test_temporal_ensembling_weights(toy_eps, monkeypatch):
    net, _ = _net(toy_eps)
    m = 0.5
    pol = Policy(net, ["state"], temporal_ensemble=m)
    k = {"n": 0}

    def fake_chunk(state, image):
        k["n"] += 1
        return np.full((state.shape[0], 8, 2), float(k["n"]), np.float32)

    monkeypatch.setattr(pol, "predict_action_chunk", fake_chunk)
    obs = {"state": np.zeros((2, 4), np.float32), "image": np.zeros((2, 16, 16, 3), np.uint8)}
    a1 = pol.select_action(obs)
    a2 = pol.select_action(obs)
    assert a1.shape == (2, 2) and np.allclose(a1, 1.0)
    w = np.exp(-m * np.arange(2))
    assert np.allclose(a2, (w[0] * 1 + w[1] * 2) / w.sum())  # oldest chunk weighted most


def test_real_policy_call(toy_eps):
    net, _ = _net(toy_eps)
    pol = Policy(net, ["state"], n_action_steps=2, n_vision_steps=4)
    obs = {"state": np.zeros((3, 4), np.float32), "image": np.zeros((3, 16, 16, 3), np.uint8)}
    a = pol.select_action(obs)
    assert a.shape == (3, 2) and np.isfinite(a).all()
    assert pol.nfe_per_chunk == 4 and len(pol.latencies_ms) == 1
    with pytest.raises(KeyError, match="image"):
        pol.reset()
        pol.select_action({"state": np.zeros(4, np.float32)})


@pytest.mark.parametrize("m", [-0.1, float("nan"), float("inf")])
def test_policy_rejects_bad_temporal_ensemble_weights(m):
    """The CLI refused these, the Python API took them: NaN made every action NaN, m < 0 reversed the weights."""
    with pytest.raises(ValueError, match="temporal_ensemble must be None or a finite number >= 0"):
        Policy(tiny_net(), ["state"], temporal_ensemble=m)
