"""Networks, the dual-noise objective, both samplers, fusion (STAPLE), uncertainty, post-processing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from apps.echo.model import EchoDNDNet
from apps.echo.objective import EchoDNDObjective
from apps.echo.sampling import entropy, postprocess, segment_batch, staple


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny convs: 1 thread is faster and immune to a busy machine


def _disks(n=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks, images = [], []
    for _ in range(n):
        cy, cx = torch.randint(10, size - 10, (2,), generator=g)
        r = torch.randint(5, 9, (1,), generator=g)
        m = (((yy - cy) ** 2 + (xx - cx) ** 2) <= r**2).float()
        masks.append(m)
        images.append(0.7 * (1 - m) + 0.1 + 0.05 * torch.randn(size, size, generator=g))
    return torch.stack(images)[:, None].clamp(0, 1), torch.stack(masks)[:, None]


def _tiny():
    return EchoDNDNet(widths=(8, 16), emb_dim=32, stem=8)


def test_shapes_and_zero_init_heads():
    net = _tiny()
    img = torch.rand(2, 1, 32, 32)
    eps, logits, cal = net(img, torch.randn(2, 1, 32, 32), torch.bernoulli(torch.full((2, 1, 32, 32), 0.5)), torch.rand(2))
    assert eps.shape == logits.shape == cal.shape == (2, 1, 32, 32)
    assert eps.abs().max() == 0 and logits.abs().max() == 0  # zero-initialised heads
    with pytest.raises(ValueError, match="patch must be one of"):
        EchoDNDNet(patch=3)
    with pytest.raises(ValueError, match="widths must list"):
        EchoDNDNet(widths=(8,))


def test_objective_uses_the_correct_bernoulli_marginal_and_all_terms():
    obj = EchoDNDObjective()
    x0 = torch.cat([torch.zeros(1, 1, 64, 64), torch.ones(1, 1, 64, 64)])
    assert torch.allclose(obj.bernoulli.marginal_prob(x0, torch.ones(2)), torch.full_like(x0, 0.5))  # not B(ᾱ·x0) (bug B1)
    img, mask = _disks(4)
    out = obj.loss(_tiny(), {"image": img, "mask": mask})
    assert set(out) == {"loss", "gaussian", "bernoulli", "vlb_bernoulli", "calibration"}
    # zero heads: ε̂ = 0 → ε-MSE ≈ 1; logits 0 → BCE = ln 2 nats = 1 bit
    assert out["bernoulli"].item() == pytest.approx(1.0, abs=1e-5) and out["gaussian"].item() == pytest.approx(1.0, abs=0.15)
    with pytest.raises(ValueError, match="≥ 0"):
        EchoDNDObjective(cal_weight=-1)
    with pytest.raises(ValueError, match="gaussian_param must be one of"):
        EchoDNDObjective(gaussian_param="flow")
    for param in ("v", "x0"):
        assert torch.isfinite(EchoDNDObjective(gaussian_param=param).loss(_tiny(), {"image": img, "mask": mask})["loss"])


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    net, obj = _tiny(), EchoDNDObjective()
    img, mask = _disks(8)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    batch = {"image": img, "mask": mask}
    with torch.no_grad():
        torch.manual_seed(1)
        before = np.mean([obj.loss(net, batch)["loss"].item() for _ in range(4)])
    for _ in range(40):
        loss = obj.loss(net, batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        torch.manual_seed(1)
        after = np.mean([obj.loss(net, batch)["loss"].item() for _ in range(4)])
    assert after < 0.7 * before


class _Oracle(torch.nn.Module):
    """Knows the true mask: ε̂ exact for the Gaussian chain, ±8 logits for the Bernoulli chain."""

    def __init__(self, mask, obj):
        super().__init__()
        self.mask, self.obj, self.encode_calls = mask, obj, 0

    def encode(self, image):
        self.encode_calls += 1
        return [image], (self.mask * 16 - 8)

    def gaussian(self, image, x_t, t, feats):
        path = self.obj.path
        x0 = (2 * self.mask - 1).repeat_interleave(x_t.shape[0] // self.mask.shape[0], 0)
        a, s = path.alpha(t)[:, None, None, None], path.sigma(t)[:, None, None, None]
        return (x_t - a * x0) / s

    def bernoulli(self, image, x_t, t, feats):
        return (self.mask * 16 - 8).repeat_interleave(x_t.shape[0] // self.mask.shape[0], 0)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_samplers_recover_the_mask_with_an_oracle_and_encode_once(sampler):
    obj = EchoDNDObjective()
    img, mask = _disks(2)
    net = _Oracle(mask, obj)
    out = segment_batch(net, img, steps=10, members=3, objective=obj, gaussian_sampler=sampler)
    assert net.encode_calls == 1  # the image encoder runs once per image, not per member or step
    assert np.allclose(out["p_gauss"], mask.numpy().repeat(3, 1), atol=1e-3)
    assert np.allclose(out["p_bern"], mask.numpy().repeat(3, 1), atol=1e-3)  # probabilities, not logits
    assert (out["mask"] == (mask[:, 0].numpy() > 0)).mean() > 0.99
    assert out["variance"].max() < 1e-5 and out["mutual_info"].max() < 1e-3


def test_fusion_weights_and_staple_fusion():
    obj = EchoDNDObjective()
    img, mask = _disks(1)
    net = _Oracle(mask, obj)
    only_cal = segment_batch(net, img, steps=2, members=2, weights=(0, 0, 1), objective=obj)
    assert np.allclose(only_cal["fused"], torch.sigmoid(mask * 16 - 8)[:, 0].numpy())
    st = segment_batch(net, img, steps=2, members=2, fusion="staple", objective=obj)
    assert ((st["fused"] >= 0.5) == (mask[:, 0].numpy() > 0)).all()
    with pytest.raises(ValueError, match="fusion must be one of"):
        segment_batch(net, img, fusion="squared_mean", objective=obj)
    with pytest.raises(ValueError, match="weights must be 3"):
        segment_batch(net, img, weights=(0, 0, 0), objective=obj)


def test_staple_downweights_a_bad_rater():
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 40), bool)
    truth[10:30, 12:28] = True
    good1 = truth.copy(); good1[10, 12:20] = False
    good2 = truth.copy(); good2[29, 20:28] = False
    bad = rng.random(truth.shape) < 0.5
    w, p, q = staple(np.stack([good1, good2, bad]))
    assert ((w >= 0.5) == truth).mean() > 0.99
    assert p[2] < min(p[0], p[1]) and q[2] < min(q[0], q[1])
    # not the released "staple" = (mean)²: two of three raters at 1 give 0.44 there, STAPLE keeps the vote
    ys, xs = np.nonzero(truth & ~bad & good1 & good2)
    y, x = ys[0], xs[0]
    assert np.mean([good1, good2, bad], 0)[y, x] ** 2 < 0.5 <= w[y, x]


def test_entropy_and_postprocess():
    assert entropy(np.array([0.5]))[0] == pytest.approx(math.log(2))
    m = np.zeros((64, 64), bool)
    m[10:40, 10:40] = True
    m[20:24, 20:24] = False  # a hole
    m[50:53, 50:53] = True  # a speck
    out = postprocess(m)
    assert out[22, 22] and not out[51, 51] and out[15, 15]


def _random_heads(net, seed=0):
    """Give the zero-initialised convolutions small random weights, so both chains depend on x_t."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().max() == 0 and p.ndim > 1:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize("sampler", ["ddim", "ancestral"])
