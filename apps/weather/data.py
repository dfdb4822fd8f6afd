"""One reader for WeatherBench2-style ERA5 (zarr, NetCDF, GRIB) that normalises everything it opens.

Whatever the source spells, the result has WeatherBench2 variable names, dims in the order
``([realization,] time, [level,] latitude, longitude)``, latitude ascending, longitude in [0, 360),
pressure levels in hPa and a strictly increasing ``time``. Selections (variables, levels, region,
period, 6-hourly subsampling) stay lazy (dask) so memory does not grow with the period.

Bad input raises :class:`WeatherDataError` naming the file, the variable and the problem.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import xarray as xr

from apps.weather.accumulation import accumulation_hours, derive_accumulations

Frequency = Literal["1h", "6h"]
FREQUENCIES = ("1h", "6h")

# Raw ERA5 / CDS short names (GRIB shortName and cfVarName) -> WeatherBench2 names.
CDS_TO_WB2 = {
    "z": "geopotential",
    "t": "temperature",
    "u": "u_component_of_wind",
    "v": "v_component_of_wind",
    "q": "specific_humidity",
    "w": "vertical_velocity",
    "t2m": "2m_temperature",
    "2t": "2m_temperature",
    "u10": "10m_u_component_of_wind",
    "10u": "10m_u_component_of_wind",
    "v10": "10m_v_component_of_wind",
    "10v": "10m_v_component_of_wind",
    "msl": "mean_sea_level_pressure",
    "sst": "sea_surface_temperature",
    "tp": "total_precipitation",
    "lsm": "land_sea_mask",
    "sdor": "standard_deviation_of_orography",
    "ws10": "10m_wind_speed",
    "d2m": "2m_dewpoint_temperature",
    "2d": "2m_dewpoint_temperature",
    "u100": "100m_u_component_of_wind",
    "100u": "100m_u_component_of_wind",
    "v100": "100m_v_component_of_wind",
    "100v": "100m_v_component_of_wind",
}
# Coordinate spellings seen in the wild -> WeatherBench2 / CF names.
COORD_ALIASES = {
    "lat": "latitude",
    "lon": "longitude",
    "isobaricInhPa": "level",
    "pressure_level": "level",
    "plev": "level",
    "number": "realization",
    "member": "realization",
    "ensemble": "realization",
    "idx": "realization",
}
# Fields that legitimately contain NaN (e.g. SST over land); others must be finite.
MASKED_FIELDS = frozenset({"sea_surface_temperature"})
STATIC_NAMES = frozenset(
    {"land_sea_mask", "geopotential_at_surface", "standard_deviation_of_orography", "slope_of_sub_gridscale_orography"}
)
UNITS = {
    "geopotential": ("m2 s-2", "geopotential"),
    "temperature": ("K", "air_temperature"),
    "u_component_of_wind": ("m s-1", "eastward_wind"),
    "v_component_of_wind": ("m s-1", "northward_wind"),
    "specific_humidity": ("kg kg-1", "specific_humidity"),
    "2m_temperature": ("K", "air_temperature"),
    "2m_dewpoint_temperature": ("K", "dew_point_temperature"),
    "10m_u_component_of_wind": ("m s-1", "eastward_wind"),
    "10m_v_component_of_wind": ("m s-1", "northward_wind"),
    "10m_wind_speed": ("m s-1", "wind_speed"),
    "100m_u_component_of_wind": ("m s-1", "eastward_wind"),
    "100m_v_component_of_wind": ("m s-1", "northward_wind"),
    "mean_sea_level_pressure": ("Pa", "air_pressure_at_mean_sea_level"),
    "sea_surface_temperature": ("K", "sea_surface_temperature"),
    "land_sea_mask": ("1", "land_binary_mask"),
    "geopotential_at_surface": ("m2 s-2", "surface_geopotential"),
    # metres of water over the hour (ERA5 tp) or the N hours (WB2) ending at the time stamp
    "total_precipitation": ("m", "precipitation_amount"),
    "total_precipitation_6hr": ("m", "precipitation_amount"),
    "total_precipitation_12hr": ("m", "precipitation_amount"),
    "total_precipitation_24hr": ("m", "precipitation_amount"),
}


_NEAR_SURFACE = re.compile(r"^(\d+(?:\.\d+)?)m_")  # WB2 spells the height first: 2m_temperature, 10m_u_component_of_wind


def near_surface_height(variable: str) -> float | None:
    """Height above the surface in metres that a WB2 near-surface name carries (``2m_temperature`` -> 2.0,
    ``10m_v_component_of_wind`` -> 10.0, ``100m_u_component_of_wind`` -> 100.0); None for any other name."""
    m = _NEAR_SURFACE.match(variable.partition("/")[0])
    return float(m.group(1)) if m else None


class WeatherDataError(ValueError):
    """Bad weather input; the message names the file, the variable (if any) and the problem."""

    def __init__(self, source: str | os.PathLike, problem: str, variable: str | None = None) -> None:
        where = f"{source}" + (f" [{variable}]" if variable else "")
        super().__init__(f"{where}: {problem}")
        self.source = str(source)
        self.variable = variable


def _engine_for(path: str) -> str:
    lower = path.lower().rstrip("/")
    if lower.endswith((".grib", ".grb", ".grib2", ".grb2", ".grib1")):
        return "cfgrib"
    if lower.endswith(".zarr") or (not lower.startswith(("gs://", "s3://", "http")) and Path(path).is_dir()):
        return "zarr"
    if lower.endswith((".nc", ".nc4", ".netcdf", ".h5")):
        return "netcdf"
    if "://" in lower:
        return "zarr"
    raise WeatherDataError(path, "unknown format (expected .zarr, .nc or .grib)")


def _open_raw(path: str) -> xr.Dataset:
    engine = _engine_for(path)
    if "://" not in path and not Path(path).exists():
        raise WeatherDataError(path, "no such file or folder")
    try:
        if engine == "zarr":
            if "://" in path:
                return _open_zarr_url(path)
            if (Path(path) / ".zmetadata").exists():
                return xr.open_zarr(path, chunks={}, consolidated=True)
            return xr.open_zarr(path, chunks={}, consolidated=False)
        if engine == "cfgrib":
            return _open_grib(path)
        if "://" in path:
            return _open_netcdf_url(path)
        try:
            return xr.open_dataset(path, chunks={}, engine="netcdf4")
        except (OSError, ValueError):
            return xr.open_dataset(path, chunks={}, engine="h5netcdf")
    except WeatherDataError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise WeatherDataError(path, f"cannot be opened as {engine}: {exc}") from exc


def _open_zarr_url(url: str) -> xr.Dataset:
    """A zarr store behind an fsspec URL (``gs://``, ``s3://``, ``https://``, ``memory://``, ``file://``).

    xarray hands the URL to fsspec, which picks the filesystem from the protocol (``gs://`` needs the
    ``gcsfs`` package: ``pip install dualsci[weather]``). WB2's public stores carry consolidated
    metadata (one read instead of one per array); stores without it are opened array by array.
    """
    import fsspec

    fsspec.get_filesystem_class(url.split("://", 1)[0])  # a missing protocol package fails here, named
    try:
        return xr.open_zarr(url, chunks={}, consolidated=True)
    except (KeyError, FileNotFoundError, ValueError):
        # no consolidated metadata: open array by array (fails clearly if this is not a store at all)
        return xr.open_zarr(url, chunks={}, consolidated=False)


def _open_netcdf_url(url: str) -> xr.Dataset:
    """A NetCDF-4/HDF5 file behind an fsspec URL, read lazily through a file object (h5netcdf)."""
    import fsspec

    return xr.open_dataset(fsspec.open(url, "rb").open(), chunks={}, engine="h5netcdf")


def _open_grib(path: str) -> xr.Dataset:
    import cfgrib

    # errors="raise": a truncated or damaged message fails the open (cfgrib's default logs it and fills the
    # field with NaN, which would surface later as a misleading NaN error)
    kwargs = {"indexpath": "", "errors": "raise"}
    try:
        return xr.open_dataset(path, engine="cfgrib", chunks={}, backend_kwargs=kwargs)
    except cfgrib.dataset.DatasetBuildError:
        # Heterogeneous GRIB (surface + pressure levels): one dataset per hypercube, merged by name.
        parts = cfgrib.open_datasets(path, backend_kwargs=kwargs)
        return xr.merge([_drop_grib_scalars(p) for p in parts], compat="override")


def _drop_grib_scalars(ds: xr.Dataset) -> xr.Dataset:
    drop = [c for c in ("step", "surface", "heightAboveGround", "meanSea", "entireAtmosphere") if c in ds.coords and c not in ds.dims]
    if "valid_time" in ds.coords and "valid_time" not in ds.dims and "time" in ds.dims:
        drop.append("valid_time")
    return ds.drop_vars(drop)


def normalise(ds: xr.Dataset, source: str = "<dataset>") -> xr.Dataset:
    """Rename to WB2 names, order dims, latitude ascending, longitude in [0, 360), levels in hPa.

    Args:
        ds: any ERA5/WB2/CDS-style dataset.
        source: file name used in error messages.

    Returns:
        The normalised dataset (still lazy).
    """
    ds = _drop_grib_scalars(ds)
    if "valid_time" in ds.dims and "time" not in ds.dims:
        ds = ds.rename({"valid_time": "time"})  # new CDS NetCDF layout
    if "expver" in ds.dims:
        ds = _merge_expver(ds)
    renames = {k: v for k, v in COORD_ALIASES.items() if k in ds.variables and v not in ds.variables}
    ds = ds.rename(renames)
    var_renames = {k: v for k, v in CDS_TO_WB2.items() if k in ds.data_vars and v not in ds.data_vars}
    ds = ds.rename(var_renames)
    for dim in ("latitude", "longitude"):
        if dim not in ds.dims:
            raise WeatherDataError(source, f"no {dim} dimension (dims are {sorted(map(str, ds.dims))})")
    if "level" in ds.dims:
        levels = np.asarray(ds["level"].values, dtype=float)
        if levels.max() > 2000:  # stored in Pa
            ds = ds.assign_coords(level=levels / 100.0)
        ds["level"].attrs.update(units="hPa", long_name="pressure level", positive="down")
    # Longitude in [0, 360): an explicit, safe normalisation (sorting keeps the data lazy).
    lon = np.asarray(ds["longitude"].values, dtype=float)
    if np.any(np.isnan(lon)):
        raise WeatherDataError(source, "longitude has NaN", "longitude")
    wrapped = np.mod(lon, 360.0)
    if len(np.unique(np.round(wrapped, 6))) != len(wrapped):
        raise WeatherDataError(source, "longitude has duplicate points after wrapping to [0, 360)", "longitude")
    ds = ds.assign_coords(longitude=wrapped).sortby("longitude")
    ds = _roll_regional_longitudes(ds)
    lat = np.asarray(ds["latitude"].values, dtype=float)
    if np.any(np.abs(lat) > 90.0):
        raise WeatherDataError(source, "latitude outside [-90, 90]", "latitude")
    if len(np.unique(lat)) != len(lat):
        raise WeatherDataError(source, "latitude has duplicate rows", "latitude")
    ds = ds.sortby("latitude")
    ds["latitude"].attrs.update(units="degrees_north", standard_name="latitude")
    ds["longitude"].attrs.update(units="degrees_east", standard_name="longitude")
    if "time" in ds.dims:
        times = ds["time"].values
        if not np.issubdtype(times.dtype, np.datetime64):
            raise WeatherDataError(source, f"time is not a datetime axis (dtype {times.dtype})", "time")
        if len(times) > 1 and not np.all(np.diff(times) > np.timedelta64(0, "ns")):
            bad = int(np.argmin(np.diff(times) > np.timedelta64(0, "ns")))
            raise WeatherDataError(
                source, f"time is not strictly increasing (at index {bad + 1}: {times[bad]} -> {times[bad + 1]})", "time"
            )
    order = ("realization", "time", "level", "latitude", "longitude")
    out = {}
    for name, var in ds.data_vars.items():
        # Climatology-like axes (month, hour, dayofyear, ...) lead; the canonical axes follow by name.
        extra = [d for d in var.dims if d not in order]
        dims = extra + [d for d in order if d in var.dims]
        out[name] = var.transpose(*dims)
        if name in UNITS:
            units, std = UNITS[name]
            out[name].attrs.setdefault("units", units)
            out[name].attrs["standard_name"] = std
    return ds.assign(out)


def _merge_expver(ds: xr.Dataset) -> xr.Dataset:
    """One state per time from a legacy CDS ERA5 + ERA5T download.

    Such files carry an ``expver`` axis: final ERA5 (expver 1) holds the older times and NaN elsewhere,
    the preliminary ERA5T (expver 5) the recent ones. Each time takes the lowest expver that has a value
    (the final release wins where both have one); the result stays lazy.
    """
    codes = [int(str(v).strip()) for v in np.asarray(ds["expver"].values)]
    order = [int(i) for i in np.argsort(codes, kind="stable")]
    merged = ds.isel(expver=order[0])
    for i in order[1:]:
        merged = merged.combine_first(ds.isel(expver=i))
    return merged.drop_vars("expver", errors="ignore")


def _roll_regional_longitudes(ds: xr.Dataset) -> xr.Dataset:
    """Keep a regional box that crosses 0° contiguous (e.g. UK 350..359.75, 0..2) after wrapping.

    A global grid has no gap larger than its spacing and stays sorted from 0°; a regional one starts
    right after its largest gap so that columns remain geographically ordered west to east.
    """
    lon = np.asarray(ds["longitude"].values, dtype=float)
    if len(lon) < 3:
        return ds
    gaps = np.diff(np.concatenate([lon, lon[:1] + 360.0]))
    spacing = np.median(gaps)
    big = int(np.argmax(gaps))
    if gaps[big] > 1.5 * spacing and big != len(lon) - 1:
        return ds.roll(longitude=-(big + 1), roll_coords=True)
    return ds


_PERIOD = re.compile(r"^(.*?):(?=\d{4}-|$)(.*)$")  # split at the ':' before the END date (times may hold ':')


def split_period(spec: str) -> tuple[str | None, str | None]:
    """``"START:END"`` -> ``(START, END)`` strings (either may be empty -> None), inclusive.

    START and END are ISO dates or times (``2019-03-01``, ``2019-03-10T18``, ``2019-03-10T18:00``); a date
    alone as END means the whole day (pandas' partial-string slicing).
    """
    m = _PERIOD.match(spec.strip())
    if m is None:
        raise ValueError(f"period {spec!r} must be 'START:END' (e.g. 2019-03-01:2019-03-18 or 2019-03-01T06:2019-03-10T18)")
    start, end = m.group(1), m.group(2)
    return (start or None, end or None)


def period_end_hour(end: str) -> np.datetime64:
    """The last hour an inclusive period END covers: END itself if it has a time, else 23 UTC of that day."""
    if "T" in end:
        return np.datetime64(end, "h")
    return np.datetime64(end, "D").astype("datetime64[h]") + np.timedelta64(23, "h")


def trim_training_overlap(train: tuple[str | None, str | None], test: tuple[str | None, str | None],
                          max_lead_hours: int) -> tuple[tuple[str | None, str | None], str | None]:
    """Cut the training period (inclusive ``(START, END)``, None = open) so it no longer overlaps the test.

    A user who writes half-open periods (``--train 03-01:03-17 --test 03-17:03-24``) means disjoint ones; a
    test period inside the training one would be scored on data the model trained on. The training period
    keeps its part before the test period (ending the hour before the test starts) or, when the test comes
    first, its part after the test's verification (``max_lead_hours`` after the test's last hour).

    Returns:
        ``(train, note)``: the training period to use and a one-line note saying what was cut (None when
        the periods are disjoint). The period is returned unchanged when nothing of it is left; the
        caller's "too short" check then names it.
    """
    first, last = np.datetime64("0001-01-01T00", "h"), np.datetime64("9999-12-31T23", "h")
    tr0, te0 = (np.datetime64(p[0], "h") if p[0] else first for p in (train, test))
    tr1, te1 = (period_end_hour(p[1]) if p[1] else last for p in (train, test))
    if not (te0 <= tr1 and tr0 <= te1):
        return train, None
    hour = np.timedelta64(1, "h")
    if tr0 < te0:  # the training period starts first: keep what lies before the test
        cut = (train[0], str(te0 - hour))
    else:  # the test starts first: keep what lies after its last verification time
        cut = (str(te1 + np.timedelta64(max_lead_hours, "h") + hour), train[1])
    c0 = np.datetime64(cut[0], "h") if cut[0] else first
    c1 = period_end_hour(cut[1]) if cut[1] else last
    if c0 > c1:
        return train, None
    name = lambda p: f"{p[0] or ''}:{p[1] or ''}"  # noqa: E731
    return cut, (f"the test period {name(test)} overlaps the training period {name(train)}: "
                 f"training on {name(cut)} (never on the test's truth)")


def verification_limit(source: str, train: tuple[str | None, str | None], test: tuple[str | None, str | None]) -> np.datetime64 | None:
    """Refuse a test period that overlaps the training one (inclusive ``(START, END)``, None = open).

    Returns:
        The last hour the test's verification may use: the hour before training starts when the test
        period comes first (its 48 h truth must not come from the training period), else None.
    """
    first, last = np.datetime64("0001-01-01T00", "h"), np.datetime64("9999-12-31T23", "h")
    tr0, te0 = (np.datetime64(p[0], "h") if p[0] else first for p in (train, test))
    tr1, te1 = (period_end_hour(p[1]) if p[1] else last for p in (train, test))
    if te0 <= tr1 and tr0 <= te1:
        raise WeatherDataError(source, f"test period {test[0] or ''}:{test[1] or ''} overlaps the training period "
                                       f"{train[0] or ''}:{train[1] or ''}: it would be scored on data the model trained on "
                                       "(choose disjoint periods)", "time")
    return tr0 - np.timedelta64(1, "h") if te1 < tr0 else None


def verifiable_inits(times: np.ndarray, start, end, leads: Sequence[int], history_hours: Sequence[int] = (),
                     truth_end=None, init_hours: Sequence[int] = (0, 12)) -> list[np.datetime64]:
    """Init times in ``[start, end]`` (hours of day `init_hours`) with every state a forecast needs present.

    Needed: the states `history_hours` before the init and the truth at every lead (hours after it), all
    found in `times` by time (a gap drops the init, never shifts it), the last lead not after `truth_end`
    (default: the last time), so every lead is scored on the same inits.

    Returns:
        ``datetime64[h]`` inits, ascending.
    """
    hours = np.asarray(times).astype("datetime64[h]").astype(np.int64)
    have = set(hours.tolist())
    last = hours[-1] if truth_end is None else np.datetime64(truth_end, "h").astype(np.int64)
    lo, hi = (np.datetime64(t, "h").astype(np.int64) for t in (start, end))
    out = []
    for t in sorted(h for h in have if lo <= h <= hi and h % 24 in init_hours):
        needed = [t - b for b in history_hours] + [t + lead for lead in leads]
        if t + max(leads) <= last and all(n in have for n in needed):
            out.append(np.datetime64(int(t), "h"))
    return out


def open_weather(
    path: str | os.PathLike,
    variables: Sequence[str] | None = None,
    levels: Sequence[float] | None = None,
    region: dict | None = None,
    period: tuple[str | None, str | None] | None = None,
    frequency: Frequency = "1h",
) -> xr.Dataset:
    """Open and normalise a weather dataset, then select lazily.

    Args:
        path: zarr folder/URL, NetCDF file or GRIB file.
        variables: WB2 (or CDS) names to keep; None keeps all. Statics are kept when present. An N-hour
            precipitation accumulation (``total_precipitation_6hr``) the file lacks is derived from hourly
            ``total_precipitation`` or a shorter accumulation (``apps.weather.accumulation``).
        levels: pressure levels in hPa; every one must exist.
        region: ``{"lat": (south, north), "lon": (west, east)}`` in degrees; longitudes may wrap.
        period: ``(start, end)`` strings, inclusive; None = all.
        frequency: ``"1h"`` keeps every time, ``"6h"`` keeps 00/06/12/18 UTC.

    Returns:
        Normalised lazy dataset.
    """
    if frequency not in FREQUENCIES:
        raise ValueError(f"frequency={frequency!r} is not one of {FREQUENCIES}")
    source = os.fspath(path)
    ds = normalise(_open_raw(source), source)
    if variables is not None:
        wanted = [CDS_TO_WB2.get(v, v) for v in variables]
        ds = derive_accumulations(ds, [v for v in wanted if v not in ds.data_vars], source)
        missing = [v for v in wanted if v not in ds.data_vars]
        if missing:
            raise WeatherDataError(source, f"missing variable(s); available: {sorted(map(str, ds.data_vars))}", ",".join(missing))
        statics = sorted(str(v) for v in ds.data_vars if v in STATIC_NAMES and v not in wanted)
        ds = ds[wanted + statics]  # the caller's order
    else:
        # Name order, not the store's: a zarr store opened without consolidated metadata lists its arrays in
        # file-system order, which differs between copies of one store, and the order fixes which network input
        # each channel and static field feeds (the same data and seed would train another model from a copy).
        ds = ds[sorted(map(str, ds.data_vars))]
    if levels is not None:
        if "level" not in ds.dims:
            raise WeatherDataError(source, f"levels {list(levels)} requested but the data has no level dimension", "level")
        have = set(np.asarray(ds["level"].values, dtype=float).tolist())
        missing_lv = [lv for lv in levels if float(lv) not in have]
        if missing_lv:
            raise WeatherDataError(source, f"missing pressure level(s) {missing_lv}; available {sorted(have)}", "level")
        ds = ds.sel(level=[float(lv) for lv in levels])
    if region is not None:
        ds = select_region(ds, region)
    if period is not None:
        start, end = period
        ds = ds.sel(time=slice(start, end))
        if ds.sizes.get("time", 0) == 0:
            raise WeatherDataError(source, f"no times in period {start}..{end}", "time")
    if frequency == "6h" and "time" in ds.dims:
        hours = ds["time"].dt.hour.values
        ds = ds.isel(time=np.flatnonzero(hours % 6 == 0))
    ds.attrs["source_path"] = source
    return ds


def select_region(ds: xr.Dataset, region: dict) -> xr.Dataset:
    """Select ``{"lat": (south, north), "lon": (west, east)}``; longitudes in any convention, may wrap."""
    out = ds
    if "lat" in region:
        south, north = region["lat"]
        out = out.sel(latitude=slice(south, north))
    if "lon" in region:
        west, east = (np.mod(region["lon"][0], 360.0), np.mod(region["lon"][1], 360.0))
        lon = out["longitude"].values
        keep = (lon >= west) & (lon <= east) if west <= east else (lon >= west) | (lon <= east)
        idx = np.flatnonzero(keep)
        if west > east:  # wrap: western part first so columns stay geographically ordered
            idx = np.concatenate([np.flatnonzero(lon >= west), np.flatnonzero(lon <= east)])
        out = out.isel(longitude=idx)
    return out


def _describe_axis(values: np.ndarray) -> str:
    return f"{len(values)} from {float(values[0]):g} to {float(values[-1]):g}" if len(values) else "empty"


def match_grid(ds: xr.Dataset, lat: Sequence[float], lon: Sequence[float], source: str = "<dataset>",
               expected: str = "the checkpoint") -> xr.Dataset:
    """Return ``ds`` on exactly the grid (lat, lon): equal, or a subset of its points (e.g. a model
    trained on a cropped box); otherwise a :class:`WeatherDataError` naming both grids' coordinates
    (``expected`` says whose grid ``(lat, lon)`` is)."""
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    have_lat, have_lon = ds["latitude"].values, ds["longitude"].values
    if len(have_lat) == len(lat) and len(have_lon) == len(lon) and np.allclose(have_lat, lat) and np.allclose(have_lon, lon):
        return ds
    ilat = [int(np.argmin(np.abs(have_lat - v))) for v in lat]
    ilon = [int(np.argmin(np.abs((have_lon - v + 180.0) % 360.0 - 180.0))) for v in lon]
    # longitudes compared on the circle: a grid given in [-180, 180) (e.g. a forecast store) matches [0, 360)
    lon_off = (have_lon[ilon] - lon + 180.0) % 360.0 - 180.0 if len(have_lon) else lon
    if len(have_lat) and np.allclose(have_lat[ilat], lat, atol=1e-6) and np.allclose(lon_off, 0.0, atol=1e-6):
        return ds.isel(latitude=ilat, longitude=ilon)
    raise WeatherDataError(
        source, f"grid (latitude {_describe_axis(have_lat)}; longitude {_describe_axis(have_lon)}) does not match "
                f"{expected}'s grid (latitude {_describe_axis(lat)}; longitude {_describe_axis(lon)}), nor contains it",
    )


def crop_to_multiple(ds: xr.Dataset, multiple: int) -> xr.Dataset:
    """Drop trailing rows/columns so both spatial sizes divide ``multiple`` (patching needs it)."""
    h = ds.sizes["latitude"] // multiple * multiple
    w = ds.sizes["longitude"] // multiple * multiple
    if h == 0 or w == 0:
        raise WeatherDataError(ds.attrs.get("source_path", "<dataset>"), f"grid smaller than the patch size {multiple}")
    return ds.isel(latitude=slice(0, h), longitude=slice(0, w))


def static_fields(ds: xr.Dataset) -> xr.Dataset:
    """The time-independent fields (land-sea mask, orography, ...) of a normalised dataset."""
    names = [v for v in ds.data_vars if "time" not in ds[v].dims]
    return ds[names]


def dynamic_variables(ds: xr.Dataset) -> list[str]:
    return [str(v) for v in ds.data_vars if "time" in ds[v].dims]


def channel_names(ds: xr.Dataset, variables: Iterable[str] | None = None) -> list[str]:
    """Variable-major, then level channel names, e.g. ``geopotential/500``, ``2m_temperature``."""
    names = []
    for v in variables if variables is not None else dynamic_variables(ds):
        if "level" in ds[v].dims:
            names += [f"{v}/{int(lv) if float(lv).is_integer() else lv}" for lv in ds["level"].values]
        else:
            names.append(v)
    return names


def channel_levels(channels: Iterable[str]) -> list[float] | None:
    """The pressure levels named by channels like ``geopotential/500`` (sorted), or None when there are none."""
    levels = sorted({float(lv) for _, _, lv in (ch.partition("/") for ch in channels) if lv})
    return levels or None


def check_finite(values: np.ndarray, source: str, variable: str, where: str = "") -> None:
    """Raise if a non-masked field has NaN/inf (masked fields such as SST may); ``where`` adds context."""
    if variable.split("/")[0] in MASKED_FIELDS:
        return
    if not np.all(np.isfinite(values)):
        n = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        hint = ""
        if accumulation_hours(variable.split("/")[0]) is not None:
            hint = (" (an accumulation has no value until its whole window lies in the file, nor in a window with a "
                    "missing hour: start the period later or fill the gap)")
        raise WeatherDataError(source, f"{n} NaN/inf value(s) in a field not declared as masked{where}{hint}", variable)


_GRID_DIMS = ("time", "level", "latitude", "longitude")


def _grid_only(da: xr.DataArray, source: str, name: str) -> xr.DataArray:
    """Drop extra dims of length 1 (e.g. a CDS ``number`` of one member); any longer one is an error."""
    extra = [d for d in da.dims if d not in _GRID_DIMS]
    longer = {str(d): int(da.sizes[d]) for d in extra if da.sizes[d] != 1}
    if longer:
        raise WeatherDataError(source, f"unexpected dimension(s) {longer} besides {_GRID_DIMS}: select one "
                                       "(member, experiment, ...) before using it as a state", name)
    return da.isel({d: 0 for d in extra})


def read_values(da: xr.DataArray, source: str, name: str, where: str = "") -> np.ndarray:
    """Load a (lazy) array; a reading error (e.g. a corrupt zarr chunk) is re-raised naming file and variable."""
    try:
        return np.asarray(da.values)
    except Exception as exc:  # noqa: BLE001 - re-raised with file and variable named
        raise WeatherDataError(source, f"cannot read data{where} ({type(exc).__name__}: {exc})", name) from exc


def load_statics(ds: xr.Dataset, names: Sequence[str]) -> np.ndarray:
    """Static fields as one array ``(S, H, W)`` float64, read and checked like :func:`load_block`."""
    source = ds.attrs.get("source_path", "<dataset>")
    out = []
    missing = [n for n in names if n not in ds.data_vars]
    if missing:
        raise WeatherDataError(source, "static field(s) used in training are missing", ",".join(missing))
    for name in names:
        arr = read_values(_grid_only(ds[name], source, name), source, name).astype(np.float64)
        check_finite(arr, source, name)
        out.append(arr)
    return np.stack(out) if out else np.zeros((0, ds.sizes["latitude"], ds.sizes["longitude"]))


def load_block(ds: xr.Dataset, channels: Sequence[str], time_index: slice | np.ndarray) -> np.ndarray:
    """Load channels at some times as one array ``(T, C, H, W)`` float32, checking finiteness.

    Reading errors (e.g. a corrupt zarr chunk) are re-raised naming the file and the variable.
    """
    import dask

    source = ds.attrs.get("source_path", "<dataset>")
    parts = []
    loaded: dict[str, xr.DataArray] = {}
    # One read per variable (all its levels at once), in the calling thread: dask's thread pool only
    # adds contention for these small blocks.
    with dask.config.set(scheduler="synchronous"):
        for ch in channels:
            var, _, lv = ch.partition("/")
            if var not in ds.data_vars:
                raise WeatherDataError(source, f"missing variable; available: {sorted(map(str, ds.data_vars))}", ch)
            if var not in loaded:
                da = _grid_only(ds[var], source, ch).isel(time=time_index)
                loaded[var] = da.copy(data=read_values(da, source, ch))
            da = loaded[var].sel(level=float(lv)) if lv else loaded[var]
            arr = np.asarray(da.values, dtype=np.float32)
            check_finite(arr, source, ch)
            parts.append(arr)
    return np.stack(parts, axis=1)
