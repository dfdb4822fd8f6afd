"""Forecast stores in other tools' layouts: normalised and scored like the WB2 layout; ``check`` and ``--fix``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from apps.weather.cli import main
from apps.weather.data import WeatherDataError
from apps.weather.evaluate import evaluate
from apps.weather.forecast_schema import check_forecast, fix_forecast
from apps.weather.synthetic import simulate

KEYS = ("rmse", "crps", "ssr", "bias", "persistence_rmse", "acc")


@pytest.fixture(scope="module")
def wb2_pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schema")
    truth = simulate(4, 8, days=3, seed=5)
    truth.to_zarr(tmp / "truth.zarr", consolidated=False, zarr_format=3)
    leads = np.array([6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]")
    inits = truth.time.values[[24, 36]]
    ens = np.stack([np.stack([truth["2m_temperature"].sel(time=i + lt).values for lt in leads]) for i in inits])[:, None]
    ens = ens + np.random.default_rng(2).normal(0, 1.0, (2, 3, 2, 4, 8))
    fc = xr.Dataset({"2m_temperature": (("time", "realization", "prediction_timedelta", "latitude", "longitude"), ens.astype("f4"))},
                    coords={"time": inits, "realization": np.arange(3), "prediction_timedelta": leads,
                            "latitude": truth.latitude.values, "longitude": truth.longitude.values})
    fc.to_netcdf(tmp / "wb2.nc")
    ref = evaluate(tmp / "wb2.nc", tmp / "truth.zarr", tmp / "ev", report=False)["scores"]
    return tmp, fc, ref


def _variants(fc: xr.Dataset) -> dict[str, xr.Dataset]:
    hours = (fc.prediction_timedelta.values / np.timedelta64(1, "h")).astype(float)
    return {
        # GraphCast-style names, latitude descending, longitude in [-180, 180), dims in another order
        "graphcast.nc": fc.rename(latitude="lat", longitude="lon").sortby("lat", ascending=False)
                          .assign_coords(lon=(fc.longitude.values + 180) % 360 - 180).sortby("lon")
                          .transpose("realization", "time", "prediction_timedelta", "lon", "lat"),
        # WB2's own evaluation convention
        "wb2_times.nc": fc.rename(time="init_time", prediction_timedelta="lead_time"),
        # LaDCast: ensemble dim idx, leads as float hours, a CDS variable name
        "ladcast.nc": fc.rename(realization="idx", **{"2m_temperature": "t2m"})
                        .assign_coords(prediction_timedelta=("prediction_timedelta", hours, {"units": "hours"})),
        # cfgrib / IFS-ENS: number and step
        "ifs.nc": fc.rename(realization="number", prediction_timedelta="step"),
    }


def test_other_layouts_score_like_the_wb2_layout_and_fix_writes_it(wb2_pair, tmp_path):
    tmp, fc, ref = wb2_pair
    for name, ds in _variants(fc).items():
        path = tmp_path / name
        ds.to_netcdf(path)
        rows = evaluate(path, tmp / "truth.zarr", tmp_path / f"ev_{name}", report=False)["scores"]
        assert [(r["variable"], r["lead_hours"]) for r in rows] == [(r["variable"], r["lead_hours"]) for r in ref], name
        for a, b in zip(ref, rows):
            for key in KEYS:
                assert b[key] == pytest.approx(a[key], rel=1e-9), (name, key)
        report = check_forecast(path)
        assert report["ok"] and report["errors"] == [], (name, report)
        assert report["summary"]["variables"] == ["2m_temperature"] and report["summary"]["members"] == 3
        assert report["summary"]["leads_hours"] == [6.0, 12.0] and report["notes"], name
        fixed = fix_forecast(path, tmp_path / f"fixed_{name}.zarr")
        out = xr.open_zarr(fixed, consolidated=False)
        assert out["2m_temperature"].dims == ("time", "realization", "prediction_timedelta", "latitude", "longitude")
        assert np.array_equal(out.latitude.values, fc.latitude.values) and np.array_equal(out.longitude.values, fc.longitude.values)
        np.testing.assert_array_equal(out["2m_temperature"].values, fc["2m_temperature"].values)
        assert out["2m_temperature"].attrs["units"] == "K" and "valid_time" in out.coords and float(out["height"]) == 2.0
        assert check_forecast(fixed)["notes"] == []  # nothing left to rename
    notes = " ".join(check_forecast(tmp_path / "ladcast.nc")["notes"])
    assert "idx -> realization" in notes and "t2m -> 2m_temperature" in notes and "lead times read as hours" in notes
    nc = fix_forecast(tmp_path / "ifs.nc", tmp_path / "fixed.nc")
    with xr.open_dataset(nc) as d:
        assert d["2m_temperature"].encoding["coordinates"] == "height valid_time"  # xarray moves the attribute there


def test_check_reports_what_cannot_be_scored(wb2_pair, tmp_path):
    tmp, fc, _ = wb2_pair
    holed = fc.copy(deep=True)
    holed["2m_temperature"][1, 2, 1, 0, 0] = np.nan  # an unfinished store
    holed.to_netcdf(tmp_path / "holed.nc")
    report = check_forecast(tmp_path / "holed.nc")
    assert not report["ok"] and report["errors"] == ["2m_temperature: 1 NaN/inf value(s) in a field not declared as masked "
                                                      "(an unfinished store?)"]
    assert check_forecast(tmp_path / "holed.nc", scan=False)["ok"]
    fc.isel(prediction_timedelta=0, drop=True).to_netcdf(tmp_path / "nolead.nc")
    assert "no ['prediction_timedelta'] dimension(s)" in check_forecast(tmp_path / "nolead.nc")["errors"][0]
    fc.expand_dims(model=2).to_netcdf(tmp_path / "model.nc")
    assert check_forecast(tmp_path / "model.nc")["errors"] == ["unexpected dimension(s) ['model'] on the fields (select one value of each)"]
    odd = fc.assign_coords(prediction_timedelta=("prediction_timedelta", [1.0, 2.0], {"units": "fortnights"}))
    odd.to_netcdf(tmp_path / "odd.nc")
    assert "lead times are numbers in 'fortnights'" in check_forecast(tmp_path / "odd.nc")["errors"][0]
    with pytest.raises(WeatherDataError, match=r"odd.nc \[prediction_timedelta\]: lead times are numbers in 'fortnights'"):
        evaluate(tmp_path / "odd.nc", tmp / "truth.zarr", tmp_path / "ev_odd", report=False)
    with pytest.raises(WeatherDataError, match=r"model.nc: cannot fix: unexpected dimension"):
        fix_forecast(tmp_path / "model.nc", tmp_path / "model_fixed.zarr")
    assert not (tmp_path / "model_fixed.zarr").exists()
    # the verb: exit status 1 for a store that cannot be scored, 0 (and the fix) otherwise; the JSON report
    assert main(["check", "--forecast", str(tmp_path / "holed.nc"), "--json", str(tmp_path / "holed.json")]) == 1
    assert json.loads((tmp_path / "holed.json").read_text())["ok"] is False
    assert main(["check", "--forecast", str(tmp / "wb2.nc"), "--fix", str(tmp_path / "ok.zarr")]) == 0
    assert (tmp_path / "ok.zarr").is_dir()
    with pytest.raises(WeatherDataError, match="forecast not found"):
        check_forecast(tmp_path / "absent.zarr")
