"""Embedded default data: a WeatherBench2-schema zarr of synthetic global weather.

A cheap physical toy model, deterministic from a seed, with dynamics a forecaster can learn:

* a mid-latitude jet in each hemisphere whose strength and latitude follow the season;
* Rossby-like waves along the jets with zonal wavenumbers m, advected eastward at
  ``c_m = U_jet − β'/m²`` (the jet speed depends on the season, so the phase speed is predictable from
  the state and the calendar) and amplitudes that evolve as AR(1) processes (the unpredictable part);
* hydrostatic consistency: temperature from the 850–500 hPa thickness; MSLP from the 850 hPa height;
* 2 m temperature with a land–sea contrast in the diurnal cycle (local solar time) and the seasonal
  cycle, over a fixed land-sea mask and orography (static fields).

Output: variables ``geopotential`` and ``temperature`` on levels 500 and 850 hPa, ``2m_temperature``,
``mean_sea_level_pressure``, statics ``land_sea_mask`` and ``geopotential_at_surface``; dims
``(time, [level,] latitude, longitude)`` on an equiangular grid without poles (as WB2's 64×32).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from apps.weather.data import UNITS
from dualsci.io import atomic_dir

G = 9.80665
R_DRY = 287.05
LEVELS = (500, 850)
WAVENUMBERS = (2, 3, 4, 5, 6)


def grid(n_lat: int, n_lon: int) -> tuple[np.ndarray, np.ndarray]:
    """Equiangular grid without pole rows: latitude ascending (cell centres), longitude from 0°."""
    lat = -90.0 + (np.arange(n_lat) + 0.5) * 180.0 / n_lat
    lon = np.arange(n_lon) * 360.0 / n_lon
    return lat, lon


def _statics(lat: np.ndarray, lon: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    la, lo = np.meshgrid(np.radians(lat), np.radians(lon), indexing="ij")
    field = np.zeros_like(la)
    # Continents: a few smooth blobs on the sphere (distance via the dot product of unit vectors).
    xyz = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])
    for _ in range(6):
        c_lat, c_lon = rng.uniform(-0.9, 1.1), rng.uniform(0, 2 * np.pi)
        c = np.array([np.cos(c_lat) * np.cos(c_lon), np.cos(c_lat) * np.sin(c_lon), np.sin(c_lat)])
        field += np.exp((np.tensordot(c, xyz, axes=1) - 1.0) / rng.uniform(0.05, 0.15))
    lsm = (field > 0.5).astype(np.float32)
    orography = (G * 1500.0 * np.clip(field - 0.5, 0.0, None) ** 1.5 * lsm).astype(np.float32)
    return lsm, orography


def _ar1(rng: np.random.Generator, n: int, k: int, tau_hours: float, std: float) -> np.ndarray:
    """(n, k) AR(1) series with e-folding time ``tau_hours`` and stationary std ``std``."""
    phi = np.exp(-1.0 / tau_hours)
    eps = rng.standard_normal((n, k)) * std * np.sqrt(1 - phi**2)
    out = np.empty((n, k))
    out[0] = rng.standard_normal(k) * std
    # A loop over hours is cheap at these sizes (17k steps) and keeps the process exact.
    for t in range(1, n):
        out[t] = phi * out[t - 1] + eps[t]
    return out


def simulate(
    n_lat: int = 16,
    n_lon: int = 32,
    start: str = "2000-01-01",
    days: int = 731,
    seed: int = 0,
    freq_hours: int = 1,
) -> xr.Dataset:
    """Simulate the toy atmosphere in memory (use :func:`write_synthetic_zarr` for files).

    Returns:
        A normalised WB2-schema dataset (float32).
    """
    rng = np.random.default_rng(seed)
    lat, lon = grid(n_lat, n_lon)
    times = pd.date_range(start, periods=days * 24 // freq_hours, freq=f"{freq_hours}h")
    n = len(times)
    lsm, orog = _statics(lat, lon, rng)
    doy = (times.dayofyear.values - 1 + times.hour.values / 24.0) / 365.25
    season = np.cos(2 * np.pi * (doy - 0.04))  # +1 in NH winter (mid-January)
    hours = np.arange(n, dtype=np.float64) * freq_hours
    # float32 fields: the toy model does not need float64 and memory halves.
    phi = np.radians(lat).astype(np.float32)[None, :, None]
    lam = np.radians(lon).astype(np.float32)[None, None, :]

    ms = np.asarray(WAVENUMBERS, dtype=float)
    amps_n = _ar1(rng, n, len(ms), tau_hours=96.0 / freq_hours, std=1.0)
    amps_s = _ar1(rng, n, len(ms), tau_hours=96.0 / freq_hours, std=1.0)
    phase0 = rng.uniform(0, 2 * np.pi, (2, len(ms)))
    out = {k: np.empty((n, n_lat, n_lon), np.float32) for k in ("z500", "z850", "t500", "t850", "t2m", "msl")}
    for hemi, amps, sgn, sea in ((0, amps_n, 1.0, season), (1, amps_s, -1.0, -season)):
        # Jet speed (m/s) stronger in winter; jet latitude further equatorward in winter.
        u_jet = 25.0 + 10.0 * sea
        lat_jet = np.radians(45.0 - 7.0 * sea)
        radius = 6.371e6 * np.cos(lat_jet)
        # Angular phase speed (rad/hour): advection by the jet minus a Rossby retrogression ∝ 1/m².
        omega = (u_jet[:, None] * 3600.0 / radius[:, None]) * (1.0 - 6.0 / ms[None, :] ** 2)
        theta = phase0[hemi][None, :] + np.cumsum(omega * freq_hours, axis=0)
        envelope = np.exp(-(((sgn * phi) - lat_jet[:, None, None].astype(np.float32)) / np.float32(np.radians(14.0))) ** 2)
        wave = np.zeros((n, n_lat, n_lon), np.float32)
        amps32, theta32 = amps.astype(np.float32), np.mod(theta, 2 * np.pi).astype(np.float32)
        for k, m in enumerate(ms):
            wave += (amps32[:, k] / m**0.5)[:, None, None] * np.cos(np.float32(m) * lam - theta32[:, k][:, None, None])
        wave *= envelope * (sgn * phi > 0)
        out.setdefault("wave", np.zeros((n, n_lat, n_lon)))
        out["wave"] = out["wave"] + wave if hemi else wave
    wave = out.pop("wave")
    sea_nh = season.astype(np.float32)[:, None, None] * np.sign(phi)
    # Background heights (m): warm tropics, cold winter pole (stronger gradient in winter).
    h500 = 5500.0 + 380.0 * np.cos(phi) ** 2 - 120.0 * sea_nh * np.sin(np.abs(phi)) ** 2
    h850 = 1450.0 + 60.0 * np.cos(phi) ** 2 - 20.0 * sea_nh * np.sin(np.abs(phi)) ** 2
    z500 = G * (h500 + 110.0 * wave)
    z850 = G * (h850 + 55.0 * wave)
    t_layer = (z500 - z850) / (R_DRY * np.log(850.0 / 500.0))
    out["z500"][:] = z500
    out["z850"][:] = z850
    out["t500"][:] = t_layer - 14.0
    out["t850"][:] = t_layer + 9.0
    local_hour = (times.hour.values[:, None, None] + np.asarray(lon)[None, None, :] / 15.0) % 24.0
    diurnal = (np.cos(2 * np.pi * (local_hour - 15.0) / 24.0) * np.cos(phi)).astype(np.float32)
    land = lsm[None]
    out["t2m"][:] = (
        out["t850"] + 11.0 - orog[None] / G * 0.0065 + diurnal * (1.0 + 5.0 * land) - 6.0 * land * sea_nh * np.sin(np.abs(phi))
    )
    out["msl"][:] = 101325.0 + 12.0 * (z850 / G - h850) - 300.0 * land * sea_nh
    coords = {"time": times.values, "latitude": lat, "longitude": lon}
    lv = xr.DataArray(np.asarray(LEVELS, dtype=np.int64), dims="level")
    ds = xr.Dataset(
        {
            "geopotential": (("time", "level", "latitude", "longitude"), np.stack([out["z500"], out["z850"]], axis=1)),
            "temperature": (("time", "level", "latitude", "longitude"), np.stack([out["t500"], out["t850"]], axis=1)),
            "2m_temperature": (("time", "latitude", "longitude"), out["t2m"]),
            "mean_sea_level_pressure": (("time", "latitude", "longitude"), out["msl"]),
            "land_sea_mask": (("latitude", "longitude"), lsm),
            "geopotential_at_surface": (("latitude", "longitude"), orog),
        },
        coords={**coords, "level": lv},
    )
    for name in ds.data_vars:
        units, std = UNITS[name]
        ds[name].attrs.update(units=units, standard_name=std)
    ds["latitude"].attrs.update(units="degrees_north", standard_name="latitude")
    ds["longitude"].attrs.update(units="degrees_east", standard_name="longitude")
    ds["level"].attrs.update(units="hPa", long_name="pressure level")
    ds.attrs.update(
        title="dualsci synthetic WB2-schema weather (toy physical model)",
        source=f"apps.weather.synthetic seed={seed} grid={n_lat}x{n_lon} start={start} days={days}",
        Conventions="CF-1.8",
    )
    return ds


def write_synthetic_zarr(
    path: str | os.PathLike,
    n_lat: int = 16,
    n_lon: int = 32,
    start: str = "2000-01-01",
    days: int = 731,
    seed: int = 0,
    overwrite: bool = False,
    lon_major: bool = False,
    time_chunk: int = 168,
) -> Path:
    """Write the synthetic dataset as a zarr store (atomically: nothing partial on failure).

    Args:
        path: output ``.zarr`` folder.
        lon_major: store spatial dims as (longitude, latitude) like WB2's 240×121 files (readers must
            select by name).
        time_chunk: hours per zarr chunk along time.
    """
    ds = simulate(n_lat, n_lon, start, days, seed)
    if lon_major:
        ds = ds.transpose(*[d for d in ("time", "level", "longitude", "latitude") if d in ds.dims])
    enc = {}
    for name, var in ds.data_vars.items():
        chunks = tuple(min(time_chunk, s) if d == "time" else s for d, s in zip(var.dims, var.shape))
        enc[name] = {"chunks": chunks}
    enc["time"] = {"units": "hours since 1970-01-01", "dtype": "int64"}
    path = Path(path)
    with atomic_dir(path, overwrite=overwrite) as tmp:
        ds.to_zarr(tmp, mode="w", encoding=enc, consolidated=False, zarr_format=3)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    from dualsci.argtypes import positive_int

    p = argparse.ArgumentParser(prog="python -m apps.weather.synthetic", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--n-lat", type=positive_int, default=16)
    p.add_argument("--n-lon", type=positive_int, default=32)
    p.add_argument("--start", default="2000-01-01")
    p.add_argument("--days", type=positive_int, default=731)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    try:
        np.datetime64(a.start, "h")
    except ValueError:
        p.error(f"--start {a.start!r} is not an ISO date or time (e.g. 2000-01-01)")
    out = write_synthetic_zarr(a.out, a.n_lat, a.n_lon, a.start, a.days, a.seed, a.overwrite)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
