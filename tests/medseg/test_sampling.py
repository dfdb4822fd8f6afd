from __future__ import annotations

import torch

from apps.medseg.generate import load_generator
from apps.medseg.sampling import sample_pairs


def test_seeds_make_pairs_independent_of_batch(tiny_generator):
    net, obj = load_generator(tiny_generator)
    p = net.vocab.encode_batch([net.vocab.parse("CT with liver and spleen")] * 3)
    img3, m3 = sample_pairs(net, obj, p, [5, 6, 7], steps=4)
    img1, m1 = sample_pairs(net, obj, p[:1], [6], steps=4)
    assert torch.allclose(img3[1], img1[0], atol=1e-5) and torch.equal(m3[1], m1[0])
    assert not torch.allclose(img3[0], img3[1])
    assert img3.shape == (3, 1, 16, 16) and m3.dtype == torch.long and m3.max() < net.num_classes


def test_conditional_modes_freeze_the_given_stream(tiny_generator):
    net, obj = load_generator(tiny_generator)
    p = net.vocab.encode_batch([net.vocab.parse("CT liver")] * 2)
    mask = torch.zeros(2, 16, 16, dtype=torch.long)
    mask[:, 3:9, 3:9] = 1
    img, m = sample_pairs(net, obj, p, [0, 1], steps=3, mode="mask2image", mask=mask)
    assert torch.equal(m, mask)
    given = torch.rand(2, 1, 16, 16) * 2 - 1
    img2, m2 = sample_pairs(net, obj, p, [0, 1], steps=3, mode="image2mask", image=given)
    assert torch.equal(img2, given) and m2.shape == (2, 16, 16)


def test_cfg_scale_one_equals_unguided_and_guidance_changes_output(tiny_generator):
    net, obj = load_generator(tiny_generator)
    p = net.vocab.encode_batch([net.vocab.parse("CT liver")])
    a, _ = sample_pairs(net, obj, p, [3], steps=3, cfg_scale=1.0)
    b, _ = sample_pairs(net, obj, p, [3], steps=3, cfg_scale=(1.0, 1.0))
    c, _ = sample_pairs(net, obj, p, [3], steps=3, cfg_scale=(4.0, 1.0))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_guidance_interval_limits_guided_steps(tiny_generator):
    net, obj = load_generator(tiny_generator)
    p = net.vocab.encode_batch([net.vocab.parse("CT liver")])
    full, _ = sample_pairs(net, obj, p, [3], steps=4, cfg_scale=4.0)
    every, _ = sample_pairs(net, obj, p, [3], steps=4, cfg_scale=4.0, cfg_interval=(0.0, 1.0))
    never, _ = sample_pairs(net, obj, p, [3], steps=4, cfg_scale=4.0, cfg_interval=(0.0, 0.1))  # t = 1, .75, .5, .25
    plain, _ = sample_pairs(net, obj, p, [3], steps=4, cfg_scale=1.0)
    part, _ = sample_pairs(net, obj, p, [3], steps=4, cfg_scale=4.0, cfg_interval=(0.0, 0.6))
    assert torch.equal(full, every) and torch.allclose(never, plain, atol=1e-6)
    assert not torch.allclose(part, full) and not torch.allclose(part, plain)
    import pytest

    with pytest.raises(ValueError, match="cfg_interval"):
        sample_pairs(net, obj, p, [3], steps=2, cfg_scale=4.0, cfg_interval=(0.8, 0.2))
