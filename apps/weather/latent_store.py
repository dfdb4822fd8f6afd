"""Latent-only forecast stores and their lazily decoded view (method card §15.6).

Why: a latent forecaster's ensemble decoded to every physical field is the largest thing a run writes. With
``forecast --autoencoder AE --store latent`` the store keeps the sampled latents only (the same WB2 layout on
the latent grid, a fraction of the bytes) and records the autoencoder (path and sha256). :func:`open_decoded`
returns the physical forecast as a lazily decoded ``xr.Dataset``: nothing is decoded until values are read, and
a read decodes just the blocks it touches (one member batch × one block of leads, as the forecast wrote them,
so the values equal the decoded store's bit for bit). ``evaluate``, the cyclone tracker and the report read a
latent store through it; ``dualsci-weather decode`` writes the decoded store (zarr or NetCDF) when one is wanted.

A store's layout:
* attributes ``store = "latent"``, ``autoencoder`` (absolute path at forecast time), ``autoencoder_sha256``,
  ``frames_per_block`` and the options' ``batch_members`` (the block structure the decoder follows);
* variables ``latent_000 ...`` (time, realization, prediction_timedelta, latitude, longitude) on the latent grid;
* when the autoencoder decodes a masked field (SST), the group ``pixel_valid``: ``valid`` (time, channel,
  latitude, longitude) on the decoded grid, the cells holding data in each init state (NaN elsewhere once
  decoded), as in the decoded path.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

from apps.weather.autoencoder import VALID_GROUP, latent_name, load_autoencoder, masked_channels
from apps.weather.data import WeatherDataError
from apps.weather.dataset import NormStats, mask_empty
from dualsci.io import sha256_file

LATENT_STORE = "latent"


def is_latent_store(ds: xr.Dataset) -> bool:
    return ds.attrs.get("store") == LATENT_STORE


def write_validity(store: Path, valid: np.ndarray | None, inits: np.ndarray, channels: list[str], meta: dict) -> None:
    """The ``pixel_valid`` group of a latent store: ``valid`` (I, C, H, W) of the decoded ``channels`` (only
    the masked fields' planes are stored); nothing when no channel is a masked field."""
    masked = masked_channels(channels)
    if valid is None or not masked:
        return
    rows = [channels.index(c) for c in masked]
    xr.Dataset({"valid": (("time", "channel", "latitude", "longitude"), valid[:, rows])},
               coords={"time": np.asarray(inits, dtype="datetime64[ns]"), "latitude": np.asarray(meta["lat"]),
                       "longitude": np.asarray(meta["lon"])},
               attrs={"channels": masked}).to_zarr(store, group=VALID_GROUP, mode="w", consolidated=False, zarr_format=3)


class _LatentBlocks:
    """Decoded blocks of a latent store, ``(members of one batch, leads of one block, C, H, W)`` float32, with a
    small cache: the evaluation reads every channel and lead of a block in turn."""

    def __init__(self, ds: xr.Dataset, decoder: torch.nn.Module, stats: NormStats, valid: np.ndarray | None,
                 batch: int, frames: int, cache: int = 8) -> None:
        self.ds, self.decoder, self.stats, self.valid = ds, decoder, stats, valid
        self.batch, self.frames, self.cache = batch, frames, cache
        self.names = [latent_name(c) for c in range(int(decoder.init_kwargs["latent_channels"]))]
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()  # dask may read from several threads; decode each block once

    def block(self, t: int, mb: int, lb: int) -> np.ndarray:
        key = (t, mb, lb)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            sel = dict(time=t, realization=slice(mb * self.batch, (mb + 1) * self.batch),
                       prediction_timedelta=slice(lb * self.frames, (lb + 1) * self.frames))
            z = np.stack([np.asarray(self.ds[n].isel(sel).values) for n in self.names], axis=2)  # (Mb, k, L, h, w)
            with torch.no_grad():  # one batch of Mb·k latents, as the decoded path decodes them
                dec = self.decoder.decode(torch.from_numpy(z.reshape(-1, *z.shape[2:]))).numpy()
            dec = dec.reshape(*z.shape[:2], *dec.shape[1:])
            out = mask_empty(self.stats.denormalise(dec), None if self.valid is None else self.valid[t])
            self._cache[key] = out
            if len(self._cache) > self.cache:
                self._cache.popitem(last=False)
            return out


class _DecodedField(BackendArray):
    """One physical variable of the decoded view: (time, realization, prediction_timedelta, [level,] lat, lon)."""

    def __init__(self, blocks: _LatentBlocks, channels: list[int], has_level: bool, shape: tuple[int, ...]) -> None:
        self.blocks, self.channels, self.has_level = blocks, channels, has_level
        self.shape, self.dtype = shape, np.dtype(np.float32)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._read)

    def _read(self, key: tuple) -> np.ndarray:
        picks = [np.arange(n)[k] for k, n in zip(key[:3], self.shape[:3])]
        scalar = tuple(np.ndim(p) == 0 for p in picks)
        t_idx, m_idx, l_idx = (np.atleast_1d(p) for p in picks)
        rest = tuple(key[3:])
        chans = self.channels if self.has_level else self.channels[0]
        b, k = self.blocks.batch, self.blocks.frames
        out = None
        for ti, t in enumerate(t_idx):
            for mb in np.unique(m_idx // b):
                mpos = np.flatnonzero(m_idx // b == mb)
                for lb in np.unique(l_idx // k):
                    lpos = np.flatnonzero(l_idx // k == lb)
                    blk = self.blocks.block(int(t), int(mb), int(lb))[:, :, chans]
                    sub = blk[np.ix_(m_idx[mpos] - mb * b, l_idx[lpos] - lb * k)][(slice(None), slice(None)) + rest]
                    if out is None:
                        out = np.empty((len(t_idx), len(m_idx), len(l_idx)) + sub.shape[2:], np.float32)
                    out[ti][np.ix_(mpos, lpos)] = sub
        if out is None:  # an empty selection
            empty = np.empty(self.shape[3:], np.float32)[rest]
            out = np.empty((len(t_idx), len(m_idx), len(l_idx)) + empty.shape, np.float32)
        return out[tuple(0 if s else slice(None) for s in scalar)]


def _decoding(path: str | os.PathLike, autoencoder: str | os.PathLike | None) -> tuple[_LatentBlocks, xr.Dataset, list[str]]:
    """(decoded blocks, decoded template with the store's attributes, decoded channels) of a latent store."""
    from apps.weather.sampling import _template, decoder_grid

    src = os.fspath(path)
    if not Path(src).is_dir():
        raise WeatherDataError(src, "latent forecast store not found (a zarr folder)")
    lat = xr.open_zarr(src, consolidated=False)
    if not is_latent_store(lat):
        raise WeatherDataError(src, "not a latent-only forecast store (no attribute store='latent')")
    ae = Path(autoencoder if autoencoder is not None else lat.attrs.get("autoencoder", ""))
    if not ae.is_file():
        raise WeatherDataError(src, f"a latent-only store is decoded by its autoencoder, and {str(ae) or 'none'} is not a "
                                    "file: pass the autoencoder checkpoint (--autoencoder)")
    recorded = lat.attrs.get("autoencoder_sha256")
    if sha256_file(ae) != recorded:
        raise WeatherDataError(src, f"the autoencoder {ae} is not the one the forecast was made with (sha256 {recorded})")
    decoder, meta = load_autoencoder(ae)
    stats = NormStats.from_dict(meta["stats"])
    channels = stats.channels
    n_latent = int(decoder.init_kwargs["latent_channels"])
    missing = [latent_name(c) for c in range(n_latent) if latent_name(c) not in lat.data_vars]
    if missing:
        raise WeatherDataError(src, f"latent variable(s) {missing} of the autoencoder are missing", ",".join(missing))
    valid = None
    if masked_channels(channels):
        from apps.weather.autoencoder import latent_validity

        valid = latent_validity(src, channels, list(lat.time.values), decoder_grid(meta))
    members = lat.sizes["realization"]
    batch = max(1, min(int(json.loads(lat.attrs["options"])["batch_members"]), members))
    frames = int(lat.attrs["frames_per_block"])
    blocks = _LatentBlocks(lat, decoder, stats, valid, batch, frames)
    leads = (lat.prediction_timedelta.values / np.timedelta64(1, "h")).astype(int)
    template = _template(meta, channels, list(lat.time.values), leads, members, batch, frames)
    template.attrs = {k: v for k, v in lat.attrs.items() if k != "store"}
    template.attrs["decoded_from"] = f"latent store {Path(src).resolve()}"
    return blocks, template, channels


def open_decoded(path: str | os.PathLike, autoencoder: str | os.PathLike | None = None) -> xr.Dataset:
    """The physical forecast of a latent-only store, decoded lazily (module docstring).

    Args:
        path: the latent store (``forecast --store latent``).
        autoencoder: its autoencoder checkpoint; default the path recorded in the store. Its sha256 must equal
            the recorded one (another autoencoder would decode the latents into different fields).

    Returns:
        The decoded forecast in the schema ``forecast`` writes (same coordinates, attributes, CF metadata), its
        variables lazily indexed.
    """
    from apps.weather.sampling import with_cf_coordinates

    blocks, template, channels = _decoding(path, autoencoder)
    data_vars = {}
    for v in template.data_vars:
        idx = [j for j, ch in enumerate(channels) if ch.partition("/")[0] == v]  # the writer's channel order
        arr = _DecodedField(blocks, idx, "level" in template[v].dims, template[v].shape)
        data_vars[v] = xr.Variable(template[v].dims, indexing.LazilyIndexedArray(arr), template[v].attrs)
    return with_cf_coordinates(xr.Dataset(data_vars, coords=template.coords, attrs=template.attrs))


def decode_store(path: str | os.PathLike, out: str | os.PathLike, autoencoder: str | os.PathLike | None = None) -> Path:
    """Write the decoded forecast of a latent store to ``out`` (``.zarr`` folder or ``.nc``/``.nc4`` file).

    Block by block with the forecast's own writer, so the result equals the store ``forecast`` would have
    written with ``--store decoded`` (attributes aside). Memory holds one decoded block at a time (zarr); the
    output appears only when complete (written under ``OUT.partial``, then renamed).
    """
    from apps.weather.sampling import _encoding, _write_block, cf_encoding, with_cf_coordinates

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: output already exists (refusing to overwrite)")
    blocks, template, channels = _decoding(path, autoencoder)
    template = with_cf_coordinates(template)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        store = tmp / "decoded.zarr"
        template.to_zarr(store, compute=False, encoding=_encoding(template), consolidated=False, zarr_format=3)
        n_m, n_l = template.sizes["realization"], template.sizes["prediction_timedelta"]
        for t in range(template.sizes["time"]):
            for mb in range(-(-n_m // blocks.batch)):
                for lb in range(-(-n_l // blocks.frames)):
                    _write_block(store, channels, blocks.block(t, mb, lb), t, mb * blocks.batch, lb * blocks.frames, template)
        if out.suffix in (".nc", ".nc4"):
            fc = with_cf_coordinates(xr.open_zarr(store, consolidated=False).load())
            fc.to_netcdf(tmp / "decoded.nc", engine="netcdf4", encoding=cf_encoding(fc))
            os.replace(tmp / "decoded.nc", out)
        else:
            os.replace(store, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
