"""Normalisation statistics and the windowed (initial state, k future frames) dataset.

Both stream the data in time blocks aligned to the store's chunks, so memory depends on the block
size, never on the length of the period.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import xarray as xr

from apps.weather.data import MASKED_FIELDS, WeatherDataError, channel_names, load_block, load_statics, static_fields

NS_PER_HOUR = 3_600_000_000_000


@dataclass
class NormStats:
    """Per-channel (variable × level) z-score statistics, plus per-static spatial statistics.

    Attributes:
        channels: channel names, e.g. ``geopotential/500``.
        mean, std: (C,) float64.
        static_names, static_mean, static_std: the same for static fields.
    """

    channels: list[str]
    mean: np.ndarray
    std: np.ndarray
    static_names: list[str]
    static_mean: np.ndarray
    static_std: np.ndarray

    def to_dict(self) -> dict:
        return {
            "channels": list(self.channels),
            "mean": np.asarray(self.mean).tolist(),
            "std": np.asarray(self.std).tolist(),
            "static_names": list(self.static_names),
            "static_mean": np.asarray(self.static_mean).tolist(),
            "static_std": np.asarray(self.static_std).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "NormStats":
        return cls(
            list(d["channels"]),
            np.asarray(d["mean"], np.float64),
            np.asarray(d["std"], np.float64),
            list(d.get("static_names", [])),
            np.asarray(d.get("static_mean", []), np.float64),
            np.asarray(d.get("static_std", []), np.float64),
        )

    def save(self, path: str | os.PathLike) -> None:
        from dualsci.io import write_json_atomic

        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NormStats":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """x: (..., C, H, W) physical -> normalised float32."""
        return ((x - self.mean[:, None, None]) / self.std[:, None, None]).astype(np.float32)

    def denormalise(self, x: np.ndarray) -> np.ndarray:
        return (x * self.std[:, None, None] + self.mean[:, None, None]).astype(np.float32)

    def statics(self, ds: xr.Dataset) -> np.ndarray:
        """(S, H, W) normalised float32 static fields ``static_names`` of ``ds`` (read and checked by
        ``load_statics``: a NaN or an unreadable chunk is an error naming the file and the field)."""
        arr = load_statics(ds, self.static_names)
        return ((arr - self.static_mean[:, None, None]) / self.static_std[:, None, None]).astype(np.float32)


def fill_masked(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalised states ``(..., C, H, W)`` -> (the same with 0 at NaN cells, valid bool of that shape or None).

    Only declared masked fields (SST over land) can hold NaN here (``load_block`` refuses it elsewhere). 0 is
    the channel mean after normalisation: the network reads a neutral value there and the loss, the tendency
    scales and the prior leave those cells out. ``None`` when every cell is valid (no mask to carry).
    """
    valid = np.isfinite(x)
    if valid.all():
        return x, None
    return np.where(valid, x, 0.0).astype(x.dtype), valid


