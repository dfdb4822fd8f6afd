"""Convolutional autoencoder with spherical padding, its area-weighted loss, and ``encode``.

Spherical padding (as LaDCast's sphere conv, written afresh): circular in longitude; beyond a pole
edge the padding rows are the rows next to that edge, in reverse order, rolled by half the longitudes
(the point across the pole). Convolutions are stride 1 with this padding; downsampling is 2×2 average
pooling, upsampling nearest, so an ``n_down``-level model reduces each axis by ``2**n_down``.

Loss: relative L2 per (sample, channel), ``‖ŷ − y‖_w / ‖y‖_w`` with WB2 cell-area weights, averaged.
No latitude "roll" augmentation (a latitude roll is not a symmetry of the sphere).

``encode_dataset`` writes a latent zarr with variables ``latent_000 …`` on the coarse grid (latitude
and longitude are block means), which the forecaster reads like any other dataset.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import Tensor, nn

from apps.weather.data import channel_levels, load_block, match_grid, open_weather
from apps.weather.dataset import NormStats, time_blocks
from apps.weather.objective import area_weights
from dualsci.io import atomic_dir, sha256_file


def sphere_pad(x: Tensor, p: int) -> Tensor:
    """Pad (B, C, H, W) by p on every side: circular in longitude, across the poles in latitude.

    Row 0 is the southernmost (latitude ascending). W must be even.
    """
    if p == 0:
        return x
    w = x.shape[-1]
    if w % 2:
        raise ValueError(f"sphere_pad needs an even number of longitudes, got {w}")
    south = torch.roll(torch.flip(x[..., :p, :], dims=[-2]), w // 2, dims=-1)
    north = torch.roll(torch.flip(x[..., -p:, :], dims=[-2]), w // 2, dims=-1)
    x = torch.cat([south, x, north], dim=-2)
    return torch.cat([x[..., -p:], x, x[..., :p]], dim=-1)


class SphereConv(nn.Module):
    """3×3 (or k×k) convolution on the sphere: spherical padding then a valid convolution."""

    def __init__(self, cin: int, cout: int, k: int = 3) -> None:
        super().__init__()
        self.p = k // 2
        self.conv = nn.Conv2d(cin, cout, k)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(sphere_pad(x, self.p))


class _Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(min(8, c), c), SphereConv(c, c)
        self.n2, self.c2 = nn.GroupNorm(min(8, c), c), SphereConv(c, c)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.c2(F.silu(self.n2(self.c1(F.silu(self.n1(x))))))


class SphericalAutoencoder(nn.Module):
    """Deterministic conv autoencoder on a global lat-lon grid.

    Args:
        n_channels: state channels C (reconstructed).
        n_statics: static fields S (encoder input only).
        latent_channels: L.
        width: base channels; doubled per level.
        n_down: downsampling levels (factor ``2**n_down`` per axis, e.g. 3 → 8×).
    """

    def __init__(self, n_channels: int, n_statics: int = 0, latent_channels: int = 8, width: int = 32, n_down: int = 2) -> None:
        super().__init__()
        self.init_kwargs = dict(n_channels=n_channels, n_statics=n_statics, latent_channels=latent_channels, width=width, n_down=n_down)
        self.factor = 2**n_down
        enc = [SphereConv(n_channels + n_statics, width)]
        c = width
        for _ in range(n_down):
            enc += [_Res(c), nn.AvgPool2d(2), SphereConv(c, 2 * c)]
            c *= 2
        enc += [_Res(c), nn.GroupNorm(min(8, c), c), nn.SiLU(), SphereConv(c, latent_channels, 1)]
        self.encoder = nn.Sequential(*enc)
        dec = [SphereConv(latent_channels, c), _Res(c)]
        for _ in range(n_down):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), SphereConv(c, c // 2), _Res(c // 2)]
            c //= 2
        dec += [nn.GroupNorm(min(8, c), c), nn.SiLU(), SphereConv(c, n_channels)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: Tensor, statics: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W), statics: (B, S, H, W) -> z: (B, L, H/f, W/f)."""
        if statics is not None and statics.shape[1]:
            x = torch.cat([x, statics], 1)
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """z: (B, L, h, w) -> (B, C, h·f, w·f)."""
        return self.decoder(z)

    def forward(self, x: Tensor, statics: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x, statics))


class AutoencoderObjective:
    """Area-weighted relative L2 reconstruction loss (uses ``batch["x0"]``, ``batch["statics"]``)."""

    init_kwargs: dict = {}

    def loss(self, net: nn.Module, batch: dict) -> dict[str, Tensor]:
        x = batch["x0"]
        rec = net(x, batch["statics"])
        w = area_weights(batch["lat"][0]).to(x)[None, None, :, None]
        num = ((rec - x) ** 2 * w).sum(dim=(-2, -1)).sqrt()
        den = ((x**2) * w).sum(dim=(-2, -1)).sqrt().clamp(min=1e-6)
        return {"loss": (num / den).mean()}


def load_autoencoder(path: str | os.PathLike) -> tuple[SphericalAutoencoder, dict]:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    meta = ck["weather"]
    net = SphericalAutoencoder(**meta["net"])
    net.load_state_dict({k[4:]: v for k, v in ck["state_dict"].items() if k.startswith("net.")})
    return net.eval(), meta


def _block_mean_lat(lat: np.ndarray, f: int) -> np.ndarray:
    return lat.reshape(-1, f).mean(1)


def _block_mean_lon(lon: np.ndarray, f: int) -> np.ndarray:
    r = np.radians(lon).reshape(-1, f)
    return np.mod(np.degrees(np.arctan2(np.sin(r).mean(1), np.cos(r).mean(1))), 360.0)


@torch.no_grad()
def encode_dataset(checkpoint: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, period: tuple[str, str] | None = None, block: int = 168) -> Path:
    """Encode every time of ``data`` (optionally a period) into a latent zarr, streaming in blocks."""
    net, meta = load_autoencoder(checkpoint)
    stats = NormStats.from_dict(meta["stats"])
    ds = open_weather(data, variables=sorted({c.partition("/")[0] for c in stats.channels}), levels=channel_levels(stats.channels),
                      period=period)
    ds = match_grid(ds, meta["lat"], meta["lon"], str(data))
    statics = torch.from_numpy(stats.statics(ds))[None]
    f = net.factor
    lat = _block_mean_lat(np.asarray(meta["lat"]), f)
    lon = _block_mean_lon(np.asarray(meta["lon"]), f)
    times = ds.time.values
    out = Path(out)
    with atomic_dir(out) as tmp:
        for i, sl in enumerate(time_blocks(len(times), block)):
            x = torch.from_numpy(stats.normalise(load_block(ds, stats.channels, sl)))
            z = net.encode(x, statics.expand(x.shape[0], -1, -1, -1)).numpy()
            part = xr.Dataset(
                {f"latent_{c:03d}": (("time", "latitude", "longitude"), z[:, c]) for c in range(z.shape[1])},
                coords={"time": times[sl], "latitude": lat, "longitude": lon},
            )
            if i == 0:
                part.attrs.update(autoencoder_sha256=sha256_file(checkpoint), source=str(data), factor=f, Conventions="CF-1.8")
                enc = {v: {"chunks": (block, len(lat), len(lon))} for v in part.data_vars}
                enc["time"] = {"units": "hours since 1970-01-01", "dtype": "int64"}
                part.to_zarr(tmp, mode="w", encoding=enc, consolidated=False, zarr_format=3)
            else:
                part.to_zarr(tmp, append_dim="time", consolidated=False, zarr_format=3)
    return out
