"""Cyclone tracker on a planted vortex moving across the date line."""

from __future__ import annotations

import numpy as np
import pytest

from apps.weather.cyclone import along_cross_track_km, motion_bearing, strike_probability, track, track_ensemble, track_error_km
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
    # members 0 / 2 lag / lead the observed (north-eastward) track: along-track errors of opposite sign
    assert all(v < 0 for v in res["member_along_km"][0]) and all(v > 0 for v in res["member_along_km"][2])
    assert np.allclose(res["member_along_km"][1], 0.0, atol=1.0) and len(res["mean_field_cross_km"]) == 5
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "t.json").read_text())["radius_km"] == 300.0
    # the evaluation report draws the tracks over the strike-probability map
    from apps.weather.evaluate import evaluate

    result = evaluate(tmp_path / "fc.zarr", tmp_path / "truth.nc", tmp_path / "eval", track_start=(15.0, 30.0))
    assert result["cyclone"]["member_cross_km"][1] == pytest.approx([0.0] * 5, abs=1.0)
    assert "figs/tracks.png" in (tmp_path / "eval" / "report.html").read_text()
    assert (tmp_path / "eval" / "figs" / "tracks.png").exists()


def test_along_cross_track_signs_on_known_displacements():
    """Eastward track on the equator: ahead = +along, north = left (cross < 0); errors are great-circle km."""
    truth = np.array([(0.0, (350.0 + 3.0 * t) % 360) for t in range(5)])
    assert np.allclose(np.degrees(motion_bearing(truth)), 90.0)
    km = great_circle_km(0.0, 0.0, 0.0, 1.5)
    at, xt = along_cross_track_km(truth + [0.0, 1.5], truth)
    assert np.allclose(at, km, rtol=1e-6) and np.allclose(xt, 0.0, atol=1e-6)
    at, xt = along_cross_track_km(truth - [0.0, 1.5], truth)
    assert np.allclose(at, -km, rtol=1e-6)
    at, xt = along_cross_track_km(truth + [1.5, 0.0], truth)
    assert np.allclose(xt, -great_circle_km(0.0, 0.0, 1.5, 0.0), rtol=1e-6) and np.allclose(at, 0.0, atol=1e-6)
    # northward track: east of it is right of the motion
    truth_n = np.array([(10.0 + 2.0 * t, 120.0) for t in range(4)])
    at, xt = along_cross_track_km(truth_n + [0.0, 1.5], truth_n)
    assert np.all(xt > 0) and np.allclose(at, 0.0, atol=2.0)  # along ≈ 0 (a parallel is not a great circle)
    assert np.allclose(xt, great_circle_km(truth_n[:, 0], 120.0, truth_n[:, 0], 121.5), rtol=1e-3)
    # a diagonal displacement splits into both parts with along² + cross² ≈ total²
    diag = truth + [1.5, 1.5]
    at, xt = along_cross_track_km(diag, truth)
    assert np.all(at > 0) and np.all(xt < 0)
    assert np.allclose(np.hypot(at, xt), track_error_km(diag, truth), rtol=1e-3)
    lost = truth + [0.0, 1.5]
    lost[2] = np.nan
    at, _ = along_cross_track_km(lost, truth)
    assert np.isnan(at[2]) and np.isfinite(at[[0, 1, 3, 4]]).all()


