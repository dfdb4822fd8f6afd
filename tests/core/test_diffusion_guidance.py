"""Classifier-free guidance: exact at scale 1, batched branches, per-stream scales, interval."""

from __future__ import annotations

import pytest
import torch

from dualsci.diffusion import CFGDenoiser, StreamDropGuidance, cfg


def _fn(calls):
    def fn(x, sigma, cond):
        calls.append(x.shape[0])
        return x * sigma[:, None] + cond

    return fn


def test_cfg_formula_and_scale_one_is_exact():
    c, u = torch.randn(3, 4), torch.randn(3, 4)
    assert cfg(c, u, 1.0) is c
    assert torch.allclose(cfg(c, u, 3.0), u + 3.0 * (c - u))
    per_sample = cfg(c, u, torch.tensor([1.0, 2.0, 1.0]))
    assert torch.equal(per_sample[0], c[0]) and torch.allclose(per_sample[1], u[1] + 2 * (c[1] - u[1]))


def test_cfg_denoiser_scale_one_equals_conditional_with_one_call():
    calls = []
    x, sigma, cond = torch.randn(3, 4), torch.rand(3) + 0.5, torch.randn(3, 4)
    out = CFGDenoiser(_fn(calls), 1.0, null_cond=torch.zeros(4))(x, sigma, cond=cond)
    assert torch.equal(out, x * sigma[:, None] + cond) and calls == [3]


def test_cfg_denoiser_batches_both_branches():
    calls = []
    x, sigma, cond = torch.randn(3, 4), torch.rand(3) + 0.5, torch.randn(3, 4)
    null = torch.full((4,), -1.0)
    out = CFGDenoiser(_fn(calls), 4.0, null_cond=null)(x, sigma, cond=cond)
    c, u = x * sigma[:, None] + cond, x * sigma[:, None] + null
    assert calls == [6] and torch.allclose(out, u + 4.0 * (c - u))


def test_per_stream_scales_and_interval():
    def joint(x_a, t_a, x_b, t_b, cond):
        return x_a + cond, x_b - cond

    x_a, x_b, t = torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0.9, 0.2])
    cond, null = torch.randn(2, 3), torch.zeros(3)
    out_a, out_b = CFGDenoiser(joint, (2.0, 1.0), null_cond=null)(x_a, t, x_b, t, cond=cond)
    assert torch.allclose(out_a, x_a + 2.0 * cond) and torch.allclose(out_b, x_b - cond)
    guided = CFGDenoiser(joint, 2.0, null_cond=null, interval=(0.5, 1.0))(x_a, t, x_b, t, cond=cond)
    assert torch.allclose(guided[0][0], x_a[0] + 2.0 * cond[0])  # inside the interval: guided
    assert torch.allclose(guided[0][1], x_a[1] + cond[1])  # outside: conditional
    calls = []
    CFGDenoiser(_fn(calls), 5.0, null_cond=null, interval=(2.0, 3.0))(x_a, torch.rand(2), cond=cond)
    assert calls == [2]  # nobody inside the interval: no unconditional branch


def _joint_fn(calls):
    """x0_a depends on x_b and t_b, x0_b on x_a and t_a, so dropping a stream changes the other."""

    def joint_fn(x_a, t_a, x_b, t_b):
        calls.append(x_a.shape[0])
        x0_a = 0.5 * x_a + x_b.mean(dim=(1, 2), keepdim=True) * (1 - t_b)[:, None, None]
        x0_b = 0.25 * x_b - x_a.mean(dim=(1, 2), keepdim=True) * (1 - t_a)[:, None, None]
        return x0_a, x0_b

    return joint_fn


def test_stream_drop_guidance_scale_one_is_the_plain_call():
    calls = []
    x_a, x_b, t = torch.randn(3, 4, 2), torch.randn(3, 5, 1), torch.full((3,), 0.4)
    plain = _joint_fn([])(x_a, t, x_b, t)
    out = StreamDropGuidance(_joint_fn(calls))(x_a, t, x_b, t)
    assert calls == [3]
    assert all(torch.equal(o, p) for o, p in zip(out, plain))


def test_stream_drop_guidance_against_the_dropped_stream():
    calls = []
    x_a, x_b, t = torch.randn(3, 4, 2), torch.randn(3, 5, 1), torch.full((3,), 0.4)
    fn = _joint_fn([])
    guided = StreamDropGuidance(_joint_fn(calls), scale_a=3.0, scale_b=2.0, generator=torch.Generator().manual_seed(0))
    out_a, out_b = guided(x_a, t, x_b, t)
    assert calls == [9]  # one call on 3·B rows: conditional, b dropped, a dropped
    cond_a, cond_b = fn(x_a, t, x_b, t)
    # Dropped streams sit at t = 1, where this joint_fn ignores them: the unconditional branches are exact.
    one = torch.ones(3)
    uncond_a, _ = fn(x_a, t, torch.zeros_like(x_b), one)
    _, uncond_b = fn(torch.zeros_like(x_a), one, x_b, t)
    torch.testing.assert_close(out_a, cfg(cond_a, uncond_a, 3.0))
    torch.testing.assert_close(out_b, cfg(cond_b, uncond_b, 2.0))
    assert not torch.allclose(out_a, cond_a)


@pytest.mark.parametrize("scales", [dict(scale_a=float("nan")), dict(scale_b=float("inf"))])
def test_stream_drop_guidance_rejects_non_finite_scales(scales):
    with pytest.raises(ValueError, match="must be finite"):
        StreamDropGuidance(lambda *a: a[::2], **scales)


def test_cfg_denoiser_rejects_non_finite_scales():
    with pytest.raises(ValueError, match="must be finite"):
        CFGDenoiser(_fn([]), (2.0, float("nan")), null_cond=torch.zeros(1))
