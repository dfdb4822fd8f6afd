"""The forecaster: the core dual-stream transformer on (noisy future frames | clean current state).

Stream a (target) holds k noisy future frames, stream b (context) the clean state at init plus the
static fields. Both streams carry GeoRoPE coordinates ``(lead step, latitude, longitude)`` in one frame
(context at lead 0, target frames at 1..k); the calendar of the init (year-fraction harmonics and hour of
day) is the global condition, and every target token also sees the calendar features of its own
*valid* time so that the diurnal cycle is explicit at every lead. With ``history = h > 0`` the context
stream also carries the h states before the init (one block step apart, oldest first), so the network
sees the recent trend (a front's motion), not just a snapshot. Works on any grid (pixel space) or on
an autoencoder latent grid (the latent zarr is just another dataset).

Coordinates (``rope="geo"``): longitude in radians with whole-number frequencies (periodic in 2π, no
seam at 0°); latitude in radians times ``lat_scale = n_lat_tokens / π`` (one unit per token row, a
documented scale, no pole special case); lead in block steps. ``rope="grid"`` uses (lead, row, col)
token indices, better for small regional boxes where a 12° span is too short for periodic frequencies.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn

from dualsci.nn import DualStreamConfig, DualStreamTransformer, calendar_features, patchify_2d, unpatchify_2d

RopeMode = Literal["geo", "grid"]
CAL_HARMONICS = 4
COORD_DIM = 3


def valid_times(init_time_ns: Tensor, frames: int, step_hours: int) -> np.ndarray:
    """(B,) int64 ns init times -> (B, frames) numpy datetime64[ns] valid times of frames 1..k."""
    base = init_time_ns.detach().cpu().numpy().astype(np.int64)
    step = np.int64(step_hours) * 3_600_000_000_000
    return (base[:, None] + step * np.arange(1, frames + 1, dtype=np.int64)[None]).astype("datetime64[ns]")


class WeatherForecaster(nn.Module):
    """Denoiser network ``F(x_in, c_noise | x0, statics, time)`` for a block of k frames.

    Args:
        n_channels: state channels C (variables × levels).
        n_statics: static fields S.
        grid: (H, W) of the (pixel or latent) grid.
        frames: frames k per block.
        step_hours: hours between frames.
        patch: patch size p (H and W divisible by p).
        dim, num_heads, depth_dual, depth_single, mlp_ratio: transformer size.
        rope: ``"geo"`` (periodic GeoRoPE, global grids) or ``"grid"`` (token indices, regional boxes).
        rope_axes_dim: (t, lat, lon) split of the head dim; default ≈ (¼, ⅜, ⅜).
        history: previous states (``step_hours`` apart) added to the context tokens; 0 = the init only.
        year_harmonics: year-fraction harmonics in the calendar features (default 4, LaDCast's seasonal
            embedding); 0 = hour of day only. With less than a year of training data the year fraction is a
            date index the net can learn the training weeks by, and a test week lies outside it.
    """

    def __init__(
        self,
        n_channels: int,
        n_statics: int = 0,
        grid: tuple[int, int] = (16, 32),
        frames: int = 4,
        step_hours: int = 6,
        patch: int = 2,
        dim: int = 128,
        num_heads: int = 4,
        depth_dual: int = 3,
        depth_single: int = 1,
        mlp_ratio: float = 4.0,
        rope: RopeMode = "geo",
        rope_axes_dim: tuple[int, int, int] | None = None,
        history: int = 0,
        year_harmonics: int = CAL_HARMONICS,
    ) -> None:
        super().__init__()
        # Plain constructor arguments, stored in checkpoints to rebuild the network without pickles.
        self.init_kwargs = dict(
            n_channels=n_channels, n_statics=n_statics, grid=[int(g) for g in grid], frames=frames,
            step_hours=step_hours, patch=patch, dim=dim, num_heads=num_heads, depth_dual=depth_dual,
            depth_single=depth_single, mlp_ratio=mlp_ratio, rope=rope,
            rope_axes_dim=None if rope_axes_dim is None else [int(a) for a in rope_axes_dim],
            history=int(history), year_harmonics=int(year_harmonics),
        )
        if history < 0:
            raise ValueError(f"WeatherForecaster: history={history} must be >= 0")
        self.history = int(history)
        if year_harmonics < 0:
            raise ValueError(f"WeatherForecaster: year_harmonics={year_harmonics} must be >= 0")
        self.year_harmonics = int(year_harmonics)
        cal_dim = 2 * self.year_harmonics + 2
        if rope not in get_args(RopeMode):
            raise ValueError(f"WeatherForecaster: rope={rope!r} is not one of {get_args(RopeMode)}")
        h, w = (int(g) for g in grid)
        if h % patch or w % patch:
            raise ValueError(f"WeatherForecaster: grid {(h, w)} is not divisible by patch={patch}")
        self.n_channels, self.n_statics, self.grid = n_channels, n_statics, (h, w)
        self.frames, self.step_hours, self.patch, self.rope_mode = frames, step_hours, patch, rope
        head = dim // num_heads
        if rope_axes_dim is None:
            # ~¼ time, the rest split between latitude and longitude; longitude capped at Nyquist.
            t_dim = 2 * max(1, head // 8)
            lon_dim = min(2 * ((head - t_dim) // 4), 2 * max(1, (w // patch) // 2))
            rope_axes_dim = (t_dim, head - t_dim - lon_dim, lon_dim)
        self.rope_axes_dim = tuple(int(a) for a in rope_axes_dim)
        if rope == "geo" and self.rope_axes_dim[2] // 2 > w // patch // 2:
            raise ValueError(
                f"WeatherForecaster: {self.rope_axes_dim[2] // 2} longitude frequencies exceed the Nyquist limit "
                f"{w // patch // 2} of {w // patch} token columns; lower rope_axes_dim[2]"
            )
        pp = patch * patch
        self.config = DualStreamConfig(
            in_dim_a=n_channels * pp + cal_dim + COORD_DIM,
            in_dim_b=(n_channels * (1 + self.history) + n_statics) * pp + COORD_DIM,
            out_dim_a=n_channels * pp,
            out_dim_b=0,
            dim=dim,
            num_heads=num_heads,
            depth_dual=depth_dual,
            depth_single=depth_single,
            mlp_ratio=mlp_ratio,
            cond_dim=cal_dim,
            rope_axes_dim=self.rope_axes_dim,
            rope_kind="geo" if rope == "geo" else "nd",
            shared_condition=True,
            time_scale=1.0,  # fed EDM c_noise = ¼ ln σ
        )
        self.net = DualStreamTransformer(self.config)

    # ------------------------------------------------------------------------------ geometry
    def _check_grid(self, h: int, w: int) -> None:
        """The data grid must be the model's; in training mode a patch-aligned crop of it is also accepted
        (``WeatherEDMObjective(train_crop=...)``): inference always runs on the grid the model was built for."""
        gh, gw = self.grid
        if (h, w) == (gh, gw):
            return
        if self.training and h <= gh and w <= gw and not (h % self.patch or w % self.patch):
            return
        raise ValueError(f"grid mismatch: the model was built for {gh}x{gw} (lat x lon) but the data is {h}x{w}")

    def _token_coords(self, lat: Tensor, lon: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-token (lat_coord, lon_coord) for RoPE and (sinφ, cosφcosλ, cosφsinλ) features."""
        p = self.patch
        h, w = lat.numel(), lon.numel()
        self._check_grid(h, w)
        lat_r = torch.deg2rad(lat.double()).reshape(h // p, p).mean(1)
        # Circular mean of patch longitudes (a patch may straddle 0°).
        lon_r = torch.deg2rad(lon.double()).reshape(w // p, p)
        lon_r = torch.atan2(lon_r.sin().mean(1), lon_r.cos().mean(1))
        la, lo = torch.meshgrid(lat_r, lon_r, indexing="ij")
        la, lo = la.reshape(-1), lo.reshape(-1)
        feats = torch.stack([la.sin(), la.cos() * lo.cos(), la.cos() * lo.sin()], -1).float()
        if self.rope_mode == "geo":
            lat_c = la * (self.grid[0] // p) / math.pi  # the built grid's scale, also for a training crop
            lon_c = torch.remainder(lo, 2 * math.pi)
        else:
            rows, cols = torch.meshgrid(torch.arange(h // p), torch.arange(w // p), indexing="ij")
            lat_c, lon_c = rows.reshape(-1).double(), cols.reshape(-1).double()
        return lat_c, lon_c, feats

    def positions(self, lat: Tensor, lon: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """RoPE coordinates ``pos_a: (k·N, 3)``, ``pos_b: (N, 3)`` and token features ``(N, 3)``."""
        lat_c, lon_c, feats = self._token_coords(lat, lon)
        n = lat_c.numel()
        pos_b = torch.stack([torch.zeros(n, dtype=torch.float64), lat_c, lon_c], -1)
        leads = torch.arange(1, self.frames + 1, dtype=torch.float64).repeat_interleave(n)
        pos_a = torch.stack([leads, lat_c.repeat(self.frames), lon_c.repeat(self.frames)], -1)
        return pos_a, pos_b, feats

    # ------------------------------------------------------------------------------- forward
    def forward(
        self,
        x_in: Tensor,
        c_noise: Tensor,
        x0: Tensor,
        statics: Tensor,
        init_time: Tensor,
        lat: Tensor,
        lon: Tensor,
        x_hist: Tensor | None = None,
    ) -> Tensor:
        """One network call.

        Args:
            x_in: (B, k, C, H, W) preconditioned noisy target block.
            c_noise: (B,) EDM noise coordinate ¼ ln σ.
            x0: (B, C, H, W) normalised state at init (clean).
            statics: (B, S, H, W) normalised static fields.
            init_time: (B,) int64 ns since 1970 (init of this block).
            lat, lon: (H,), (W,) grid coordinates in degrees (H, W = the model's grid; in training mode also
                a patch-aligned crop of it).
            x_hist: (B, h, C, H, W) normalised states before the init, oldest first (``history = h``).

        Returns:
            F: (B, k, C, H, W).
        """
        b, k, c, h, w = x_in.shape
        if c != self.n_channels or k != self.frames:
            raise ValueError(
                f"input block {(k, c, h, w)} does not match the model (frames, channels, H, W) = "
                f"{(self.frames, self.n_channels, *self.grid)}"
            )
        if (lat.numel(), lon.numel()) != (h, w):
            raise ValueError(f"grid mismatch: the input block is {h}x{w} but lat/lon describe a {lat.numel()}x{lon.numel()} grid")
        if statics.shape[1] != self.n_statics:
            raise ValueError(f"model expects {self.n_statics} static fields, got {statics.shape[1]}")
        pos_a, pos_b, feats = self.positions(lat.cpu(), lon.cpu())
        dev, dt = x_in.device, x_in.dtype
        feats = feats.to(dev, dt)
        n = feats.shape[0]
        tok_a = patchify_2d(x_in.reshape(b * k, c, h, w), self.patch).reshape(b, k, n, -1)
        cal_valid = calendar_features(valid_times(init_time, k, self.step_hours).reshape(-1), self.year_harmonics)
        cal_valid = cal_valid.to(dev, dt).reshape(b, k, 1, -1).expand(b, k, n, -1)
        tok_a = torch.cat([tok_a, cal_valid, feats.expand(b, k, n, COORD_DIM)], -1).reshape(b, k * n, -1)
        parts = [x0]
        if self.history:
            if x_hist is None or tuple(x_hist.shape[1:3]) != (self.history, c):
                got = None if x_hist is None else tuple(x_hist.shape)
                raise ValueError(f"model expects x_hist (B, {self.history}, {c}, H, W) (history={self.history}), got {got}")
            parts.append(x_hist.reshape(b, self.history * c, h, w))
        if self.n_statics:
            parts.append(statics)
        ctx = torch.cat(parts, 1) if len(parts) > 1 else x0
        tok_b = torch.cat([patchify_2d(ctx, self.patch), feats.expand(b, n, COORD_DIM)], -1)
        cond = calendar_features(init_time.detach().cpu().numpy().astype("datetime64[ns]"), self.year_harmonics).to(dev, dt)
        y_a, _ = self.net(tok_a, tok_b, c_noise.to(dt), None, cond, pos_a.to(dev), pos_b.to(dev))
        y = unpatchify_2d(y_a.reshape(b * k, n, -1), self.patch, (h, w))
        return y.reshape(b, k, c, h, w)
