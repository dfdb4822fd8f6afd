"""Convolutional autoencoder with spherical padding, its area-weighted loss, and ``encode``.

Spherical padding (as LaDCast's sphere conv, written afresh): circular in longitude; beyond a pole
edge the padding rows are the rows next to that edge, in reverse order, rolled by half the longitudes
(the point across the pole). Convolutions are stride 1 with this padding; downsampling is 2×2 average
pooling, upsampling nearest, so an ``n_down``-level model reduces each axis by ``2**n_down``.

Loss: relative L2 per (sample, channel), ``‖ŷ − y‖_w / ‖y‖_w`` with WB2 cell-area weights, averaged.
No latitude "roll" augmentation (a latitude roll is not a symmetry of the sphere). A declared masked field
(SST over land) reads 0 at its empty cells (``dataset.fill_masked``, as for the forecaster); those cells
weigh 0 in both norms (batch ``"x0_valid"``), so the reconstruction there is free and decoded forecasts
are set NaN where the init state is empty.

``encode_dataset`` writes a latent zarr with variables ``latent_000 …`` on the coarse grid (latitude
and longitude are block means), which the forecaster reads like any other dataset. Masked cells are
filled as in training; when a channel is a masked field, the zarr also holds the group ``pixel_valid``
(invisible to the readers of the latent variables): ``valid`` (time, channel, latitude, longitude) bool on
the autoencoder's grid for those channels (attribute ``channels``), which ``forecast --autoencoder``
uses to write NaN where the init state is empty.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import Tensor, nn

from apps.weather.data import MASKED_FIELDS, WeatherDataError, channel_levels, load_block, match_grid, open_weather
from apps.weather.dataset import NormStats, fill_masked, time_blocks
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
    """Area-weighted relative L2 reconstruction loss (uses ``batch["x0"]``, ``batch["statics"]``).

    With ``batch["x0_valid"]`` (B, C, H, W) bool (a masked field such as SST over land among the channels),
    the cells without data weigh 0 in both norms, and a (sample, channel) without any cell holding data is
    left out of the mean.
    """

    init_kwargs: dict = {}

    def loss(self, net: nn.Module, batch: dict) -> dict[str, Tensor]:
        x = batch["x0"]
        rec = net(x, batch["statics"])
        w = area_weights(batch["lat"][0]).to(x)[None, None, :, None]
        valid = batch.get("x0_valid")
        if valid is not None:
            w = w * valid.to(x)
        num = ((rec - x) ** 2 * w).sum(dim=(-2, -1)).sqrt()
        den = ((x**2) * w).sum(dim=(-2, -1)).sqrt().clamp(min=1e-6)
        if valid is None:
            return {"loss": (num / den).mean()}
        has_data = valid.flatten(2).any(-1).to(x)  # (B, C)
        return {"loss": (num / den * has_data).sum() / has_data.sum().clamp(min=1)}


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


VALID_GROUP = "pixel_valid"


def latent_name(c: int) -> str:
    """The latent zarr's variable of latent channel ``c`` (what ``encode_dataset`` writes)."""
    return f"latent_{c:03d}"


def latent_order(channels: list[str], n_latent: int, source: str) -> list[int]:
    """Where each latent channel the decoder expects (``latent_000``, ``latent_001``, ...) sits in a latent
    forecaster's ``channels``: the forecaster keeps the order in which it read the latent zarr's variables
    (name order, or the order of ``data.variables``, e.g. ``latent_002, latent_000, ...``), which need not be
    the decoder's.

    An error naming ``source`` when the forecaster's channels are not exactly the decoder's latents.
    """
    names = [latent_name(c) for c in range(n_latent)]
    if sorted(channels) != names:
        raise WeatherDataError(source, f"a latent forecaster's channels must be the autoencoder's {n_latent} latents "
                                       f"{names[0]} .. {names[-1]}, got {channels}", "channels")
    return [channels.index(n) for n in names]


def masked_channels(channels: list[str]) -> list[str]:
    """The channels that are declared masked fields (SST): their empty cells are NaN in decoded forecasts."""
    return [c for c in channels if c.partition("/")[0] in MASKED_FIELDS]


