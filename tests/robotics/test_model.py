from __future__ import annotations

import pytest
import torch

from apps.robotics.data.windows import dataset_stats
from tests.robotics.conftest import tiny_net, toy_batch


@pytest.mark.parametrize("target", ["ema", "random_conv", "patches"])
def test_shapes_and_zero_init(toy_eps, target):
    net = tiny_net(future_target=target)
    ds, b = toy_batch(toy_eps)
    net.set_stats(dataset_stats(ds))
    tok, cond = net.encode_obs(b["obs_state"], b["obs_image"])
    assert tok.shape == (8, 2, 32) and cond.shape == (8, 32)
    fut = net.future_tokens(b["future_state"], b["future_image"])
    assert fut.shape == (8, net.n_future, net.target_dim) == (8, 4, net.target_dim)
    u_a, u_b = net(tok, cond, torch.randn(8, 8, 2), torch.rand(8), fut, torch.rand(8))
    assert u_a.shape == (8, 8, 2) and u_b.shape == fut.shape
    assert u_a.abs().max() == 0 and u_b.abs().max() == 0  # zero-initialised heads


def test_state_target_and_action_only():
    net = tiny_net(image_size=0, future_target="state")
    s = torch.randn(3, 2, 4)
    fut = net.future_tokens(s[:, 0])
    assert fut.shape == (3, 1, 4)
    ao = tiny_net(variant="action_only")
    tok, cond = ao.encode_obs(torch.randn(3, 2, 4), torch.zeros(3, 2, 3, 16, 16, dtype=torch.uint8))
    u_a, u_b = ao(tok, cond, torch.randn(3, 8, 2), torch.rand(3), None, torch.rand(3))
    assert u_a.shape == (3, 8, 2) and u_b is None


def test_normaliser_roundtrip_and_bad_inputs(toy_eps):
    net = tiny_net()
    ds, b = toy_batch(toy_eps)
    net.set_stats(dataset_stats(ds))
    a = b["action"][b["has_action"]]  # video-only rows are zeros, outside the action statistics
    na = net.normalize_action(a)
    assert na.min() >= -1.0001 and na.max() <= 1.0001
    torch.testing.assert_close(net.unnormalize_action(na), a, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"image shape \(3, 20, 20\) differs from the checkpoint's \(3, 16, 16\)"):
        net.encode_obs(b["obs_state"], torch.zeros(8, 2, 3, 20, 20, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        net.encode_obs(torch.full((1, 2, 4), float("nan")), b["obs_image"][:1])
    with pytest.raises(ValueError, match="future_target must be one of ema, random_conv, patches, state"):
        tiny_net(future_target="dino")
    with pytest.raises(ValueError, match="action_dim"):
        net.set_stats({"action": {"min": torch.zeros(3), "max": torch.ones(3)}})


def test_ema_target_follows_encoder_and_random_conv_is_fixed():
    net = tiny_net(future_target="ema", ema_decay=0.5)
    with torch.no_grad():
        for p in net.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in net.target_encoder.parameters()]
    net.update_target()
    moved = [(p - q).abs().max().item() for p, q in zip(net.target_encoder.parameters(), before)]
    assert all(m == pytest.approx(0.5, abs=1e-5) for m in moved)
    assert not any(p.requires_grad for p in net.target_encoder.parameters())
    rc = tiny_net(future_target="random_conv")
    w = [p.clone() for p in rc.target_encoder.parameters()]
    rc.update_target()
    assert all(torch.equal(p, q) for p, q in zip(rc.target_encoder.parameters(), w))
    assert torch.equal(next(tiny_net(future_target="random_conv").target_encoder.parameters()), w[0])  # seeded