def test_planted_vortex_displacement_gives_known_along_cross_errors():
    """Planted vortex moving NE across 0°: members displaced ahead/behind/left/right are classified so."""
    lat = np.arange(-30.0, 60.1, 1.5)
    lon = np.arange(0.0, 360.0, 1.5)
    truth = np.array([(15.0 + 1.5 * t, (354.0 + 1.5 * t) % 360) for t in range(6)])
    shifts = {"ahead": [1.5, 1.5], "behind": [-1.5, -1.5], "left": [1.5, -1.5], "right": [-1.5, 1.5]}
    members = np.stack([_vortex_fields(truth + v, lat, lon) for v in shifts.values()])
    tracks, mean_track = track_ensemble(members, lat, lon, start=(16.0, 355.0))
    obs = track(_vortex_fields(truth, lat, lon), lat, lon, start=(16.0, 355.0))
    res = {k: along_cross_track_km(tracks[i], obs) for i, k in enumerate(shifts)}
    tot = np.array([track_error_km(tracks[i], obs) for i in range(4)])
    assert np.all(np.isfinite(tot)) and np.all(tot > 150)
    assert np.all(res["ahead"][0] > 0.9 * tot[0]) and np.all(np.abs(res["ahead"][1]) < 0.2 * tot[0])
    assert np.all(res["behind"][0] < -0.9 * tot[1])
    assert np.all(res["left"][1] < -0.9 * tot[2]) and np.all(np.abs(res["left"][0]) < 0.2 * tot[2])
    assert np.all(res["right"][1] > 0.9 * tot[3])
    # symmetric members: the mean-field vortex sits on the observed track
    at, xt = along_cross_track_km(mean_track, obs)
    assert np.nanmax(np.abs(at)) < 120 and np.nanmax(np.abs(xt)) < 120


def test_track_verb_bad_input_and_no_cyclone(tmp_path):
    """No minimum near the start (the map crashed in pcolormesh after the JSON was written), a corrupt chunk of the
    store (was a traceback), a truth without the valid times (was a KeyError): a map, or one error naming the file."""
    import pandas as pd
    import xarray as xr

    from apps.weather.cli import main
    from apps.weather.data import WeatherDataError

    lat, lon = np.arange(-30.0, 30.1, 3.0), np.arange(0.0, 360.0, 3.0)
    flat = np.full((2, 3, lat.size, lon.size), 101000.0) + lat[None, None, :, None] * 10.0  # monotone in lat: no minimum
    leads = (np.arange(3) * 6).astype("timedelta64[h]").astype("timedelta64[ns]")
    fc = xr.Dataset({"mean_sea_level_pressure": (("time", "realization", "prediction_timedelta", "latitude", "longitude"), flat[None].astype("f4"))},
                    coords={"time": pd.DatetimeIndex(["2020-09-01T00"]), "realization": [0, 1], "prediction_timedelta": leads,
                            "latitude": lat, "longitude": lon})
    fc.to_zarr(tmp_path / "fc.zarr", consolidated=False, zarr_format=3, encoding={"mean_sea_level_pressure": {"chunks": (1, 1, 3, 21, 120)}})
    res = main(["track", "--forecast", str(tmp_path / "fc.zarr"), "--start", "0,100", "--out", str(tmp_path / "t.json")])
    assert np.all(np.isnan(np.asarray(res["mean_field_track"], float))) and (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    late = xr.Dataset({"msl": (("time", "latitude", "longitude"), flat[0].astype("f4"))},
                      coords={"time": pd.DatetimeIndex(["2020-09-02T00", "2020-09-02T06", "2020-09-02T12"]), "latitude": lat, "longitude": lon})
    late.to_netcdf(tmp_path / "late.nc")
    with pytest.raises(WeatherDataError, match=r"late\.nc \[time\]: no truth at valid time\(s\) 2020-09-01T00:00"):
        main(["track", "--forecast", str(tmp_path / "fc.zarr"), "--start", "0,100", "--truth", str(tmp_path / "late.nc"), "--out", str(tmp_path / "u.json")])
    (tmp_path / "fc.zarr" / "mean_sea_level_pressure" / "c" / "0" / "1" / "0" / "0" / "0").write_bytes(b"\x00garbage")
    with pytest.raises(WeatherDataError, match=r"fc\.zarr \[mean_sea_level_pressure\]: cannot read data at init 2020-09-01T00:00"):
        main(["track", "--forecast", str(tmp_path / "fc.zarr"), "--start", "0,100", "--out", str(tmp_path / "v.json")])
    assert not any((tmp_path / n).exists() for n in ("u.json", "v.json", "u.png", "v.png"))