def latent_validity(latent: str | os.PathLike, channels: list[str], inits: list[np.datetime64],
                    grid: tuple[int, int]) -> np.ndarray | None:
    """Cells holding data in the encoded init states, from the latent zarr's ``pixel_valid`` group.

    Args:
        latent: the latent zarr written by :func:`encode_dataset`.
        channels: the autoencoder's (decoded) channels.
        inits: init times.
        grid: (H, W) of the autoencoder.

    Returns:
        ``(I, C, H, W)`` bool (True for every cell of a channel that is not a masked field), or None when no
        channel is a masked field. A store without the group (encoded before it existed), or without an
        init or a channel in it, is an error naming the store and the channel.
    """
    masked = masked_channels(channels)
    if not masked:
        return None
    src = os.fspath(latent)
    try:
        group = xr.open_zarr(src, group=VALID_GROUP, consolidated=False)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the store and the channels
        raise WeatherDataError(src, f"no '{VALID_GROUP}' group: the autoencoder decodes masked field(s), whose forecast is NaN "
                                    "where the init state is empty; encode the data again with this version "
                                    f"({type(exc).__name__}: {exc})", ",".join(masked)) from exc
    have = list(group.attrs.get("channels", []))
    absent = [c for c in masked if c not in have]
    if absent:
        raise WeatherDataError(src, f"'{VALID_GROUP}' group holds channels {have}, not these masked ones of the autoencoder",
                               ",".join(absent))
    if tuple(group["valid"].shape[-2:]) != tuple(grid):
        raise WeatherDataError(src, f"'{VALID_GROUP}' grid {tuple(group['valid'].shape[-2:])} is not the autoencoder's "
                                    f"{tuple(grid)}", ",".join(masked))
    times = group["time"].values.astype("datetime64[h]")
    rows = []
    for t in inits:
        hit = np.flatnonzero(times == np.datetime64(t, "h"))
        if not len(hit):
            raise WeatherDataError(src, f"init time {t} is not in the '{VALID_GROUP}' group", ",".join(masked))
        rows.append(int(hit[0]))
    stored = np.asarray(group["valid"].isel(time=rows).values, dtype=bool)  # (I, C_masked, H, W)
    out = np.ones((len(inits), len(channels), *grid), dtype=bool)
    for c in masked:
        out[:, channels.index(c)] = stored[:, have.index(c)]
    return out


@torch.no_grad()
def encode_dataset(checkpoint: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, period: tuple[str, str] | None = None, block: int = 168) -> Path:
    """Encode every time of ``data`` (optionally a period) into a latent zarr, streaming in blocks.

    Masked cells (SST over land) are filled with 0 after normalisation, as in training; their validity is
    stored in the group ``pixel_valid`` (module docstring).
    """
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
    masked = masked_channels(stats.channels)
    mi = [stats.channels.index(c) for c in masked]
    attrs = dict(autoencoder_sha256=sha256_file(checkpoint), source=str(data), factor=f, Conventions="CF-1.8")
    out = Path(out)
    with atomic_dir(out) as tmp:
        for i, sl in enumerate(time_blocks(len(times), block)):
            x_n, valid = fill_masked(stats.normalise(load_block(ds, stats.channels, sl)))
            x = torch.from_numpy(x_n)
            z = net.encode(x, statics.expand(x.shape[0], -1, -1, -1)).numpy()
            part = xr.Dataset(
                {latent_name(c): (("time", "latitude", "longitude"), z[:, c]) for c in range(z.shape[1])},
                coords={"time": times[sl], "latitude": lat, "longitude": lon},
                attrs=attrs,  # on every block: an append replaces the store's attributes with the part's
            )
            if i == 0:
                enc = {v: {"chunks": (block, len(lat), len(lon))} for v in part.data_vars}
                enc["time"] = {"units": "hours since 1970-01-01", "dtype": "int64"}
                part.to_zarr(tmp, mode="w", encoding=enc, consolidated=False, zarr_format=3)
            else:
                part.to_zarr(tmp, append_dim="time", consolidated=False, zarr_format=3)
            if masked:  # after the root group: its first write (mode "w") would remove the group
                v = np.ones((x_n.shape[0], len(mi), *x_n.shape[2:]), bool) if valid is None else valid[:, mi]
                vpart = xr.Dataset({"valid": (("time", "channel", "latitude", "longitude"), v)},
                                   coords={"time": times[sl], "latitude": np.asarray(meta["lat"]), "longitude": np.asarray(meta["lon"])},
                                   attrs={"channels": masked})
                if i == 0:
                    venc = {"valid": {"chunks": (block, len(mi), *x_n.shape[2:])},
                            "time": {"units": "hours since 1970-01-01", "dtype": "int64"}}
                    vpart.to_zarr(tmp, group=VALID_GROUP, mode="w", encoding=venc, consolidated=False, zarr_format=3)
                else:
                    vpart.to_zarr(tmp, group=VALID_GROUP, append_dim="time", consolidated=False, zarr_format=3)
    return out
