"""Precipitation accumulations over N hours (``total_precipitation_6hr``, ``_24hr``) derived as WeatherBench2 does.

Why: WB2's stores carry ``total_precipitation_6hr``/``_24hr``; a raw ERA5 download (CDS ``tp``) carries the
hourly accumulation ``total_precipitation`` (metres of water in the hour ending at the time stamp). Asking the
reader for ``total_precipitation_{N}hr`` on such a file derives it lazily:

* from hourly ``total_precipitation``: the sum of the N hourly values ending at each time (WB2's
  ``PrecipitationAccumulation`` on ERA5; LaDCast's "rolling 6-h sum");
* or from a shorter WB2 accumulation ``total_precipitation_{M}hr`` with M dividing N: the sum of the N/M values
  M hours apart ending at each time (WB2's ``AggregatePrecipitationAccumulation``);

then negatives (GRIB packing noise in ERA5's ``tp``) are set to 0, as WB2 does. The window is taken by time, not
by index: the source is laid on a regular grid first, so a missing hour leaves NaN in every window holding it
rather than silently shortening or shifting the window. The first N − M hours of a file have no complete window
and are NaN too; the reader's finiteness check names them when a period asks for them.
"""

from __future__ import annotations

import re

import numpy as np
import xarray as xr

ACCUMULATION = re.compile(r"^total_precipitation_(\d+)hr$")
HOURLY_SOURCE = "total_precipitation"


def accumulation_hours(name: str) -> int | None:
    """N of ``total_precipitation_{N}hr``; None for any other name."""
    m = ACCUMULATION.match(name)
    return int(m.group(1)) if m else None


def _source_for(ds: xr.Dataset, hours: int) -> tuple[str, int] | None:
    """The longest accumulation in ``ds`` whose length divides ``hours`` (shorter than it), hourly last."""
    options = [(str(v), accumulation_hours(str(v))) for v in ds.data_vars]
    options = [(v, m) for v, m in options if m is not None and m < hours and hours % m == 0]
    if HOURLY_SOURCE in ds.data_vars:
        options.append((HOURLY_SOURCE, 1))
    return max(options, key=lambda o: o[1]) if options else None


def derive_accumulations(ds: xr.Dataset, names: list[str], source: str) -> xr.Dataset:
    """``ds`` with each of ``names`` that is an N-hour accumulation it lacks derived from one it has (lazy).

    Names that are no accumulation, or have no source in ``ds``, are left for the caller's "missing variable"
    error. A source whose times are not on its own M-hour grid is an error naming the file.
    """
    from apps.weather.data import WeatherDataError

    out = {}
    for name in names:
        hours = accumulation_hours(name)
        found = _source_for(ds, hours) if hours is not None and name not in ds.data_vars else None
        if found is None:
            continue
        src, step = found
        da = ds[src]
        times = ds["time"].values.astype("datetime64[h]")
        grid = np.arange(times[0], times[-1] + np.timedelta64(1, "h"), np.timedelta64(step, "h"))
        off_grid = np.setdiff1d(times, grid)
        if off_grid.size:
            raise WeatherDataError(source, f"cannot derive {name}: {src} holds {step}-hour accumulations, but time "
                                           f"{off_grid[0]} is off its {step}-hour grid", src)
        regular = da.reindex(time=grid.astype(da["time"].dtype))  # a missing hour -> NaN in its windows
        summed = regular.rolling(time=hours // step, min_periods=hours // step).sum()
        summed = xr.where(summed < 0, 0.0, summed).sel(time=ds["time"].values)  # NaN < 0 is False: NaN stays
        out[name] = summed.transpose(*da.dims).assign_attrs(
            units=da.attrs.get("units", "m"), standard_name="precipitation_amount",
            long_name=f"total precipitation accumulated over the {hours} hours ending at the time stamp",
            derived_from=f"sum of {hours // step} value(s) of {src} {step} h apart, negatives set to 0 (as WeatherBench2)",
            cell_methods=f"time: sum (interval: {step} hour)",
            first_complete=str(grid[hours // step - 1]),  # the first time whose whole window lies in the file
        )
    return ds.assign(out) if out else ds
