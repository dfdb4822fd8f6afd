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


def test_task_embedding_multi_task(tmp_path, toy_eps):
    import numpy as np

    from apps.robotics.data import EpisodeSet
    from apps.robotics.data.lerobot import read_lerobot, write_lerobot
    from apps.robotics.data.windows import WindowDataset

    fields = dict(toy_eps.fields, task_index=np.repeat(np.arange(toy_eps.n_episodes) % 3, toy_eps.lengths))
    eps = EpisodeSet(fields, toy_eps.episode_ends, toy_eps.has_action, source="multi")
    back = read_lerobot(write_lerobot(eps, tmp_path / "mt", version="v2.1"))
    np.testing.assert_array_equal(back.fields["task_index"], fields["task_index"])
    ds = WindowDataset(back, ["state"], horizon=8, task_key="task_index")
    b = ds.__getitems__([0, len(ds) - 1])
    assert b["task"].tolist() == [0, (toy_eps.n_episodes - 1) % 3]
    net = tiny_net(n_tasks=3)
    net.set_stats(dataset_stats(ds))
    _, c0 = net.encode_obs(b["obs_state"][:1], b["obs_image"][:1], torch.tensor([0]))
    _, c1 = net.encode_obs(b["obs_state"][:1], b["obs_image"][:1], torch.tensor([1]))
    assert not torch.allclose(c0, c1)
    with pytest.raises(ValueError, match="pass task ids"):
        net.encode_obs(b["obs_state"], b["obs_image"])
    with pytest.raises(ValueError, match=r"task ids must be in \[0, 3\)"):
        net.encode_obs(b["obs_state"][:1], b["obs_image"][:1], torch.tensor([5]))
    from apps.robotics.objective import DustObjective

    assert torch.isfinite(DustObjective().loss(net.train(), b)["loss"])


def test_action_only_has_an_empty_vision_stream():
    torch.manual_seed(0)
    ao = tiny_net(variant="action_only", image_size=0, future_target="state")
    assert ao.n_future_tokens == 0 and ao.pos_b.shape == (0, 3)
    for p in ao.parameters():
        p.data.normal_(0, 0.1)  # leave the zero init so the output is not trivially 0
    tok, cond = ao.encode_obs(torch.randn(3, 2, 4))
    x, t = torch.randn(3, 8, 2), torch.rand(3)
    u, _ = ao(tok, cond, x, t, None, t)
    with torch.no_grad():  # stream-b token weights have nothing to act on: the actions cannot change
        ao.transformer.embed_b.weight.add_(5.0)
        ao.transformer.dual_blocks[0].mlp_b.fc1.weight.add_(3.0)
    u2, _ = ao(tok, cond, x, t, None, t)
    assert u.abs().mean() > 0
    torch.testing.assert_close(u, u2)


def test_image_action_only_carries_no_target_encoder_and_loads_old_policies():
    """An action-only image policy predicts no future: no EMA target encoder (it used to carry an unused copy of
    the image encoder, trained by nothing and saved in every checkpoint); state dicts saved with one still load."""
    torch.manual_seed(0)
    ao = tiny_net(variant="action_only", future_target="ema")
    assert ao.use_image and ao.target_encoder is None
    assert not any(k.startswith("target_encoder.") for k in ao.state_dict())
    dust = tiny_net(future_target="ema")
    assert ao.target_dim == dust.target_dim  # the same widths as before: stream b's input stays shaped alike
    old = {**ao.state_dict(), **{f"target_encoder.{k}": v for k, v in ao.encoder.state_dict().items()}}
    fresh = tiny_net(variant="action_only", future_target="ema")
    fresh.load_state_dict(old)  # strict: the old keys are dropped, nothing else is missing
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in ao.state_dict().items())
    ao.update_target()  # a no-op, not an error
    with pytest.raises(RuntimeError, match="Unexpected key"):  # other stray keys still fail a strict load
        fresh.load_state_dict({**old, "bogus.weight": torch.zeros(1)})


def test_state_trajectory_target_tokens_and_positions():
    net = tiny_net(image_size=0, future_target="state", future_frames=4)  # horizon 8: frames 2, 4, 6, 8
    assert net.n_future_tokens == 4 and net.pos_b[:, 0].tolist() == [2.0, 4.0, 6.0, 8.0]
    states = torch.randn(3, 4, 4)
    fut = net.future_tokens(states[:, -1], None, states)
    assert fut.shape == (3, 4, 4) and torch.allclose(fut, net.normalize_state(states))
    tok, cond = net.encode_obs(torch.randn(3, 2, 4), None)
    u_a, u_b = net(tok, cond, torch.randn(3, 8, 2), torch.rand(3), fut, torch.rand(3))
    assert u_a.shape == (3, 8, 2) and u_b.shape == (3, 4, 4)
    with pytest.raises(ValueError, match="future_states"):
        net.future_tokens(states[:, -1])
    with pytest.raises(ValueError, match="future_target='state'"):
        tiny_net(future_target="ema", future_frames=2)
    assert tiny_net(image_size=0, future_target="state", variant="action_only", future_frames=4).n_future_tokens == 0


def test_future_state_target_of_its_own_spec():
    """``target_state_dim``: an image policy imagines a wider future state with its own normaliser."""
    net = tiny_net(future_target="state", target_state_dim=3)
    assert net.target_dim == 3 and net.n_future == 1
    stats = {"state": {"min": torch.zeros(4), "max": torch.ones(4)},
             "target": {"min": torch.tensor([0.0, 10.0, -5.0]), "max": torch.tensor([2.0, 30.0, 5.0])}}
    with pytest.raises(ValueError, match="no 'target' entry"):
        net.set_stats({"state": stats["state"]})
    net.set_stats(stats)
    fut = net.future_tokens(torch.tensor([[1.0, 30.0, -5.0]]))
    torch.testing.assert_close(fut, torch.tensor([[[0.0, 1.0, -1.0]]]))
    torch.testing.assert_close(net.unnormalize_future(fut[:, 0]), torch.tensor([[1.0, 30.0, -5.0]]))
    tok, cond = net.encode_obs(torch.rand(1, 2, 4), torch.zeros(1, 2, 3, 16, 16, dtype=torch.uint8))
    _, u_b = net(tok, cond, torch.randn(1, 8, 2), torch.rand(1), fut, torch.rand(1))
    assert u_b.shape == (1, 1, 3)
    with pytest.raises(ValueError, match="target statistics have"):
        net.set_stats({**stats, "target": {"min": torch.zeros(2), "max": torch.ones(2)}})
    with pytest.raises(ValueError, match="target_state_dim=3 needs future_target='state'"):
        tiny_net(future_target="ema", target_state_dim=3)
    # Nets without a target spec have no target buffers: their older checkpoints load strictly.
    assert "target_min" not in tiny_net(future_target="state").state_dict()
    assert "target_min" in net.state_dict()
