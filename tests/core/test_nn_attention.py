"""Two-stream attention: joint/cross/self against explicit softmax references, masks, SDPA dispatch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dualsci.nn import DualAttention, RopeND

B, H, D = 2, 2, 16
DH = D // H


def _ref_heads(x, linear, norm, table, rows=slice(None)):
    """Reference projection of one of q/k/v (rows of the fused weight): ``(B, H, L, d_h)``."""
    y = F.linear(x, linear.weight[rows], linear.bias[rows]).unflatten(-1, (H, DH)).transpose(1, 2)
    if norm is not None:
        y = y / torch.sqrt(y.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    if table is not None:  # interleaved pairs as complex numbers
        rot = torch.complex(table.cos, table.sin)
        y = torch.view_as_real(torch.view_as_complex(y.unflatten(-1, (-1, 2)).contiguous()) * rot).flatten(-2)
    return y


def _ref_attend(q, k, v, key_mask):
    """softmax(q kᵀ/√d) v with keys masked out explicitly; rows without any key give 0."""
    logits = q @ k.transpose(-1, -2) / math.sqrt(DH)
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    w = torch.nan_to_num(logits.softmax(-1))
    return (w @ v).transpose(1, 2).flatten(2)


def _qkv(attn, x, table):
    q = _ref_heads(x, attn.qkv, attn.q_norm, table, slice(0, D))
    k = _ref_heads(x, attn.qkv, attn.k_norm, table, slice(D, 2 * D))
    v = _ref_heads(x, attn.qkv, None, None, slice(2 * D, 3 * D))
    return q, k, v


def _zero_pad(y, mask):
    return y if mask is None else y * mask[:, :, None]


def reference(module, h_a, h_b, t_a, t_b, m_a, m_b):
    mode, order = module.attn_mode, module.cross_order
    qa, ka, va = _qkv(module.a, h_a, t_a)
    qb, kb, vb = _qkv(module.b, h_b, t_b)
    ones = lambda h: torch.ones(h.shape[:2], dtype=torch.bool)  # noqa: E731
    m_a_full = ones(h_a) if m_a is None else m_a
    m_b_full = ones(h_b) if m_b is None else m_b
    if mode == "joint":
        o = _ref_attend(torch.cat([qa, qb], 2), torch.cat([ka, kb], 2), torch.cat([va, vb], 2),
                        torch.cat([m_a_full, m_b_full], 1))
        o_a, o_b = o[:, : h_a.shape[1]], o[:, h_a.shape[1]:]
    elif mode == "self":
        o_a, o_b = _ref_attend(qa, ka, va, m_a), _ref_attend(qb, kb, vb, m_b)
    elif order == "parallel":
        o_a, o_b = _ref_attend(qa, kb, vb, m_b), _ref_attend(qb, ka, va, m_a)
    else:  # sequential: o_a = Attn(q_b, k_a, v_a); o_b = Attn(W_q^a o_a, k_b, v_b)
        o_a = _zero_pad(_ref_attend(qb, ka, va, m_a), m_b)
        q_t = _ref_heads(o_a, module.a.qkv, module.a.q_norm, t_b, slice(0, D))
        o_b = _ref_attend(q_t, kb, vb, m_b)
        m_a = m_a_full & m_b_full
    return _zero_pad(module.a.proj(o_a), m_a), _zero_pad(module.b.proj(o_b), m_b)


MODES = [("joint", "parallel"), ("self", "parallel"), ("cross", "parallel"), ("cross", "sequential")]


def _inputs(len_a=5, len_b=5, rope=True):
    h_a, h_b = torch.randn(B, len_a, D), torch.randn(B, len_b, D)
    m_a = torch.ones(B, len_a, dtype=torch.bool)
    m_a[0, 3:] = False
    m_b = torch.ones(B, len_b, dtype=torch.bool)
    m_b[1, 1:] = False
    tables = (None, None)
    if rope:
        r = RopeND((4, 4))
        tables = (r(torch.randn(B, len_a, 2) * 3), r(torch.randn(B, len_b, 2) * 3))
    return h_a, h_b, tables, m_a, m_b


def _module(mode, order, qk_norm=True):
    m = DualAttention(D, H, mode, order, qk_norm)
    for p in m.parameters():  # non-trivial QK-norm scales too
        torch.nn.init.normal_(p, std=0.5)
    return m


@pytest.mark.parametrize("mode,order", MODES)
@pytest.mark.parametrize("use_masks", [True, False])
def test_matches_explicit_reference(mode, order, use_masks):
    module = _module(mode, order)
    same_len = order == "sequential"
    h_a, h_b, (t_a, t_b), m_a, m_b = _inputs(5, 5 if same_len else 3)
    if not use_masks:
        m_a = m_b = None
    out = module(h_a, h_b, t_a, t_b, m_a, m_b)
    ref = reference(module, h_a, h_b, t_a, t_b, m_a, m_b)
    for got, want in zip(out, ref):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode,order", MODES)
def test_mask_invariance_and_zero_padded_rows(mode, order):
    module = _module(mode, order)
    h_a, h_b, (t_a, t_b), m_a, m_b = _inputs()
    out = module(h_a, h_b, t_a, t_b, m_a, m_b)
    h_a2 = torch.where(m_a[..., None], h_a, torch.randn_like(h_a) * 100)
    h_b2 = torch.where(m_b[..., None], h_b, torch.randn_like(h_b) * 100)
    out2 = module(h_a2, h_b2, t_a, t_b, m_a, m_b)
    for o, o2, m in zip(out, out2, (m_a, m_b)):
        assert torch.isfinite(o).all()
        torch.testing.assert_close(o[m], o2[m], atol=1e-5, rtol=1e-5)
        assert (o[~m] == 0).all()


@pytest.mark.parametrize("mode,order", MODES)
def test_sample_without_any_key_gives_zeros_not_nan(mode, order):
    module = _module(mode, order)
    h_a, h_b, _, _, _ = _inputs(rope=False)
    m_a = torch.ones(B, 5, dtype=torch.bool)
    m_a[0] = False  # sample 0 of stream a fully padded
    m_b = m_a.clone()
    out = module(h_a, h_b, None, None, m_a, m_b)
    for o in out:
        assert torch.isfinite(o).all()
        assert (o[0] == 0).all() and (o[1] != 0).any()


def test_cross_reads_only_the_other_stream_and_self_none():
    h_a, h_b, _, _, _ = _inputs(rope=False)
    h_b2 = h_b + torch.randn_like(h_b)
    cross, selfm = _module("cross", "parallel"), _module("self", "parallel")
    assert not torch.allclose(cross(h_a, h_b)[0], cross(h_a, h_b2)[0])
    torch.testing.assert_close(selfm(h_a, h_b)[0], selfm(h_a, h_b2)[0])


def test_bf16_autocast_matches_fp32():
    module = _module("joint", "parallel")
    h_a, h_b, (t_a, t_b), m_a, m_b = _inputs()
    ref = module(h_a, h_b, t_a, t_b, m_a, m_b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(h_a, h_b, t_a, t_b, m_a, m_b)
    for o, r in zip(out, ref):
        assert o.dtype == torch.bfloat16
        torch.testing.assert_close(o.float(), r, atol=0.1 * r.abs().max().item(), rtol=0.05)


def test_bad_options_and_lengths():
    with pytest.raises(ValueError, match="attn_mode must be one of .*joint"):
        DualAttention(D, H, "full")
    with pytest.raises(ValueError, match="cross_order must be one of .*sequential"):
        DualAttention(D, H, "cross", "both")
    with pytest.raises(ValueError, match="L_a == L_b"):
        DualAttention(D, H, "cross", "sequential")(torch.randn(1, 4, D), torch.randn(1, 3, D))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sdpa_dispatches_to_cpu_flash_kernel(dtype):
    module = _module("joint", "parallel")
    h_a, h_b, (t_a, t_b), m_a, m_b = _inputs()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            module(h_a, h_b, t_a, t_b, m_a, m_b)
    counts = {e.key: e.count for e in prof.key_averages()}
    assert counts.get("aten::_scaled_dot_product_flash_attention_for_cpu") == 1, sorted(counts)


@pytest.mark.parametrize("mode,order,calls", [("joint", "parallel", 1), ("self", "parallel", 2), ("cross", "sequential", 2)])
def test_number_of_sdpa_calls(mode, order, calls):
    """Joint attention is one kernel call over a‖b; self and cross need one per direction."""
    module = _module(mode, order)
    h_a, h_b, (t_a, t_b), m_a, m_b = _inputs()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        module(h_a, h_b, t_a, t_b, m_a, None)
    counts = {e.key: e.count for e in prof.key_averages()}
    assert counts.get("aten::_scaled_dot_product_flash_attention_for_cpu") == calls