def mask_empty(states: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Physical states ``(..., C, H, W)`` -> float32 with NaN where ``valid`` (C, H, W) is False.

    The forecast of a declared masked field (SST over land) is NaN at the cells its init state leaves empty,
    in every member and lead (the pixel path and the decoded latent path alike); ``valid`` None: unchanged.
    """
    if valid is None:
        return states
    return np.where(valid, states, np.nan).astype(np.float32)


def time_blocks(n_time: int, block: int) -> Iterator[slice]:
    for s in range(0, n_time, block):
        yield slice(s, min(s + block, n_time))


def chunk_hours(ds: xr.Dataset, channels: Sequence[str], default: int = 168) -> int:
    """The time chunk length of the first channel's variable (dask chunks), or ``default``."""
    var = ds[channels[0].split("/")[0]]
    if var.chunks is not None and "time" in var.dims:
        return int(var.chunks[var.dims.index("time")][0])
    return default


def compute_stats(ds: xr.Dataset, channels: Sequence[str] | None = None, block: int | None = None) -> NormStats:
    """Streaming per-channel mean/std (Chan's parallel merge of block moments in float64).

    Args:
        ds: normalised dataset (lazy).
        channels: channel names; default every dynamic channel.
        block: time steps per read; default the store's chunk length.

    NaN in declared masked fields (SST over land, ``data.MASKED_FIELDS``) is left out of the moments; NaN in
    any other field is an error naming it (``load_block``).
    """
    channels = list(channels) if channels is not None else channel_names(ds)
    if block is None:
        # Whole chunks, ~16 MB of float32 per read: few reads, bounded memory.
        chunk = chunk_hours(ds, channels)
        per_step = 4 * len(channels) * ds.sizes["latitude"] * ds.sizes["longitude"]
        block = chunk * max(1, (16 << 20) // (per_step * chunk))
    n = 0
    mean = np.zeros(len(channels))
    m2 = np.zeros(len(channels))
    for sl in time_blocks(ds.sizes["time"], block):
        x = load_block(ds, channels, sl).astype(np.float64)  # (T, C, H, W)
        x = np.moveaxis(x, 1, 0).reshape(len(channels), -1)
        ok = np.isfinite(x)
        nb = ok.sum(axis=1)
        bm = np.where(ok, x, 0).sum(axis=1) / np.maximum(nb, 1)
        bm2 = np.where(ok, (x - bm[:, None]) ** 2, 0).sum(axis=1)
        tot = n + nb
        delta = bm - mean
        mean = mean + delta * nb / np.maximum(tot, 1)
        m2 = m2 + bm2 + delta**2 * n * nb / np.maximum(tot, 1)
        n = tot
    std = np.sqrt(m2 / np.maximum(n - 1, 1))
    src = ds.attrs.get("source_path", "<dataset>")
    for c, s in zip(channels, std):
        if not np.isfinite(s) or s <= 0:
            raise WeatherDataError(src, "constant or empty field: cannot normalise (std = 0)", c)
    names = [str(v) for v in static_fields(ds).data_vars]
    arr = load_statics(ds, names)  # (S, H, W)
    smean = arr.mean(axis=(1, 2))
    sstd = np.maximum(arr.std(axis=(1, 2)), 1e-6)
    return NormStats(channels, mean, std, names, smean, sstd)


def base_spacing(times: np.ndarray, source: str = "<dataset>") -> int:
    """The smallest step (ns) of a strictly increasing time axis (T,); every step must be a multiple of it.

    Gaps (a missing day, January and March downloaded) are whole multiples and allowed; mixed steps that are
    not (1 h then 1.5 h) are a :class:`WeatherDataError` naming the first such step.
    """
    dt = np.diff(np.asarray(times).astype("datetime64[ns]").astype(np.int64))
    base = int(dt.min())
    if base <= 0:  # the reader refuses this already (data.normalise); checked here for datasets built by hand
        i = int(np.argmin(dt))
        raise WeatherDataError(source, f"time is not strictly increasing (at index {i + 1}: {times[i]} -> {times[i + 1]})", "time")
    odd = np.flatnonzero(dt % base)
    if len(odd):
        i = int(odd[0])
        raise WeatherDataError(source, f"time axis has mixed steps: {str(times[i])[:16]} -> {str(times[i + 1])[:16]} "
                                       f"({dt[i] / NS_PER_HOUR:g} h) is not a multiple of the smallest step "
                                       f"{base / NS_PER_HOUR:g} h", "time")
    return base


def time_lag_index(times: np.ndarray, lags_ns: Sequence[int] | np.ndarray) -> np.ndarray:
    """(T, L) int64: the index in ``times`` (T,) of ``times[t] + lags_ns[l]``, or -1 where that time is absent
    (a gap, or beyond either end). ``times`` must be strictly increasing."""
    t = np.asarray(times).astype("datetime64[ns]").astype(np.int64)
    wanted = t[:, None] + np.asarray(lags_ns, dtype=np.int64)[None, :]
    pos = np.minimum(np.searchsorted(t, wanted), len(t) - 1)
    return np.where(t[pos] == wanted, pos, -1).astype(np.int64)


class WindowDataset(torch.utils.data.Dataset):
    """Samples ``(initial state, k future frames)`` at any initial hour.

    Args:
        ds: normalised dataset (lazy; strictly increasing time, gaps allowed: every step a multiple of the
            smallest one).
        stats: normalisation statistics (their channels are used, in order).
        frames: number of future frames k.
        step_hours: hours between frames (the lead of frame j is ``j·step_hours``).
        init_hours: allowed UTC hours of the init (None = every hour present).
        block: time steps per cached read (default the store's chunk length).
        max_blocks: cached blocks; memory is bounded by ``max_blocks·block`` frames.
        history: states before the init served as ``x_hist`` (``step_hours`` apart); inits start late
            enough to have them.

    Only windows whose every frame (history, init, k futures) exists in the file are served, each frame
    looked up by time; ``frame_index`` (N, history + 1 + k) holds their time indices, ``indices`` (N,) the
    inits', ``gap_dropped`` the number of windows that gaps in the time axis removed.

    Item: dict with ``x0 (C, H, W)``, ``y (k, C, H, W)`` normalised float32, ``statics (S, H, W)``,
    ``init_time`` int64 ns since 1970, ``index`` (init index into ``ds.time``); with ``history = h > 0``
    also ``x_hist (h, C, H, W)``, oldest first. Declared masked fields (SST over land) read 0 at their NaN
    cells, and with such a channel the item also holds ``valid (k, C, H, W)`` bool: cells where frame j and
    the init both hold data (the loss ignores the rest), and ``x0_valid (C, H, W)`` bool: the cells of the
    init holding data (the autoencoder's reconstruction loss ignores the rest).
    """

    def __init__(
        self,
        ds: xr.Dataset,
        stats: NormStats,
        frames: int = 1,
        step_hours: int = 6,
        init_hours: Sequence[int] | None = None,
        block: int | None = None,
        max_blocks: int = 4,
        history: int = 0,
    ) -> None:
        self.ds = ds
        if history < 0:
            raise ValueError(f"WindowDataset: history={history} must be >= 0")
        self.history = int(history)
        self.stats = stats
        self.channels = list(stats.channels)
        self.frames = frames
        times = ds["time"].values
        src = ds.attrs.get("source_path", "<dataset>")
        if len(times) < 2:
            raise WeatherDataError(src, "need at least 2 times", "time")
        base = base_spacing(times, src)
        dt_hours = base / NS_PER_HOUR
        if step_hours % dt_hours:
            raise WeatherDataError(src, f"step_hours={step_hours} is not a multiple of the data spacing {dt_hours:g} h", "time")
        self.stride = int(step_hours // dt_hours)
        self.step_hours = step_hours
        self.times = times
        # Every frame of a window (history, init, k futures) is looked up by time: a gap drops the window,
        # it never shifts a frame onto the wrong time.
        lags = np.arange(-self.history, frames + 1, dtype=np.int64) * step_hours * NS_PER_HOUR
        table = time_lag_index(times, lags)  # (T, h + 1 + k)
        complete = (table >= 0).all(axis=1)
        # Without gaps, the windows whose first and last frame fall inside the file: the gap-dropped ones are
        # those of them that lack a frame.
        t_ns = times.astype("datetime64[ns]").astype(np.int64)
        inside = (t_ns + lags[0] >= t_ns[0]) & (t_ns + lags[-1] <= t_ns[-1])
        if init_hours is not None:
            hours = (times.astype("datetime64[h]").astype(np.int64)) % 24
            wanted = np.isin(hours, list(init_hours))
            complete &= wanted
            inside &= wanted
        self.gap_dropped = int((inside & ~complete).sum())
        self.frame_index = table[complete]  # (N, h + 1 + k) time indices of each window's frames, oldest first
        idx = np.flatnonzero(complete)
        if len(idx) == 0:
            span = (self.history + frames) * step_hours
            raise WeatherDataError(src, f"period too short for {frames} frames of {step_hours} h (with {self.history} history "
                                        f"state(s) a window spans {span} h; the period {str(times[0])[:16]} .. "
                                        f"{str(times[-1])[:16]} has {len(times)} times"
                                        + (f"; inits only at hours {sorted(set(init_hours))}" if init_hours is not None else "")
                                        + (f"; gaps in the time axis dropped {self.gap_dropped} window(s)" if self.gap_dropped else "")
                                        + ")", "time")
        self.indices = idx
        self.block = block or chunk_hours(ds, self.channels)
        self.max_blocks = max_blocks
        # block index -> (normalised states with masked cells 0 (T_b, C, H, W), valid mask of that shape or None)
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
        # declared masked fields (SST) among the channels: items then carry the loss mask "valid"
        self.masked = any(c.partition("/")[0] in MASKED_FIELDS for c in self.channels)
        self.statics = stats.statics(ds)
        self.lat = ds["latitude"].values
        self.lon = ds["longitude"].values

    def __len__(self) -> int:
        return len(self.indices)

    def _block(self, t: int) -> tuple[np.ndarray, np.ndarray | None, int]:
        """The cached block holding time index t: (states, valid or None, t's row in the block)."""
        b = t // self.block
        if b not in self._cache:
            sl = slice(b * self.block, min((b + 1) * self.block, len(self.times)))
            self._cache[b] = fill_masked(self.stats.normalise(load_block(self.ds, self.channels, sl)))
            while len(self._cache) > self.max_blocks:
                self._cache.popitem(last=False)
        self._cache.move_to_end(b)
        return (*self._cache[b], t - b * self.block)

    def _frame(self, t: int) -> np.ndarray:
        states, _, row = self._block(t)
        return states[row]

    def frame(self, t: int) -> np.ndarray:
        """Normalised state (C, H, W) at time index t (masked cells of declared masked fields: 0)."""
        return self._frame(int(t))

    def frame_valid(self, t: int) -> np.ndarray:
        """(C, H, W) bool: the cells of time index t that hold data (False where a masked field is NaN)."""
        states, valid, row = self._block(int(t))
        return np.ones(states.shape[1:], bool) if valid is None else valid[row]

    def __getitem__(self, i: int) -> dict:
        frames = self.frame_index[i]  # (h + 1 + k,) time indices
        t0 = int(frames[self.history])
        x0 = self._frame(t0)
        y = np.stack([self._frame(t) for t in frames[self.history + 1:]])
        item = {
            "x0": torch.from_numpy(x0.copy()),
            "y": torch.from_numpy(y),
            "statics": torch.from_numpy(self.statics),
            "init_time": torch.tensor(int(self.times[t0].astype("datetime64[ns]").astype(np.int64))),
            "index": torch.tensor(t0),
        }
        if self.history:
            hist = [self._frame(t) for t in frames[: self.history]]
            item["x_hist"] = torch.from_numpy(np.stack(hist))
        if self.masked:  # (k, C, H, W): a tendency is defined where both the init and frame j hold data
            v0 = self.frame_valid(t0)
            item["valid"] = torch.from_numpy(np.stack([self.frame_valid(t) & v0 for t in frames[self.history + 1:]]))
            item["x0_valid"] = torch.from_numpy(v0.copy())
        return item


class BlockShuffleSampler(torch.utils.data.Sampler):
    """Shuffles blocks of consecutive inits, then inits within a block: random order, few reads.

    Args:
        n: dataset length.
        block: inits per block (use the store's chunk length).
        seed: base seed; the epoch is added so every epoch has its own order.
    """

    def __init__(self, n: int, block: int, seed: int = 0) -> None:
        self.n, self.block, self.seed, self.epoch = n, block, seed, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        starts = rng.permutation(np.arange(0, self.n, self.block))
        for s in starts:
            yield from (s + rng.permutation(min(self.block, self.n - s))).tolist()
