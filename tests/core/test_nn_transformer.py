"""DualStreamTransformer and its config: validation, zero output at init, masks, counts, FLOPs."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dualsci.nn import DualStreamConfig, DualStreamTransformer

B = 2


def _cfg(**kw):
    base = dict(in_dim_a=6, in_dim_b=5, dim=32, num_heads=2, depth_dual=2, rope_axes_dim=(8, 8), cond_dim=3)
    base.update(kw)
    return DualStreamConfig(**base)


def _randomize(model):
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return model


def _inputs(len_a=5, len_b=4, per_token=False):
    m_a = torch.ones(B, len_a, dtype=torch.bool)
    m_a[0, 3:] = False
    m_b = torch.ones(B, len_b, dtype=torch.bool)
    m_b[1, 1:] = False
    return dict(
        x_a=torch.randn(B, len_a, 6),
        x_b=torch.randn(B, len_b, 5),
        t_a=torch.rand(B, len_a) if per_token else torch.rand(B),
        t_b=torch.rand(B),
        cond=torch.randn(B, 3),
        pos_a=torch.randn(B, len_a, 2),
        pos_b=torch.randn(len_b, 2),
        mask_a=m_a,
        mask_b=m_b,
    )


@pytest.mark.parametrize(
    "kw",
    [
        {},
        dict(depth_single=1, depth_tail=1, attn_mode=["cross", "self"], cross_order="sequential"),
        dict(shared_condition=True, depth_single=1, rope_kind="geo", rope_axes_dim=(4, 4, 8)),
    ],
)
def test_untrained_model_outputs_exactly_zero(kw):
    model = DualStreamTransformer(_cfg(**kw))
    inputs = _inputs(4, 4)
    if kw.get("rope_kind") == "geo":
        inputs["pos_a"], inputs["pos_b"] = torch.randn(B, 4, 3), torch.randn(4, 3)
    y_a, y_b = model(**inputs)
    assert y_a.shape == (B, 4, 6) and y_b.shape == (B, 4, 5)
    assert torch.equal(y_a, torch.zeros_like(y_a)) and torch.equal(y_b, torch.zeros_like(y_b))


def test_conditioning_stream_without_head():
    model = DualStreamTransformer(_cfg(out_dim_b=0, depth_tail=1))
    assert model.head_b is None and len(model.tail_b) == 0
    y_a, y_b = model(**_inputs())
    assert y_b is None and y_a.shape == (B, 5, 6)


@pytest.mark.parametrize("per_token", [False, True])
def test_end_to_end_mask_invariance_and_zero_padded_outputs(per_token):
    model = _randomize(DualStreamTransformer(_cfg(depth_single=1, depth_tail=1)))
    inputs = _inputs(per_token=per_token)
    y_a, y_b = model(**inputs)
    changed = dict(inputs)
    changed["x_a"] = torch.where(inputs["mask_a"][..., None], inputs["x_a"], 30 * torch.randn_like(inputs["x_a"]))
    changed["x_b"] = torch.where(inputs["mask_b"][..., None], inputs["x_b"], 30 * torch.randn_like(inputs["x_b"]))
    y_a2, y_b2 = model(**changed)
    for y, y2, m in ((y_a, y_a2, inputs["mask_a"]), (y_b, y_b2, inputs["mask_b"])):
        torch.testing.assert_close(y[m], y2[m], atol=1e-5, rtol=1e-5)
        assert (y[~m] == 0).all() and (y[m] != 0).any()


def test_per_stream_times_and_modes():
    joint = _randomize(DualStreamTransformer(_cfg()))
    inputs = _inputs()
    y_a, _ = joint(**inputs)
    y_a_tb, _ = joint(**{**inputs, "t_b": inputs["t_b"] + 0.3})
    assert not torch.allclose(y_a, y_a_tb)  # joint attention: a sees b, whose modulation depends on t_b
    selfm = _randomize(DualStreamTransformer(_cfg(attn_mode="self")))
    y_a, _ = selfm(**inputs)
    y_a2, _ = selfm(**{**inputs, "x_b": torch.randn_like(inputs["x_b"]), "t_b": inputs["t_b"] + 0.3})
    torch.testing.assert_close(y_a, y_a2)
    shared = _randomize(DualStreamTransformer(_cfg(shared_condition=True)))
    torch.testing.assert_close(shared(**inputs)[1], shared(**{**inputs, "t_b": None})[1])


def test_bf16_autocast_runs_and_backward_is_finite():
    model = _randomize(DualStreamTransformer(_cfg(depth_single=1, depth_tail=1)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_a, y_b = model(**_inputs(per_token=True))
    loss = y_a.float().pow(2).mean() + y_b.float().pow(2).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_zero_init_heads_still_get_gradients():
    model = DualStreamTransformer(_cfg())
    y_a, y_b = model(**_inputs())
    (y_a.sum() + y_b.sum()).backward()
    assert model.head_a.linear.bias.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(attn_mode="full"), r"attn_mode must be one of \('joint', 'cross', 'self'\)"),
        (dict(attn_mode=["joint"]), "one entry per dual block"),
        (dict(cross_order="random"), "cross_order must be one of"),
        (dict(rope_axes_dim=(8, 6)), "rope_axes_dim must be positive even ints summing to dim // num_heads = 16"),
        (dict(rope_kind="xy"), "rope_kind must be one of"),
        (dict(rope_kind="geo"), "rope_kind='geo' needs"),
        (dict(dim=30, num_heads=4), r"dim \(30\) must be divisible by num_heads"),
        (dict(depth_dual=-1), "depth_dual must be an int >= 0"),
        (dict(out_dim_a=-2), "out_dim_a must be None or an int >= 0"),
        (dict(rope_theta=-1.0), "rope_theta must be > 0"),
    ],
)
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**kw)


def test_config_defaults_and_yaml_lists():
    cfg = _cfg(rope_axes_dim=[8, 8], attn_mode=["joint", "cross"])
    assert cfg.out_dim_a == 6 and cfg.out_dim_b == 5
    assert cfg.rope_axes_dim == (8, 8) and cfg.attn_modes == ("joint", "cross")


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(x_a=torch.randn(B, 5, 7)), r"x_a must be \(B, L, 6\)"),
        (dict(x_a=torch.randn(5, 6)), r"x_a must be \(B, L, 6\)"),
        (dict(x_b=torch.randn(3, 4, 5)), r"x_b must be \(2, L, 5\)"),
        (dict(t_a=torch.rand(B, 3)), r"t_a must be \(2,\) or \(2, 5\)"),
        (dict(t_b=None), "t_b must be"),
        (dict(cond=None), r"cond must be \(2, 3\)"),
        (dict(pos_a=torch.randn(B, 5, 3)), r"pos_a must be \(B, 5, 2\)"),
        (dict(mask_b=torch.ones(B, 4)), "mask_b must be a bool tensor"),
        (dict(x_a=torch.ones(B, 5, 6, dtype=torch.long)), "x_a must be a floating-point tensor"),
    ],
)
def test_forward_input_validation(change, match):
    model = DualStreamTransformer(_cfg())
    with pytest.raises(ValueError, match=match):
        model(**{**_inputs(), **change})


def test_pos_without_rope_is_an_error():
    model = DualStreamTransformer(_cfg(rope_axes_dim=None))
    with pytest.raises(ValueError, match="rope_axes_dim is None"):
        model(**_inputs())


def test_parameter_count_of_the_d256_stack():
    d, depth = 256, 4
    model = DualStreamTransformer(DualStreamConfig(in_dim_a=16, in_dim_b=16, dim=d, num_heads=4, depth_dual=depth))
    blocks = sum(p.numel() for p in model.dual_blocks.parameters())
    per_stream = 18 * d * d + (6 + 3 + 1 + 4 + 1) * d + 2 * (d // 4)
    assert blocks == depth * 2 * per_stream
    assert abs(blocks - depth * 36 * d * d) / (depth * 36 * d * d) < 0.005
    time_mlp = 256 * d + d + d * d + d
    embed = 2 * (16 * d + d)
    heads = 2 * (2 * d * d + 2 * d + 16 * d + 16)
    assert model.num_parameters() == blocks + 2 * time_mlp + embed + heads


@pytest.mark.parametrize(
    "kw,attn_per_sample",
    [
        (dict(), 2 * 4 * 8 * 8 * 32),  # 2 joint blocks over 8 tokens: 4·L²·D each
        (dict(attn_mode="self"), 2 * 4 * (16 + 16) * 32),
        (dict(attn_mode="cross", cross_order="sequential"), 2 * 4 * 2 * 16 * 32),
        # 2 cross blocks (a->b, b->a), 1 single block over 8 tokens, 1 tail block per stream
        (
            dict(attn_mode="cross", depth_single=1, depth_tail=1, shared_condition=True),
            2 * 4 * 2 * 16 * 32 + 4 * 64 * 32 + 2 * 4 * 16 * 32,
        ),
    ],
)
def test_flops_formula_matches_the_counter_on_linears(kw, attn_per_sample):
    model = DualStreamTransformer(_cfg(**kw))
    linear_only = model.flops_per_forward(B, 4, 4, include_attention=False)
    full = model.flops_per_forward(B, 4, 4)
    assert full - linear_only == B * attn_per_sample
    # The math backend spells attention as two batched matmuls, which the counter sees: exact total.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(**_inputs(4, 4))
    assert counter.get_total_flops() == full
    # The CPU flash kernel is invisible to the counter in torch 2.13 (guide core.md §1.6).
    with FlopCounterMode(display=False) as counter:
        model(**_inputs(4, 4))
    assert counter.get_total_flops() in (linear_only, full)


def test_per_stream_conditions_route_to_their_own_stream():
    torch.manual_seed(0)
    # "self" attention: no mixing, so each stream's output depends on its own condition only.
    model = _randomize(DualStreamTransformer(_cfg(attn_mode="self"))).eval()
    inputs = _inputs()
    cond_a, cond_b = torch.randn(B, 3), torch.randn(B, 3)
    with torch.no_grad():
        y_a, y_b = model(**{**inputs, "cond": None, "cond_a": cond_a, "cond_b": cond_b})
        ref_a, _ = model(**{**inputs, "cond": cond_a})
        _, ref_b = model(**{**inputs, "cond": cond_b})
        only_a, same_b = model(**{**inputs, "cond_a": cond_a})  # b falls back to the shared cond
        _, shared_b = model(**inputs)
    torch.testing.assert_close(y_a, ref_a)
    torch.testing.assert_close(y_b, ref_b)
    torch.testing.assert_close(only_a, ref_a)
    torch.testing.assert_close(same_b, shared_b)
    assert not torch.allclose(y_a, model(**inputs)[0])
    with pytest.raises(ValueError, match="or both cond_a and cond_b"):
        model(**{**inputs, "cond": None, "cond_a": cond_a})
    shared = DualStreamTransformer(_cfg(shared_condition=True))
    with pytest.raises(ValueError, match="shared_condition"):
        shared(**{**inputs, "cond_a": cond_a})


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(attn_mode="cross", depth_single=1, depth_tail=1)],
)
@pytest.mark.parametrize(
    "call",
    [
        dict(per_token_a=True),
        dict(per_token_a=True, per_token_b=True),
        dict(cond_ab=True),
        dict(per_token_b=True, cond_ab=True),
    ],
)
def test_flops_with_per_token_times_and_per_stream_conditions_match_the_counter(kw, call):
    """Per-token times run the time MLP and every modulation per token; cond_a/cond_b run the cond MLP twice."""
    model = DualStreamTransformer(_cfg(**kw))
    len_a, len_b = 5, 3
    inputs = _inputs(len_a, len_b, per_token=call.get("per_token_a", False))
    if call.get("per_token_b"):
        inputs["t_b"] = torch.rand(B, len_b)
    if call.get("cond_ab"):
        inputs.update(cond=None, cond_a=torch.randn(B, 3), cond_b=torch.randn(B, 3))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(**inputs)
    counted = model.flops_of_call(**inputs)
    assert counter.get_total_flops() == counted
    per_sample_call = model.flops_per_forward(B, len_a, len_b)
    if call.get("per_token_a") or call.get("per_token_b") or call.get("cond_ab"):
        assert counted > per_sample_call
    assert counted == model.flops_per_forward(
        B, len_a, len_b, per_token_a=call.get("per_token_a", False), per_token_b=call.get("per_token_b", False),
        cond_calls=2 if call.get("cond_ab") else 1,
    )


def test_flops_shared_condition_and_bad_options():
    model = DualStreamTransformer(_cfg(shared_condition=True, depth_single=1, depth_tail=1))
    inputs = {**_inputs(4, 4), "t_b": None}
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(**inputs)
    assert counter.get_total_flops() == model.flops_of_call(**inputs) == model.flops_per_forward(B, 4, 4)
    with pytest.raises(ValueError, match="per_token_a needs shared_condition=False"):
        model.flops_per_forward(B, 4, 4, per_token_a=True)
    with pytest.raises(ValueError, match="cond_calls"):
        model.flops_per_forward(B, 4, 4, cond_calls=0)
    with pytest.raises(ValueError, match="cond_calls"):
        DualStreamTransformer(_cfg(cond_dim=0)).flops_per_forward(B, 4, 4, cond_calls=1)
