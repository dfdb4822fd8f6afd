"""Timestep and calendar embeddings, patchify round trips, grid coordinates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dualsci.nn import (
    CalendarEmbedding,
    TimestepEmbedding,
    calendar_features,
    grid_coords_2d,
    grid_coords_3d,
    patchify_2d,
    patchify_3d,
    unpatchify_2d,
    unpatchify_3d,
)


def test_timestep_embedding_shapes_and_per_token_broadcast():
    emb = TimestepEmbedding(32)
    t = torch.rand(3)
    assert emb(t).shape == (3, 32)
    per_token = emb(t[:, None].expand(3, 5))
    assert per_token.shape == (3, 5, 32)
    torch.testing.assert_close(per_token, emb(t)[:, None].expand(3, 5, 32))
    with pytest.raises(ValueError, match=r"t must be \(B,\) or \(B, L\)"):
        emb(torch.rand(2, 3, 4))


def test_timestep_features_formula():
    emb = TimestepEmbedding(8, freq_dim=8, scale=1000.0)
    t = torch.tensor([0.25])
    k = torch.arange(4, dtype=torch.float64)
    angle = 1000.0 * 0.25 * torch.exp(-math.log(1e4) * k / 4)
    want = torch.cat([angle.cos(), angle.sin()]).float()
    torch.testing.assert_close(emb.features(t)[0], want)
    assert torch.equal(TimestepEmbedding(8, 8, scale=1.0).features(t), TimestepEmbedding(8, 8).features(t / 1000))


def test_calendar_features_known_dates():
    times = np.array(["2021-01-01T00:00", "2020-07-02T00:00", "2021-05-05T18:00"], dtype="datetime64[m]")
    f = calendar_features(times, n_harmonics=2)
    assert f.shape == (3, 6) and f.dtype == torch.float32
    # New year midnight: fraction 0, hour 0.
    torch.testing.assert_close(f[0], torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    # 2020 is a leap year: 2 July 00:00 is 183 / 366 = one half of it.
    torch.testing.assert_close(f[1], torch.tensor([-1.0, 1.0, 0.0, 0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    # 18:00 is three quarters of a day.
    torch.testing.assert_close(f[2, 4:], torch.tensor([0.0, -1.0]), atol=1e-6, rtol=0)


def test_calendar_embedding_accepts_datetimes_or_features():
    emb = CalendarEmbedding(16, n_harmonics=3)
    times = np.array(["2019-03-05T06:00", "2019-11-30T18:00"], dtype="datetime64[h]")
    out = emb(times)
    assert out.shape == (2, 16)
    torch.testing.assert_close(out, emb(calendar_features(times, 3)))
    with pytest.raises(ValueError, match="time must be"):
        emb(torch.zeros(2, 5))


def test_patchify_2d_round_trip_and_layout():
    x = torch.randn(2, 3, 8, 12)
    tokens = patchify_2d(x, (2, 4))
    assert tokens.shape == (2, 4 * 3, 3 * 2 * 4)
    assert torch.equal(unpatchify_2d(tokens, (2, 4), (8, 12)), x)
    # Token 1 is the patch at grid (row 0, col 1); features ordered (C, ph, pw).
    assert torch.equal(tokens[0, 1], x[0, :, 0:2, 4:8].reshape(-1))
    assert torch.equal(unpatchify_2d(patchify_2d(x, 2), 2, (8, 12)), x)


def test_patchify_3d_round_trip_and_layout():
    x = torch.randn(2, 3, 4, 6, 8)
    tokens = patchify_3d(x, (2, 3, 4))
    assert tokens.shape == (2, 2 * 2 * 2, 3 * 2 * 3 * 4)
    assert torch.equal(unpatchify_3d(tokens, (2, 3, 4), (4, 6, 8)), x)
    assert torch.equal(tokens[1, 5], x[1, :, 2:4, 0:3, 4:8].reshape(-1))  # (t=1, row=0, col=1)


def test_patchify_errors():
    with pytest.raises(ValueError, match="not divisible"):
        patchify_2d(torch.zeros(1, 1, 6, 6), 4)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        patchify_2d(torch.zeros(1, 6, 6), 2)
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        patchify_3d(torch.zeros(1, 1, 6, 6), 2)
    with pytest.raises(ValueError, match="unpatchify_2d"):
        unpatchify_2d(torch.zeros(1, 5, 4), 2, (4, 4))


def test_grid_coords():
    c = grid_coords_2d(2, 3)
    assert c.dtype == torch.float32
    assert torch.equal(c, torch.tensor([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]], dtype=torch.float32))
    c3 = grid_coords_3d(2, 2, 3)
    assert c3.shape == (12, 3)
    assert torch.equal(c3[:6, 1:], c) and torch.equal(c3[6:, 0], torch.ones(6))
