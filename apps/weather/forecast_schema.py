"""Forecast stores from other tools: normalised to the WB2 forecast schema, and checked before they are scored.

Why: forecast files in the wild spell the same layout many ways (method card §1, §13, §15.6): GraphCast files
use ``lat``/``lon``; IFS-ENS ``number``, NeuralGCM ``realization``, LaDCast ``idx`` with lead times as float hours;
WB2's own time convention renames to ``init_time``/``lead_time``; cfgrib calls the lead ``step``; CDS names
(``t2m``) and pressure in Pa appear too. :func:`normalise_forecast` maps all of these onto the schema ``forecast``
writes — dims ``time`` (init), ``realization``, ``prediction_timedelta`` (timedelta), ``[level,] latitude,
longitude`` — and says what it changed. ``evaluate`` (and the cyclone tracker) open every forecast through it;
:func:`check_forecast` (``dualsci-weather check``) reports what a store holds, what was renamed and what
cannot be scored, and ``--fix OUT`` writes the normalised store with CF metadata.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from apps.weather.data import CDS_TO_WB2, MASKED_FIELDS, UNITS, WeatherDataError

# spellings -> the schema's names (applied only when the schema's name is not already there)
FORECAST_ALIASES = {
    "lat": "latitude", "lon": "longitude",
    "init_time": "time", "lead_time": "prediction_timedelta", "step": "prediction_timedelta",
    "number": "realization", "member": "realization", "ensemble": "realization", "idx": "realization",
    "isobaricInhPa": "level", "pressure_level": "level", "plev": "level",
}
REQUIRED_DIMS = ("time", "prediction_timedelta", "latitude", "longitude")
LEAD_UNITS = {"hours": "h", "hour": "h", "h": "h", "days": "D", "day": "D", "d": "D", "minutes": "m", "minute": "m"}


def normalise_forecast(ds: xr.Dataset, source: str) -> tuple[xr.Dataset, list[str]]:
    """(the store in the schema's names and types, one note per change). Lazy; orientation (latitude order,
    longitude convention) is kept, since the scorer matches grids on the circle.

    Errors name ``source``: numeric lead times with units that are not hours, days or minutes; an init axis
    that is not a time.
    """
    notes = []
    renames = {k: v for k, v in FORECAST_ALIASES.items() if k in ds.variables and v not in ds.variables}
    if renames:
        ds = ds.rename(renames)
        notes.append("renamed " + ", ".join(f"{k} -> {v}" for k, v in renames.items()))
    names = {k: v for k, v in CDS_TO_WB2.items() if k in ds.data_vars and v not in ds.data_vars}
    if names:
        ds = ds.rename(names)
        notes.append("renamed variables " + ", ".join(f"{k} -> {v}" for k, v in names.items()))
    if "prediction_timedelta" in ds.coords and ds["prediction_timedelta"].dtype.kind in "iuf":
        raw = ds["prediction_timedelta"]
        units = str(raw.attrs.get("units", "hours")).strip().lower()
        if units not in LEAD_UNITS:
            raise WeatherDataError(source, f"lead times are numbers in {units!r}; expected hours, days or minutes "
                                           "(or timedelta values)", "prediction_timedelta")
        unit = np.timedelta64(1, LEAD_UNITS[units]).astype("timedelta64[ns]").astype(np.float64)
        ns = np.round(np.asarray(raw.values, dtype=np.float64) * unit).astype("timedelta64[ns]")
        ds = ds.assign_coords(prediction_timedelta=("prediction_timedelta", ns, {"long_name": "lead time"}))
        notes.append(f"lead times read as {units} (numbers in the file) and stored as timedelta")
    if "time" in ds.coords and not np.issubdtype(ds["time"].dtype, np.datetime64):
        raise WeatherDataError(source, f"the init axis 'time' is not a datetime (dtype {ds['time'].dtype})", "time")
    if "level" in ds.coords and ds["level"].size and float(np.max(ds["level"].values)) > 2000:
        ds = ds.assign_coords(level=np.asarray(ds["level"].values, dtype=float) / 100.0)
        notes.append("pressure levels converted from Pa to hPa")
    return ds, notes


def _fixed_orientation(ds: xr.Dataset) -> tuple[xr.Dataset, list[str]]:
    """Latitude ascending and longitude in [0, 360), as ``forecast`` writes (for ``--fix``)."""
    notes = []
    lat = ds["latitude"].values
    if lat.size > 1 and lat[0] > lat[-1]:
        ds = ds.sortby("latitude")
        notes.append("latitude sorted ascending")
    lon = np.asarray(ds["longitude"].values, dtype=float)
    if lon.size and (lon.min() < 0 or lon.max() >= 360):
        ds = ds.assign_coords(longitude=np.mod(lon, 360.0)).sortby("longitude")
        notes.append("longitude wrapped to [0, 360)")
    return ds, notes


def check_forecast(path: str | os.PathLike, scan: bool = True) -> dict:
    """What a forecast store holds and whether ``evaluate`` can score it.

    Args:
        path: zarr folder or NetCDF file.
        scan: also read every field, one init at a time, and count non-finite values outside declared masked
            fields (memory: one init of one variable).

    Returns:
        ``{"source", "ok", "errors", "notes", "warnings", "summary"}``; ``summary`` holds the variables scored,
        members, inits, leads in hours and the grid. ``ok`` is False when ``errors`` is not empty.
    """
    src = os.fspath(path)
    if not Path(src).exists():
        raise WeatherDataError(src, "forecast not found")
    try:
        raw = xr.open_zarr(src, consolidated=False) if Path(src).is_dir() else xr.open_dataset(src, chunks={})
    except Exception as exc:  # noqa: BLE001 - not zarr or NetCDF: several exception types
        raise WeatherDataError(src, f"cannot open as a forecast store ({type(exc).__name__}: {exc})") from exc
    errors, warnings = [], []
    try:
        ds, notes = normalise_forecast(raw, src)
    except WeatherDataError as exc:
        return {"source": src, "ok": False, "errors": [str(exc)], "notes": [], "warnings": [], "summary": {}}
    missing = [d for d in REQUIRED_DIMS if d not in ds.dims]
    if missing:
        errors.append(f"no {missing} dimension(s) (dims {sorted(map(str, ds.dims))})")
        return {"source": src, "ok": False, "errors": errors, "notes": notes, "warnings": warnings, "summary": {}}
    inits, leads = ds["time"].values, ds["prediction_timedelta"].values
    if len(inits) > 1 and not np.all(np.diff(inits) > np.timedelta64(0, "ns")):
        errors.append("init times are not strictly increasing")
    if len(np.unique(leads)) != len(leads) or np.any(leads < np.timedelta64(0, "ns")):
        errors.append("lead times repeat or are negative")
    scored = [str(v) for v in ds.data_vars if set(REQUIRED_DIMS) <= set(ds[v].dims)]
    others = sorted(str(v) for v in ds.data_vars if str(v) not in scored)
    if not scored:
        errors.append(f"no variable has the dims {REQUIRED_DIMS}")
    if others:
        warnings.append(f"not scored (lack the forecast dims): {others}")
    mdim = "realization" if "realization" in ds.dims else None
    extra = sorted({str(d) for v in scored for d in ds[v].dims} - set(REQUIRED_DIMS) - {"realization", "level"})
    if extra:
        errors.append(f"unexpected dimension(s) {extra} on the fields (select one value of each)")
    for v in scored:
        attrs = ds[v].attrs
        if "units" not in attrs:
            warnings.append(f"{v}: no units attribute" + (f" (WB2: {UNITS[v][0]})" if v in UNITS else ""))
    if "valid_time" not in ds.coords:
        warnings.append("no valid_time coordinate (CF; --fix adds it)")
    if scan and not errors:
        for v in scored:
            if v in MASKED_FIELDS:
                continue
            bad = 0
            for i in range(len(inits)):
                try:
                    vals = np.asarray(ds[v].isel(time=i).values)
                except Exception as exc:  # noqa: BLE001 - a damaged chunk: reported, the scan goes on
                    errors.append(f"{v}: cannot read init {str(inits[i])[:16]} ({type(exc).__name__}: {exc})")
                    break
                bad += int(vals.size - np.count_nonzero(np.isfinite(vals)))
            if bad:
                errors.append(f"{v}: {bad} NaN/inf value(s) in a field not declared as masked (an unfinished store?)")
    summary = {
        "variables": scored,
        "members": int(ds.sizes[mdim]) if mdim else 1,
        "ensemble_dim": mdim,
        "inits": len(inits),
        "first_init": str(inits[0])[:16] if len(inits) else None,
        "leads_hours": [float(x / np.timedelta64(1, "h")) for x in leads],
        "grid": [int(ds.sizes["latitude"]), int(ds.sizes["longitude"])],
        "levels": [float(x) for x in ds["level"].values] if "level" in ds.dims else [],
    }
    return {"source": src, "ok": not errors, "errors": errors, "notes": notes, "warnings": warnings, "summary": summary}


def fix_forecast(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``path`` normalised to the schema ``forecast`` writes (names, lead timedelta, latitude ascending,
    longitude [0, 360), ``valid_time``, CF attributes), as zarr or NetCDF by ``out``'s suffix; under a temporary
    name, renamed when complete. A store :func:`check_forecast` finds errors in is refused, naming them."""
    from apps.weather.sampling import HEIGHT_ATTRS, cf_encoding, height_coords, with_cf_coordinates
    from dualsci.io import atomic_dir

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: output already exists (refusing to overwrite)")
    report = check_forecast(path, scan=False)
    if not report["ok"]:
        raise WeatherDataError(os.fspath(path), "cannot fix: " + "; ".join(report["errors"]))
    src = os.fspath(path)
    raw = xr.open_zarr(src, consolidated=False) if Path(src).is_dir() else xr.open_dataset(src, chunks={})
    ds, _ = normalise_forecast(raw, src)
    ds, _ = _fixed_orientation(ds[report["summary"]["variables"]])
    order = [d for d in ("time", "realization", "prediction_timedelta", "level", "latitude", "longitude") if d in ds.dims]
    ds = ds.transpose(*order)
    ds = ds.assign_coords(valid_time=ds["time"] + ds["prediction_timedelta"])
    ds["valid_time"].attrs.update(standard_name="time", long_name="valid time")
    ds["time"].attrs.update(standard_name="forecast_reference_time", long_name="initialisation time")
    ds["prediction_timedelta"].attrs.update(standard_name="forecast_period", long_name="lead time")
    ds["latitude"].attrs.update(units="degrees_north", standard_name="latitude", axis="Y")
    ds["longitude"].attrs.update(units="degrees_east", standard_name="longitude", axis="X")
    if "realization" in ds.dims:
        ds["realization"].attrs.update(standard_name="realization", units="1")
    for v in ds.data_vars:
        if v in UNITS:
            units, std = UNITS[v]
            ds[v].attrs.setdefault("units", units)
            ds[v].attrs["standard_name"] = std
    for name, h in sorted(set(height_coords(ds.data_vars).values())):  # CF scalar height of 2 m / 10 m fields
        ds = ds.assign_coords({name: ((), np.float64(h), HEIGHT_ATTRS)})
    for v in ds.variables:
        ds[v].encoding = {}
    ds = with_cf_coordinates(ds)
    ds.attrs["history"] = (str(ds.attrs.get("history", "")) + f"\nnormalised by dualsci-weather check --fix from {src}").strip()
    if out.suffix in (".nc", ".nc4"):
        part = out.with_name(f".{out.name}.partial")
        try:
            ds.to_netcdf(part, engine="netcdf4", encoding=cf_encoding(ds))
            os.replace(part, out)
        finally:
            part.unlink(missing_ok=True)
    else:
        with atomic_dir(out) as tmp:
            ds.to_zarr(tmp, mode="w", encoding=cf_encoding(ds), consolidated=False, zarr_format=3)
    return out
