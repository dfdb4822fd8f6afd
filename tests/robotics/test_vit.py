"""The ViT observation encoder option (``encoder="vit"``): shapes, validation, joint training, EMA target."""

from __future__ import annotations

import pytest
import torch

from apps.robotics.data.windows import dataset_stats
from apps.robotics.vit import ViTEncoder
from tests.robotics.conftest import tiny_net, toy_batch

VIT = dict(encoder="vit", vit_patch=4, vit_dim=16, vit_depth=1, vit_heads=2)


def test_vit_encoder_map_shape_and_patch_positions_matter():
    torch.manual_seed(0)
    enc = ViTEncoder(12, patch=4, dim=16, depth=1, num_heads=2, grid=2)
    x = torch.randn(3, 3, 12, 12)
    y = enc(x)
    assert y.shape == (3, 16, 2, 2) and enc.out_channels == 16
    # Swapping two patches changes the output: learned positions make the encoder order-aware.
    x2 = x.clone()
    x2[..., 0:4, 0:4], x2[..., 8:12, 8:12] = x[..., 8:12, 8:12], x[..., 0:4, 0:4]
    assert not torch.allclose(enc(x2), y)
    with pytest.raises(ValueError, match=r"vit_patch \(5\) must divide the encoder input size \(12\)"):
        ViTEncoder(12, patch=5)
    with pytest.raises(ValueError, match=r"built for 12x12 inputs"):
        enc(torch.randn(1, 3, 16, 16))


def test_vit_policy_net_shapes_and_option_validation(toy_eps):
    net = tiny_net(**VIT)  # 16x16 images, 12x12 crops -> 3x3 patches of 4 pixels
    assert net.encoder.image_size == 12 and net.target_dim == 16
    ds, b = toy_batch(toy_eps)
    net.set_stats(dataset_stats(ds))
    tok, cond = net.encode_obs(b["obs_state"], b["obs_image"])
    assert tok.shape == (8, 2, 32) and cond.shape == (8, 32)
    fut = net.future_tokens(b["future_state"], b["future_image"])
    assert fut.shape == (8, 4, 16)
    with pytest.raises(ValueError, match="encoder must be one of cnn, vit; got 'resnet'"):
        tiny_net(encoder="resnet")


def test_vit_is_trained_jointly_and_ema_target_follows(toy_eps):
    from apps.robotics.objective import DustObjective

    torch.manual_seed(0)
    net = tiny_net(ema_decay=0.5, **VIT).train()
    ds, b = toy_batch(toy_eps)
    net.set_stats(dataset_stats(ds))
    obj = DustObjective(variant="dust")
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    vit0 = [p.detach().clone() for p in net.encoder.parameters()]
    tgt0 = [p.detach().clone() for p in net.target_encoder.parameters()]
    losses = []
    for _ in range(30):
        torch.manual_seed(1)  # same noise and times every step: the loss on this batch must fall
        loss = obj.loss(net, b)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0]
    # Zero-initialised heads give the encoder no gradient at step 0; after training it gets one.
    assert net.encoder.patch_embed.weight.grad.abs().sum() > 0
    assert any(not torch.equal(p, q) for p, q in zip(net.encoder.parameters(), vit0))
    assert any(not torch.equal(p, q) for p, q in zip(net.target_encoder.parameters(), tgt0))  # EMA moved
    assert not any(p.requires_grad for p in net.target_encoder.parameters())


def test_vit_config_selects_the_vit_encoder():
    from pathlib import Path

    import yaml

    from apps.robotics.model import DustPolicyNet

    configs = Path(__file__).resolve().parents[2] / "apps/robotics/configs"
    kinds = {}
    for name in ("pusht_image.yaml", "pusht_image_vit.yaml"):
        args = yaml.safe_load((configs / name).read_text())["model"]["init_args"]["net"]["init_args"]
        net = DustPolicyNet(**args)
        kinds[name] = type(net.encoder).__name__
        tok, _ = net.encode_obs(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3, 96, 96, dtype=torch.uint8))
        assert tok.shape == (1, 2, args["dim"])
    assert kinds == {"pusht_image.yaml": "ConvEncoder", "pusht_image_vit.yaml": "ViTEncoder"}