def test_member_is_the_same_alone_or_in_a_batch(sampler):
    torch.manual_seed(0)
    net, obj = _random_heads(_tiny()), EchoDNDObjective()
    img, _ = _disks(2)
    kw = dict(steps=4, objective=obj, gaussian_sampler=sampler, seed=7, post=False)
    batch = segment_batch(net, img, members=4, **kw)
    alone = segment_batch(net, img[1:2], member_ids=[2], **kw)  # member 2 of image 1, nothing else
    for key in ("p_gauss", "p_bern"):
        # equal up to float summation order of batched convolutions (measured ≤ 4e-5); members differ by O(1)
        assert np.abs(alone[key][0, 0] - batch[key][1, 2]).max() < 1e-3, key
        # members are distinct draws (independent generators), and the seed matters
        assert not np.allclose(batch[key][1, 2], batch[key][1, 3], atol=1e-3), key
    other = segment_batch(net, img[1:2], member_ids=[2], **{**kw, "seed": 8})
    assert not np.allclose(other["p_bern"][0, 0], alone["p_bern"][0, 0], atol=1e-3)
    # a chain's draws do not depend on whether the other chain runs
    b_only = segment_batch(net, img[1:2], member_ids=[2], weights=(0, 1, 0), **kw)
    assert np.abs(b_only["p_bern"][0, 0] - alone["p_bern"][0, 0]).max() < 1e-3
    with pytest.raises(ValueError, match="member_ids"):
        segment_batch(net, img, member_ids=[], **kw)
