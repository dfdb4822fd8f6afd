"""Dual-stream, single-stream and tail blocks: identity at init, conditioning shapes, masks, counts."""

from __future__ import annotations

import pytest
import torch

from dualsci.nn import DualStreamBlock, RopeND, SingleStreamBlock, StreamBlock

B, D, H = 2, 16, 2


def _randomize(module):
    """Give every parameter (the zero-initialised modulation included) a non-trivial value."""
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return module


def _streams(len_a=5, len_b=4):
    x_a, x_b = torch.randn(B, len_a, D), torch.randn(B, len_b, D)
    m_a = torch.ones(B, len_a, dtype=torch.bool)
    m_a[0, 3:] = False
    m_b = torch.ones(B, len_b, dtype=torch.bool)
    m_b[1, 2:] = False
    return x_a, x_b, m_a, m_b


@pytest.mark.parametrize("mode", ["joint", "cross", "self"])
def test_dual_block_is_identity_at_init(mode):
    block = DualStreamBlock(D, H, attn_mode=mode)
    x_a, x_b, m_a, m_b = _streams()
    out_a, out_b = block(x_a, x_b, torch.randn(B, D), torch.randn(B, 4, D), mask_a=m_a, mask_b=m_b)
    assert torch.equal(out_a, x_a) and torch.equal(out_b, x_b)


def test_single_and_tail_blocks_are_identity_at_init():
    x = torch.randn(B, 6, D)
    assert torch.equal(SingleStreamBlock(D, H)(x, torch.randn(B, D)), x)
    assert torch.equal(StreamBlock(D, H)(x, torch.randn(B, 6, D)), x)


@pytest.mark.parametrize("mode,order", [("joint", "parallel"), ("cross", "sequential"), ("self", "parallel")])
def test_per_token_condition_broadcasts_like_per_sample(mode, order):
    block = _randomize(DualStreamBlock(D, H, attn_mode=mode, cross_order=order))
    x_a, x_b, m_a, m_b = _streams(4, 4)
    c_a, c_b = torch.randn(B, D), torch.randn(B, D)
    ref = block(x_a, x_b, c_a, c_b, mask_a=m_a, mask_b=m_b)
    out = block(x_a, x_b, c_a[:, None].expand(B, 4, D), c_b[:, None].expand(B, 4, D), mask_a=m_a, mask_b=m_b)
    for o, r in zip(out, ref):
        torch.testing.assert_close(o, r)
    # A genuinely per-token condition is not collapsed to one vector per sample.
    c_tok = torch.randn(B, 4, D)
    assert not torch.allclose(block(x_a, x_b, c_tok, c_b)[0], block(x_a, x_b, c_a, c_b)[0])


def test_single_block_segment_conditions_equal_per_token():
    block = _randomize(SingleStreamBlock(D, H))
    x = torch.randn(B, 7, D)
    c_a, c_b = torch.randn(B, D), torch.randn(B, 3, D)
    per_token = torch.cat([c_a[:, None].expand(B, 4, D), c_b], dim=1)
    torch.testing.assert_close(block(x, (c_a, c_b), lengths=(4, 3)), block(x, per_token))
    with pytest.raises(ValueError, match="lengths"):
        block(x, (c_a, c_b), lengths=(4, 4))


