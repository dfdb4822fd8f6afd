"""Classifier-free guidance: exact at scale 1, batched branches, per-stream scales, interval."""

from __future__ import annotations

import torch

from dualsci.diffusion import CFGDenoiser, cfg


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
