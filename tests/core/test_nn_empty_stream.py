"""A stream with zero tokens (L_a = 0 or L_b = 0) runs through blocks and the transformer.

The reference is the same model with that stream present but fully masked (``mask_s`` all False):
masked keys never reach the other stream, so the real stream's outputs must be equal, and the empty
stream's outputs are ``(B, 0, out_dim)``.
"""

from __future__ import annotations

import pytest
import torch

from dualsci.nn import DualStreamBlock, DualStreamConfig, DualStreamTransformer, SingleStreamBlock

B = 2


def _randomize(model):
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return model


def _model(mode: str, depth_single: int, depth_tail: int, shared: bool = False) -> DualStreamTransformer:
    cfg = DualStreamConfig(
        in_dim_a=6, in_dim_b=5, dim=32, num_heads=2, depth_dual=2, depth_single=depth_single,
        depth_tail=depth_tail, attn_mode=mode, rope_axes_dim=(8, 8), cond_dim=3, shared_condition=shared,
    )
    return _randomize(DualStreamTransformer(cfg)).eval()


def _run(model, len_a, len_b, mask_a=None, mask_b=None, per_token=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Draw the full-size inputs once, then cut, so both runs see the same real tokens.
    x_a, x_b = torch.randn(B, 5, 6, generator=g), torch.randn(B, 4, 5, generator=g)
    pos_a, pos_b = torch.randn(B, 5, 2, generator=g), torch.randn(4, 2, generator=g)
    t_a = torch.rand(B, 5, generator=g) if per_token else torch.rand(B, generator=g)
    t_b = torch.rand(B, 4, generator=g) if per_token else torch.rand(B, generator=g)
    cond = torch.randn(B, 3, generator=g)
    if per_token:
        t_a, t_b = t_a[:, :len_a], t_b[:, :len_b]
    return model(
        x_a[:, :len_a], x_b[:, :len_b], t_a, t_b, cond, pos_a[:, :len_a], pos_b[:len_b],
        mask_a=mask_a, mask_b=mask_b,
    )


@pytest.mark.parametrize("mode", ["joint", "self", "cross"])
@pytest.mark.parametrize("depth_single,depth_tail", [(0, 0), (1, 1)])
@pytest.mark.parametrize("per_token", [False, True])
def test_empty_b_equals_fully_masked_b(mode, depth_single, depth_tail, per_token):
    model = _model(mode, depth_single, depth_tail)
    with torch.no_grad():
        y_a, y_b = _run(model, 5, 0, per_token=per_token)
        ref_a, ref_b = _run(model, 5, 4, mask_b=torch.zeros(B, 4, dtype=torch.bool), per_token=per_token)
    assert y_b.shape == (B, 0, 5)
    assert y_a.shape == (B, 5, 6) and torch.isfinite(y_a).all()
    assert y_a.abs().max() > 0  # a real output, not a zeroed one
    torch.testing.assert_close(y_a, ref_a, atol=1e-5, rtol=1e-5)
    assert (ref_b == 0).all()


@pytest.mark.parametrize("mode", ["joint", "self", "cross"])
def test_empty_a_equals_fully_masked_a(mode):
    model = _model(mode, depth_single=1, depth_tail=1)
    mask_b = torch.tensor([[True, True, True, False], [True, True, True, True]])
    with torch.no_grad():
        y_a, y_b = _run(model, 0, 4, mask_b=mask_b)
        ref_a, ref_b = _run(model, 5, 4, mask_a=torch.zeros(B, 5, dtype=torch.bool), mask_b=mask_b)
    assert y_a.shape == (B, 0, 6)
    torch.testing.assert_close(y_b, ref_b, atol=1e-5, rtol=1e-5)
    assert (y_b[0, 3] == 0).all()


def test_joint_with_empty_stream_is_self_attention_of_the_other():
    """Joint attention over a‖∅ is a's self-attention: the same as a pure ``self`` block."""
    joint = _randomize(DualStreamBlock(32, 2, attn_mode="joint"))
    selfb = DualStreamBlock(32, 2, attn_mode="self")
    selfb.load_state_dict(joint.state_dict())
    x_a, c = torch.randn(B, 5, 32), torch.randn(B, 32)
    x_b = torch.zeros(B, 0, 32)
    with torch.no_grad():
        out_j = joint(x_a, x_b, c, c)
        out_s = selfb(x_a, x_b, c, c)
    torch.testing.assert_close(out_j[0], out_s[0])
    assert out_j[1].shape == (B, 0, 32)


def test_cross_with_empty_other_stream_gets_no_attention_update():
    """In a cross block a reads only b: with no b tokens a's attention residual is exactly 0."""
    block = _randomize(DualStreamBlock(32, 2, attn_mode="cross"))
    x_a, c = torch.randn(B, 5, 32), torch.randn(B, 32)
    with torch.no_grad():
        out_a, _ = block(x_a, torch.zeros(B, 0, 32), c, c)
        ref_a, _ = block(x_a, torch.randn(B, 3, 32), c, c, mask_b=torch.zeros(B, 3, dtype=torch.bool))
    torch.testing.assert_close(out_a, ref_a)


def test_sequential_cross_with_one_empty_stream_is_rejected():
    block = DualStreamBlock(32, 2, attn_mode="cross", cross_order="sequential")
    c = torch.randn(B, 32)
    with pytest.raises(ValueError, match="L_a == L_b"):
        block(torch.randn(B, 5, 32), torch.zeros(B, 0, 32), c, c)


def test_single_block_on_empty_sequence():
    block = _randomize(SingleStreamBlock(32, 2))
    out = block(torch.zeros(B, 0, 32), torch.randn(B, 32))
    assert out.shape == (B, 0, 32)


def test_empty_stream_backward_and_shared_condition():
    model = _model("joint", depth_single=1, depth_tail=1, shared=True).train()
    x_a = torch.randn(B, 5, 6, requires_grad=True)
    y_a, y_b = model(x_a, torch.zeros(B, 0, 5), torch.rand(B), None, torch.randn(B, 3))
    assert y_b.shape == (B, 0, 5)
    (y_a.square().mean() + y_b.sum()).backward()
    assert torch.isfinite(x_a.grad).all() and x_a.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
