"""A WeatherBench2 climatology file as the reference for ACC and the climatology baseline.

WB2 publishes its 1990–2019 climatologies as zarr stores (e.g.
``gs://weatherbench2/datasets/era5-hourly-climatology/1990-2019_6h_240x121_equiangular_with_poles_conservative.zarr``)
with variables under WB2 names and dims ``(hour, dayofyear, [level,] longitude, latitude)``:
``dayofyear`` 1..366 and ``hour`` 0/6/12/18 (6-hourly) or 0..23 (hourly). WB2 looks a valid time up
by its calendar day of year and hour (``time.dt.dayofyear``, ``time.dt.hour``), which this does too.
A valid hour the file does not have (an hourly forecast against a 6-hourly file) takes the nearest
hour on the 24 h circle, as the harmonic fallback does.

Any file the reader opens works (zarr or NetCDF, local or fsspec URL); names, latitude order,
longitude range and level units are normalised by ``apps.weather.data.normalise``, and the grid must
equal or contain the forecast's grid.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

from apps.weather.data import WeatherDataError, _open_raw, check_finite, match_grid, normalise, read_values


class FileClimatology:
    """(dayofyear, hour) climatology read from a WB2-schema file.

    Args:
        path: zarr folder/URL or NetCDF file.
        channels: channel names (``2m_temperature``, ``geopotential/500``, ...).
        lat, lon: the forecast grid (degrees, latitude ascending, longitude in [0, 360)).
        cache: (dayofyear, hour) fields kept in memory (a run visits few distinct valid times).

    Raises:
        WeatherDataError: naming the file (and variable) when a variable, level, the ``dayofyear`` /
            ``hour`` dims or grid points are missing, or their values are out of range.
    """

    k = None  # no harmonic fit (kept for the result's "climatology" record)

    def __init__(self, path: str, channels: Sequence[str], lat: Sequence[float], lon: Sequence[float], cache: int = 64) -> None:
        self.path = str(path)
        self.channels = list(channels)
        ds = normalise(_open_raw(self.path), self.path)
        self.arrays = []
        for ch in self.channels:
            v, _, lv = ch.partition("/")
            if v not in ds.data_vars:
                raise WeatherDataError(self.path, f"climatology file has no variable (has {sorted(map(str, ds.data_vars))})", v)
            da = ds[v]
            for dim in ("dayofyear", "hour"):
                if dim not in da.dims:
                    raise WeatherDataError(self.path, f"not a WB2 climatology: no '{dim}' dimension (dims {da.dims})", v)
            if lv:
                if "level" not in da.dims or not np.any(np.isclose(da["level"].values, float(lv))):
                    raise WeatherDataError(self.path, f"climatology has no level {lv} hPa", v)
                da = da.sel(level=float(lv), method="nearest")
            elif "level" in da.dims:
                raise WeatherDataError(self.path, "has a level dimension but the channel names no level", v)
            self.arrays.append(da.transpose("dayofyear", "hour", "latitude", "longitude"))
        first = self.arrays[0]
        doy = np.asarray(first["dayofyear"].values)
        hours = np.asarray(first["hour"].values)
        if doy.min() < 1 or doy.max() > 366:
            raise WeatherDataError(self.path, f"dayofyear outside 1..366 ({doy.min()}..{doy.max()})", "dayofyear")
        if hours.min() < 0 or hours.max() > 23:
            raise WeatherDataError(self.path, f"hour outside 0..23 ({hours.min()}..{hours.max()})", "hour")
        self.doy = {int(d): i for i, d in enumerate(doy)}
        self.hours = np.asarray(hours, int)
        self.arrays = [match_grid(a.to_dataset(name="x"), lat, lon, self.path)["x"] for a in self.arrays]
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._max = cache

    def describe(self) -> dict:
        return {"source": self.path, "kind": "wb2_file", "harmonics": None, "period": [], "hours": self.hours.tolist()}

    def __call__(self, time: np.datetime64) -> np.ndarray:
        """(C, H, W) climatology at a valid time: its calendar day of year and (nearest) hour."""
        import pandas as pd

        ts = pd.Timestamp(time)
        d, h = int(ts.dayofyear), int(ts.hour)
        if d not in self.doy:
            raise WeatherDataError(self.path, f"no dayofyear {d} (needed for valid time {ts})", "dayofyear")
        ih = int(np.argmin(np.abs((self.hours - h + 12) % 24 - 12)))
        key = (d, ih)
        if key not in self._cache:
            where = f" at dayofyear {d}, hour {int(self.hours[ih])}"
            fields = [read_values(a.isel(dayofyear=self.doy[d], hour=ih), self.path, ch, where).astype(np.float64)
                      for ch, a in zip(self.channels, self.arrays)]
            for ch, x in zip(self.channels, fields):  # a NaN would make ACC and the baseline NaN without a word
                check_finite(x, self.path, ch, where)
            self._cache[key] = np.stack(fields)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]
