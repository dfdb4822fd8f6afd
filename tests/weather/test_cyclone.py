"""Cyclone tracker on a planted vortex moving across the date line."""

from __future__ import annotations

import numpy as np
import pytest

from apps.weather.cyclone import strike_probability, track, track_ensemble, track_error_km
from apps.weather.metrics import great_circle_km


def _vortex_fields(path, lat, lon, depth=3000.0, radius_deg=6.0, rng=None):
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    out = []
    for clat, clon in path:
        d = great_circle_km(clat, clon, la, lo) / 111.0
        f = 101000.0 + 5.0 * la - depth * np.exp(-((d / radius_deg) ** 2))
        if rng is not None:
            f = f + rng.normal(0, 20.0, f.shape)
        out.append(f)
    return np.stack(out)


def test_tracks_planted_vortex_across_dateline():
    lat = np.arange(-30.0, 60.1, 1.5)
    lon = np.arange(0.0, 360.0, 1.5)
    truth = np.array([(15.0 + 1.5 * t, (354.0 + 3.0 * t) % 360) for t in range(6)])
    fields = _vortex_fields(truth, lat, lon)
    got = track(fields, lat, lon, start=(16.0, 355.0))
    assert np.all(np.isfinite(got))
    err = track_error_km(got, truth)
    assert err.max() < 1.0  # on-grid centres are found exactly
    # ensemble: members displaced; the mean-field track and strike probability are sensible
    rng = np.random.default_rng(0)
    members = np.stack([_vortex_fields(truth + [0.0, 1.5 * (m - 2)], lat, lon, rng=rng) for m in range(5)])
    tracks, mean_track = track_ensemble(members, lat, lon, start=(16.0, 355.0))
    assert tracks.shape == (5, 6, 2) and np.all(np.isfinite(tracks))
    assert track_error_km(mean_track, truth).max() < 200.0
    p = strike_probability(tracks, lat, lon, radius_km=300.0)
    j, i = np.argmin(np.abs(lat - 18.0)), np.argmin(np.abs(lon - 0.0))
    assert p[j, i] == 1.0
    assert p[np.argmin(np.abs(lat - 50.0)), np.argmin(np.abs(lon - 180.0))] == 0.0


def test_lost_track_is_nan():
    lat = np.arange(-30.0, 30.1, 1.5)
    lon = np.arange(0.0, 360.0, 1.5)
    flat = np.full((3, lat.size, lon.size), 101000.0) + lat[None, :, None] * 10.0  # monotone in lat: no minimum
    got = track(flat, lat, lon, start=(0.0, 100.0))
    assert np.all(np.isnan(got))


def test_track_verb_on_forecast_store(tmp_path):
    import json

    import pandas as pd
    import xarray as xr

    from apps.weather.cli import main

    lat = np.arange(-30.0, 60.1, 1.5)
    lon = np.arange(0.0, 360.0, 1.5)
    truth_path = np.array([(15.0 + 1.5 * t, 30.0 + 3.0 * t) for t in range(5)])
    members = np.stack([_vortex_fields(truth_path + [0.0, 1.5 * (m - 1)], lat, lon) for m in range(3)])  # (M, T, H, W)
    inits = pd.DatetimeIndex(["2020-09-01T00"])
    leads = (np.arange(5) * 6).astype("timedelta64[h]").astype("timedelta64[ns]")
    fc = xr.Dataset({"mean_sea_level_pressure": (("time", "realization", "prediction_timedelta", "latitude", "longitude"), members[None].astype("f4"))},
                    coords={"time": inits, "realization": np.arange(3), "prediction_timedelta": leads, "latitude": lat, "longitude": lon})
    fc = fc.assign_coords(valid_time=(("time", "prediction_timedelta"), inits.values[:, None] + leads[None]))
    fc.to_zarr(tmp_path / "fc.zarr", consolidated=False, zarr_format=3)
    truth = xr.Dataset({"msl": (("time", "latitude", "longitude"), _vortex_fields(truth_path, lat, lon).astype("f4"))},
                       coords={"time": inits[0] + pd.to_timedelta(np.arange(5) * 6, "h"), "latitude": lat, "longitude": lon})
    truth.to_netcdf(tmp_path / "truth.nc")
    res = main(["track", "--forecast", str(tmp_path / "fc.zarr"), "--start", "15,30", "--truth", str(tmp_path / "truth.nc"), "--out", str(tmp_path / "t.json")])
    assert max(res["mean_field_error_km"]) < 1.0  # symmetric displacements: the mean field is centred
    assert max(res["member_error_km"][0]) == pytest.approx(great_circle_km(15.0, 30.0, 15.0, 28.5), rel=0.5)
    assert json.loads((tmp_path / "t.json").read_text())["radius_km"] == 300.0