@pytest.mark.parametrize("mode", ["joint", "cross", "self"])
def test_dual_block_mask_invariance(mode):
    block = _randomize(DualStreamBlock(D, H, attn_mode=mode))
    rope = RopeND((4, 4))
    x_a, x_b, m_a, m_b = _streams()
    r_a, r_b = rope(torch.randn(B, 5, 2)), rope(torch.randn(4, 2))
    c_a, c_b = torch.randn(B, 5, D), torch.randn(B, D)
    out = block(x_a, x_b, c_a, c_b, r_a, r_b, m_a, m_b)
    x_a2 = torch.where(m_a[..., None], x_a, 50 * torch.randn_like(x_a))
    x_b2 = torch.where(m_b[..., None], x_b, 50 * torch.randn_like(x_b))
    out2 = block(x_a2, x_b2, c_a, c_b, r_a, r_b, m_a, m_b)
    for o, o2, m in zip(out, out2, (m_a, m_b)):
        torch.testing.assert_close(o[m], o2[m], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block", [SingleStreamBlock(D, H), StreamBlock(D, H)], ids=["single", "tail"])
def test_one_stream_blocks_mask_invariance(block):
    _randomize(block)
    x = torch.randn(B, 6, D)
    m = torch.ones(B, 6, dtype=torch.bool)
    m[0, 4:] = False
    c = torch.randn(B, D)
    x2 = torch.where(m[..., None], x, 50 * torch.randn_like(x))
    torch.testing.assert_close(block(x, c, mask=m)[m], block(x2, c, mask=m)[m], atol=1e-5, rtol=1e-5)


def test_bf16_autocast_keeps_fp32_residual():
    block = _randomize(DualStreamBlock(D, H))
    x_a, x_b, m_a, m_b = _streams()
    c = torch.randn(B, D)
    ref = block(x_a, x_b, c, c, mask_a=m_a, mask_b=m_b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x_a, x_b, c, c, mask_a=m_a, mask_b=m_b)
    for o, r in zip(out, ref):
        assert o.dtype == torch.float32 and torch.isfinite(o).all()
        assert (o - r).abs().max() < 0.05 * r.abs().max()


def test_dual_block_parameter_count_is_36_d2_plus_biases():
    d, heads = 64, 4
    block = DualStreamBlock(d, heads)
    per_stream = (6 * d * d + 6 * d) + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    exact = 2 * per_stream + 2 * 2 * (d // heads)  # + QK-norm scales
    assert sum(p.numel() for p in block.parameters()) == exact
    single = SingleStreamBlock(d, heads)
    assert sum(p.numel() for p in single.parameters()) == 15 * d * d + (3 + 7 + 1) * d + 2 * (d // heads)


def test_shape_errors_name_the_argument():
    block = DualStreamBlock(D, H)
    x_a, x_b, m_a, _ = _streams()
    c = torch.randn(B, D)
    with pytest.raises(ValueError, match=r"x_a must be \(B, L, 16\)"):
        block(x_a[0], x_b, c, c)
    with pytest.raises(ValueError, match=r"x_b must be \(2, L, 16\)"):
        block(x_a, x_b[:1], c, c)
    with pytest.raises(ValueError, match="c_b must be"):
        block(x_a, x_b, c, torch.randn(B, 5, D))
    with pytest.raises(ValueError, match="mask_a must be a bool"):
        block(x_a, x_b, c, c, mask_a=m_a.float())
    with pytest.raises(ValueError, match="attn_mode must be one of"):
        DualStreamBlock(D, H, attn_mode="joint+self")


@pytest.mark.slow  # compiles C++ kernels: 20-25 s for the two tests on a cold inductor cache
def test_fullgraph_compile_of_one_block_without_recompiles():
    block = _randomize(DualStreamBlock(D, H))
    rope = RopeND((4, 4))
    compiled = torch.compile(block, fullgraph=True, dynamic=False)
    x_a, x_b, m_a, m_b = _streams()
    c_a, c_b = torch.randn(B, D), torch.randn(B, D)
    r_a, r_b = rope(torch.randn(B, 5, 2)), rope(torch.randn(B, 4, 2))
    ref = block(x_a, x_b, c_a, c_b, r_a, r_b, m_a, m_b)
    with torch._dynamo.config.patch(error_on_recompile=True):
        out = compiled(x_a, x_b, c_a, c_b, r_a, r_b, m_a, m_b)
        # New values (masks included) with the same shapes must reuse the graph.
        m_a2 = torch.ones_like(m_a)
        again = (torch.randn_like(x_a), torch.randn_like(x_b), torch.randn_like(c_a), torch.randn_like(c_b))
        compiled(*again, r_a, r_b, m_a2, m_b)
    for o, r in zip(out, ref):
        torch.testing.assert_close(o, r, atol=1e-4, rtol=1e-4)
