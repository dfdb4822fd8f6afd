from __future__ import annotations

import pytest
import torch

from apps.robotics.data.windows import dataset_stats
from apps.robotics.objective import DustObjective, dust_to_dualsci, make_time_dist
from tests.robotics.conftest import tiny_net, toy_batch


def test_dust_convention_converter():
    """DUST: A^τ = τA + (1-τ)ε, target V = A - ε. Ours: x_t = (1-t)A + tε, target u = ε - A."""
    A, eps, tau = torch.randn(5, 3), torch.randn(5, 3), torch.rand(5, 1)
    x_dust = tau * A + (1 - tau) * eps
    t, u = dust_to_dualsci(tau, A - eps)
    x_ours = (1 - t) * A + t * eps
    torch.testing.assert_close(x_dust, x_ours)
    torch.testing.assert_close(u, eps - A)


def test_time_distributions():
    g = make_time_dist("gr00t_beta").sample(20000)
    assert 0 <= g.min() and g.max() <= 1 and g.mean() > 0.55  # Beta(1.5, 1)/0.999: mean 0.6, noisy end
    u = make_time_dist("uniform").sample(20000)
    assert abs(u.mean() - 0.5) < 0.02
    with pytest.raises(ValueError, match="time_dist must be one of gr00t_beta, uniform, logit_normal"):
        DustObjective(time_dist="cosine")


def _setup(toy_eps, **kw):
    net = tiny_net(**kw)
    ds, b = toy_batch(toy_eps, n=16)
    net.set_stats(dataset_stats(ds))
    return net, b


@pytest.mark.parametrize("variant", ["dust", "joint_noise", "action_only"])
def test_loss_terms_and_overfit(toy_eps, variant):
    net, b = _setup(toy_eps, variant=variant)
    obj = DustObjective(variant=variant, time_dist="uniform")
    out = obj.loss(net.train(), b)
    assert set(out) == {"loss", "loss_action", "loss_vision"}
    if variant == "action_only":
        assert out["loss_vision"] == 0
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    torch.manual_seed(0)
    first = sum(obj.loss(net, b)["loss"].item() for _ in range(4))
    for _ in range(40):
        loss = obj.loss(net, b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = sum(obj.loss(net, b)["loss"].item() for _ in range(4))
    assert last < 0.8 * first


def test_independent_vs_shared_times(toy_eps, monkeypatch):
    net, b = _setup(toy_eps)
    seen = {}

    def spy(obs_tok, cond, xa, ta, xb, tb):
        seen["t"] = (ta.clone(), tb.clone())
        return torch.zeros_like(xa), torch.zeros_like(xb)

    monkeypatch.setattr(net, "forward", spy)
    DustObjective(variant="dust").loss(net, b)
    ta, tb = seen["t"]
    keep = b["has_action"]
    assert not torch.allclose(ta[keep], tb[keep])
    DustObjective(variant="joint_noise").loss(net, b)
    ta, tb = seen["t"]
    assert torch.equal(ta[keep], tb[keep])


def test_video_only_samples_pin_actions_at_full_noise(toy_eps, monkeypatch):
    net, b = _setup(toy_eps)
    b = dict(b)
    b["has_action"] = torch.zeros_like(b["has_action"])
    seen = {}

    def spy(obs_tok, cond, xa, ta, xb, tb):
        seen["ta"] = ta.clone()
        return torch.ones_like(xa) * 5, torch.zeros_like(xb)  # a terrible action prediction

    monkeypatch.setattr(net, "forward", spy)
    out = DustObjective().loss(net, b)
    assert torch.all(seen["ta"] == 1.0)
    assert out["loss_action"] == 0          # no action loss from video-only samples
    assert out["loss_vision"] > 0


def test_mismatched_variant_is_an_error(toy_eps):
    net, b = _setup(toy_eps, variant="action_only")
    with pytest.raises(ValueError, match="does not match"):
        DustObjective(variant="dust").loss(net, b)


def test_state_trajectory_world_model_trains_and_feeds_the_diagnostics(toy_eps):
    from types import SimpleNamespace

    from apps.robotics.data.module import RoboticsDataModule
    from apps.robotics.data.windows import WindowDataset
    from apps.robotics.metrics import offline_metrics

    torch.manual_seed(0)
    net = tiny_net(image_size=0, future_target="state", future_frames=4)
    ds = WindowDataset(toy_eps, ["state"], n_obs=2, horizon=8, use_image=False, future_frames=4)
    net.set_stats(dataset_stats(ds))
    b = ds.__getitems__(list(range(0, len(ds), max(1, len(ds) // 16)))[:16])
    obj = DustObjective(variant="dust", time_dist="uniform")
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    first = sum(obj.loss(net.train(), b)["loss_vision"].item() for _ in range(4))
    for _ in range(40):
        loss = obj.loss(net, b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sum(obj.loss(net, b)["loss_vision"].item() for _ in range(4)) < 0.8 * first
    res = offline_metrics(net, ds, n_samples=8)
    assert set(res["corrupted_future_action_mse"]) == {"0.0", "0.1", "0.5", "1.0"} and -1 <= res["future_cosine"] <= 1
    # The windows and the network must agree on the number of future frames.
    dm = RoboticsDataModule(None, state_keys=["state"], use_image=False, horizon=8, val_episodes=0, toy_episodes=4,
                            toy_res=16)
    dm.trainer = SimpleNamespace(lightning_module=SimpleNamespace(net=net))
    with pytest.raises(ValueError, match="future_frames=4"):
        dm.setup("fit")
