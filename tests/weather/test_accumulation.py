"""Precipitation accumulations derived by the reader: hourly ERA5 ``tp`` -> 6/24 h sums, 6 h -> 24 h, gaps, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from apps.weather.data import WeatherDataError, load_block, open_weather
from apps.weather.evaluate import evaluate

LAT, LON = np.array([10.0, 0.0, -10.0]), np.array([0.0, 90.0, 180.0, 270.0])  # latitude descending, as ERA5


def _hourly_tp(tmp_path, hours: int = 72, drop: tuple[int, ...] = ()) -> tuple[str, np.ndarray, pd.DatetimeIndex]:
    """A CDS-style NetCDF with hourly ``tp`` (metres, a few tiny negatives like GRIB packing noise)."""
    rng = np.random.default_rng(0)
    times = pd.date_range("2020-01-01", periods=hours, freq="h")
    tp = rng.gamma(0.5, 4e-4, size=(hours, 3, 4)) - 2e-5  # about 10 % below zero
    keep = np.setdiff1d(np.arange(hours), drop)
    ds = xr.Dataset({"tp": (("time", "lat", "lon"), tp[keep].astype("f4"), {"units": "m"})},
                    coords={"time": times[keep], "lat": LAT, "lon": LON})
    path = tmp_path / "tp.nc"
    ds.to_netcdf(path)
    return str(path), tp.astype("f4").astype(np.float64)[:, ::-1], times  # latitude ascending, as the reader gives


def _rolling(tp: np.ndarray, n: int) -> np.ndarray:
    out = np.full_like(tp, np.nan)
    for t in range(n - 1, len(tp)):
        out[t] = np.clip(tp[t - n + 1 : t + 1].sum(0), 0.0, None)
    return out


def test_hourly_tp_gives_6h_and_24h_sums(tmp_path):
    path, tp, times = _hourly_tp(tmp_path)
    ds = open_weather(path, variables=["total_precipitation_6hr", "total_precipitation_24hr"])
    six, day = ds["total_precipitation_6hr"].values, ds["total_precipitation_24hr"].values
    np.testing.assert_allclose(six, _rolling(tp, 6), rtol=1e-5, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(day, _rolling(tp, 24), rtol=1e-5, atol=1e-9, equal_nan=True)
    assert np.isnan(six[:5]).all() and np.isfinite(six[5:]).all() and (six[5:] >= 0).all()
    assert (six[5:] == 0).any()  # a window summing below zero is clipped to 0, not kept negative
    attrs = ds["total_precipitation_6hr"].attrs
    assert attrs["units"] == "m" and attrs["standard_name"] == "precipitation_amount" and "6 value(s)" in attrs["derived_from"]
    assert ds["total_precipitation_6hr"].dims == ("time", "latitude", "longitude")
    # a period and 6-hourly subsampling come after the derivation: windows reach back before the period
    sub = open_weather(path, variables=["total_precipitation_6hr"], period=("2020-01-01T02", None), frequency="6h")
    assert str(sub.time.values[0])[:13] == "2020-01-01T06"
    np.testing.assert_allclose(sub["total_precipitation_6hr"].values[0], _rolling(tp, 6)[6], rtol=1e-5, atol=1e-9)
    # the first hours have no complete window: the finiteness check says why
    with pytest.raises(WeatherDataError, match=r"tp.nc \[total_precipitation_6hr\]: .*accumulation has no value until"):
        load_block(ds, ["total_precipitation_6hr"], slice(0, 8))


def test_a_missing_hour_empties_its_windows_only(tmp_path):
    path, tp, times = _hourly_tp(tmp_path, drop=(30,))
    ds = open_weather(path, variables=["total_precipitation_6hr"])
    assert ds.sizes["time"] == 71  # the file's own times, nothing inserted
    got = ds["total_precipitation_6hr"].sel(time=times[np.r_[29, 31:36, 36]]).values
    want = _rolling(tp, 6)[np.r_[29, 31:36, 36]]
    assert np.isnan(got[1:6]).all()  # 31..35 hold the missing hour 30 in their window
    np.testing.assert_allclose(got[[0, 6]], want[[0, 6]], rtol=1e-5, atol=1e-9)


def test_24h_from_6h_accumulations_and_bad_input(tmp_path):
    rng = np.random.default_rng(1)
    times = pd.date_range("2020-01-01", periods=20, freq="6h")
    six = rng.gamma(0.5, 2e-3, size=(20, 3, 4))
    ds = xr.Dataset({"total_precipitation_6hr": (("time", "latitude", "longitude"), six)},
                    coords={"time": times, "latitude": LAT[::-1], "longitude": LON})
    ds.to_zarr(tmp_path / "six.zarr", consolidated=False, zarr_format=3)
    got = open_weather(tmp_path / "six.zarr", variables=["total_precipitation_24hr"])["total_precipitation_24hr"].values
    assert np.isnan(got[:3]).all()
    np.testing.assert_allclose(got[3:], np.stack([six[t - 3 : t + 1].sum(0) for t in range(3, 20)]), rtol=1e-12)
    # a 6-hour accumulation stamped off its 6-hour grid cannot be summed by time
    shifted = ds.assign_coords(time=times.values + np.r_[np.zeros(19), [3]].astype("timedelta64[h]"))
    shifted.to_zarr(tmp_path / "off.zarr", consolidated=False, zarr_format=3)
    with pytest.raises(WeatherDataError, match=r"off.zarr \[total_precipitation_6hr\]: cannot derive total_precipitation_24hr"):
        open_weather(tmp_path / "off.zarr", variables=["total_precipitation_24hr"])
    # no source: the usual missing-variable error (4 h is no multiple of 6 h; a 6 h total cannot come from 24 h ones)
    with pytest.raises(WeatherDataError, match=r"\[total_precipitation_4hr\]: missing variable"):
        open_weather(tmp_path / "six.zarr", variables=["total_precipitation_4hr"])
    day = ds.rename({"total_precipitation_6hr": "total_precipitation_24hr"})
    day.to_zarr(tmp_path / "day.zarr", consolidated=False, zarr_format=3)
    with pytest.raises(WeatherDataError, match=r"\[total_precipitation_6hr\]: missing variable"):
        open_weather(tmp_path / "day.zarr", variables=["total_precipitation_6hr"])


def test_evaluate_scores_a_6h_forecast_against_hourly_truth(tmp_path):
    path, tp, times = _hourly_tp(tmp_path, hours=96)
    truth6 = _rolling(tp, 6)
    inits = times[[40, 52]]
    leads = np.array([6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]")
    idx = np.array([[40 + 6, 40 + 12], [52 + 6, 52 + 12]])
    ens = truth6[idx][:, None] + np.random.default_rng(2).normal(0, 1e-4, (2, 3, 2, 3, 4))
    fc = xr.Dataset({"total_precipitation_6hr": (("time", "realization", "prediction_timedelta", "latitude", "longitude"), ens)},
                    coords={"time": inits, "realization": np.arange(3), "prediction_timedelta": leads,
                            "latitude": LAT[::-1], "longitude": LON})
    fc.to_zarr(tmp_path / "fc.zarr", consolidated=False, zarr_format=3)
    res = evaluate(tmp_path / "fc.zarr", path, tmp_path / "ev", report=False)
    row = next(r for r in res["scores"] if r["lead_hours"] == 12)
    from apps.weather.metrics import cell_area_weights

    w = cell_area_weights(LAT[::-1])[:, None]
    mse = [((ens[i, :, 1].mean(0) - truth6[idx[i, 1]]) ** 2 * w).mean() / w.mean() for i in range(2)]
    assert row["rmse"] == pytest.approx(np.sqrt(np.mean(mse)), rel=1e-5)
    # the climatology is fitted from the first complete 6 h window (05 UTC), not on the NaN hours before it
    assert res["climatology"]["period"][0].startswith("2020-01-01T05") and np.isfinite(row["climatology_rmse"])
