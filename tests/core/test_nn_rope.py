"""RoPE-ND and GeoRoPE: relative property, identity at 0, both layouts, longitude periodicity."""

from __future__ import annotations

import math

import pytest
import torch

from dualsci.nn import GeoRoPE, RopeND, apply_rope, cat_tables


def _logits(q, k, rope, pos_q, pos_k):
    """Rotated dot products ``(B, H, L_q, L_k)``."""
    return apply_rope(q, rope(pos_q)) @ apply_rope(k, rope(pos_k)).transpose(-1, -2)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_relative_property(layout):
    rope = RopeND((4, 6, 6), theta=100.0, layout=layout)
    q, k = torch.randn(2, 3, 5, 16), torch.randn(2, 3, 7, 16)
    pos_q, pos_k = torch.randn(2, 5, 3) * 4, torch.randn(2, 7, 3) * 4
    shift = torch.tensor([1.7, -3.2, 0.45])
    ref = _logits(q, k, rope, pos_q, pos_k)
    torch.testing.assert_close(_logits(q, k, rope, pos_q + shift, pos_k + shift), ref, atol=1e-5, rtol=1e-5)
    # <R(p)q, R(p')k> = <q, R(p' - p)k> for one query/key pair.
    direct = (q[:, :, :1] * apply_rope(k[:, :, :1], rope(pos_k[:, :1] - pos_q[:, :1]))).sum(-1)
    torch.testing.assert_close(direct, ref[:, :, :1, 0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_identity_at_zero(layout):
    rope = RopeND((8, 8), layout=layout)
    x = torch.randn(2, 2, 4, 16)
    assert torch.equal(apply_rope(x, rope(torch.zeros(4, 2))), x)


def test_pair_layouts():
    """Interleaved rotates channels (2k, 2k+1); half rotates (k, k + D_a/2) inside each axis slice."""
    angle = 0.3
    pos = torch.tensor([[angle, 2 * angle]])  # one token, two axes
    freqs = [torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])]  # only pair 0 of each axis turns
    e0 = torch.zeros(1, 1, 1, 8)
    e0[..., 0] = 1.0
    e4 = torch.zeros(1, 1, 1, 8)
    e4[..., 4] = 1.0  # first channel of axis 1
    c, s = math.cos(angle), math.sin(angle)
    c2, s2 = math.cos(2 * angle), math.sin(2 * angle)
    inter = RopeND((4, 4), layout="interleaved", freqs=freqs)
    out = apply_rope(e0, inter(pos)).flatten()
    torch.testing.assert_close(out, torch.tensor([c, s, 0, 0, 0, 0, 0, 0]))
    out = apply_rope(e4, inter(pos)).flatten()
    torch.testing.assert_close(out, torch.tensor([0, 0, 0, 0, c2, s2, 0, 0]))
    half = RopeND((4, 4), layout="half", freqs=freqs)
    out = apply_rope(e0, half(pos)).flatten()
    torch.testing.assert_close(out, torch.tensor([c, 0, s, 0, 0, 0, 0, 0]))
    out = apply_rope(e4, half(pos)).flatten()
    torch.testing.assert_close(out, torch.tensor([0, 0, 0, 0, c2, 0, s2, 0]))


def test_table_shapes_and_dtype():
    rope = RopeND((4, 4))
    table = rope(torch.randn(3, 5, 2, dtype=torch.float64))
    assert table.cos.shape == (3, 1, 5, 4) and table.cos.dtype == torch.float32
    assert rope(torch.randn(5, 2)).sin.shape == (1, 1, 5, 4)
    x = torch.randn(3, 2, 5, 8).bfloat16()
    assert apply_rope(x, table).dtype == torch.bfloat16
    joint = cat_tables(rope(torch.randn(5, 2)), table)
    assert joint.cos.shape == (3, 1, 10, 4)


def test_equal_coordinates_give_equal_rotation():
    """Two streams on the same grid (image/mask) get identical rotations: zero relative angle."""
    rope = RopeND((4, 4), theta=50.0)
    pos = torch.randn(6, 2) * 10
    t_a, t_b = rope(pos), rope(pos.clone())
    assert torch.equal(t_a.cos, t_b.cos) and torch.equal(t_a.sin, t_b.sin)
    q = torch.randn(1, 1, 6, 8)
    joint = cat_tables(t_a, t_b)
    rotated = apply_rope(torch.cat([q, q], dim=2), joint)
    assert torch.equal(rotated[:, :, :6], rotated[:, :, 6:])


def test_bad_arguments():
    with pytest.raises(ValueError, match="axes_dim"):
        RopeND((3, 4))
    with pytest.raises(ValueError, match="layout"):
        RopeND((4,), layout="rotate")
    with pytest.raises(ValueError, match="pos"):
        RopeND((4, 4))(torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="freqs"):
        RopeND((4, 4), freqs=[None, torch.ones(3)])
    with pytest.raises(ValueError, match="x must be"):
        apply_rope(torch.zeros(2, 5, 8), RopeND((8,))(torch.zeros(5, 1)))


def _geo_grid(n_lon: int, n_lat: int, lead: float = 2.0):
    lat = torch.linspace(-1.2, 1.2, n_lat)
    lon = torch.arange(n_lon) * (2 * math.pi / n_lon)
    la, lo = torch.meshgrid(lat, lon, indexing="ij")
    return torch.stack([torch.full_like(la, lead), la, lo], dim=-1).reshape(-1, 3)  # (n_lat*n_lon, 3)


def test_georope_longitude_frequencies_are_integers():
    rope = GeoRoPE((4, 4, 8))
    lon = rope.inv_freq[rope.axis_index == 2]
    assert torch.equal(lon, torch.tensor([1.0, 2.0, 3.0, 4.0]))


def test_georope_periodic_in_longitude():
    rope = GeoRoPE((4, 4, 8), theta=256.0)
    pos = _geo_grid(8, 3).double()  # fp64 so the shifted coordinates themselves are not rounded
    q, k = torch.randn(1, 2, len(pos), 16), torch.randn(1, 2, len(pos), 16)
    ref = _logits(q, k, rope, pos, pos)
    turned = pos + torch.tensor([0.0, 0.0, 2 * math.pi])
    torch.testing.assert_close(_logits(q, k, rope, turned, turned), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_logits(q, k, rope, pos, turned), ref, atol=1e-5, rtol=1e-5)


def test_georope_whole_grid_shift_of_a_global_field():
    """Rolling a global field by one column (with wrap-around) rolls the logit matrix the same way."""
    n_lat, n_lon = 2, 8
    pos = _geo_grid(n_lon, n_lat)
    q, k = torch.randn(1, 2, n_lat, n_lon, 16), torch.randn(1, 2, n_lat, n_lon, 16)

    def logits(rope, q, k):
        return _logits(q.flatten(2, 3), k.flatten(2, 3), rope, pos, pos).reshape(1, 2, n_lat, n_lon, n_lat, n_lon)

    geo = GeoRoPE((4, 4, 8))
    rolled = logits(geo, q.roll(1, dims=3), k.roll(1, dims=3))
    torch.testing.assert_close(rolled, logits(geo, q, k).roll((1, 1), dims=(3, 5)), atol=1e-5, rtol=1e-5)
    # Control: geometric (non-integer) longitude frequencies break the periodicity.
    plain = RopeND((4, 4, 8), theta=256.0)
    rolled = logits(plain, q.roll(1, dims=3), k.roll(1, dims=3))
    assert not torch.allclose(rolled, logits(plain, q, k).roll((1, 1), dims=(3, 5)), atol=1e-3)
