"""Evaluation: climatology fit, streaming scores against a hand computation, JSON/CSV/report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from apps.weather.evaluate import Climatology, evaluate
from apps.weather.metrics import cell_area_weights
from apps.weather.report import baseline_skill, nearest_cell, scorecard
from apps.weather.synthetic import simulate


def test_climatology_recovers_diurnal_and_seasonal_signal():
    times = pd.date_range("2001-01-01", periods=24 * 400, freq="h")
    f = (times.dayofyear.values - 1 + times.hour.values / 24) / 365.0
    sig = 280 + 5 * np.cos(2 * np.pi * f) + 2 * np.sin(2 * np.pi * times.hour.values / 24)
    ds = xr.Dataset({"2m_temperature": (("time", "latitude", "longitude"), np.broadcast_to(sig[:, None, None], (len(times), 2, 3)).astype("f4"))},
                    coords={"time": times, "latitude": [-10.0, 10.0], "longitude": [0.0, 120.0, 240.0]})
    clim = Climatology(ds, ["2m_temperature"])
    assert clim.k == 3
    t = np.datetime64("2001-07-01T06")
    i = int(np.flatnonzero(times.values == t)[0])
    assert clim(t)[0, 0, 0] == pytest.approx(sig[i], abs=0.05)
    short = Climatology(ds.isel(time=slice(0, 24 * 20)), ["2m_temperature"])
    assert short.k == 0 and short(np.datetime64("2001-01-05T06"))[0, 0, 0] == pytest.approx(sig[:480][times.hour.values[:480] == 6].mean(), rel=1e-7)


def test_evaluate_matches_hand_computation(tmp_path):
    truth = simulate(8, 16, days=10, seed=2)
    truth_path = tmp_path / "truth.zarr"
    truth.to_zarr(truth_path, consolidated=False, zarr_format=3)
    inits = truth.time.values[[120, 150]]
    leads = np.array([6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]")
    rng = np.random.default_rng(0)
    m = 4
    t2 = np.stack([np.stack([truth["2m_temperature"].sel(time=i + l).values for l in leads]) for i in inits])  # (I, L, H, W)
    # calibrated: truth and members are exchangeable draws around a common centre
    centre = t2 + rng.normal(0, 1.0, t2.shape)
    ens = centre[:, None] + rng.normal(0, 1.0, (2, m, 2, 8, 16))
    fc = xr.Dataset(
        {"2m_temperature": (("time", "realization", "prediction_timedelta", "latitude", "longitude"), ens.astype("f4"))},
        coords={"time": inits, "realization": np.arange(m), "prediction_timedelta": leads, "latitude": truth.latitude.values, "longitude": truth.longitude.values},
    )
    fc_path = tmp_path / "fc.zarr"
    fc.to_zarr(fc_path, consolidated=False, zarr_format=3)
    res = evaluate(fc_path, truth_path, tmp_path / "ev", regions=("global", "tropics"))
    row = next(r for r in res["scores"] if r["lead_hours"] == 12 and r["region"] == "global")
    w = cell_area_weights(truth.latitude.values)[:, None]
    ensf = ens.astype("f4").astype(np.float64)
    mse = [((ensf[i, :, 1].mean(0) - t2[i, 1]) ** 2 * w).mean() / w.mean() for i in range(2)]
    assert row["rmse"] == pytest.approx(np.sqrt(np.mean(mse)), rel=1e-6)
    pers = [((truth["2m_temperature"].sel(time=i).values - t2[k, 1]) ** 2 * w).mean() for k, i in enumerate(inits)]
    assert row["persistence_rmse"] == pytest.approx(np.sqrt(np.mean(pers)), rel=1e-5)
    assert 0.7 < row["ssr"] < 1.4 and row["crps"] < row["mae"]
    saved = json.loads((tmp_path / "ev" / "scores.json").read_text())
    assert len(saved["scores"]) == 4
    # labelled with the grid's resolution and the valid times scored (method card §15.4)
    assert saved["resolution_deg"] == [22.5, 22.5] and saved["grid"] == "8x16"
    assert saved["verification_period"] == [str(inits[0] + leads[0])[:16], str(inits[1] + leads[1])[:16]]
    assert "(22.5°×22.5°, valid " in (tmp_path / "ev" / "report.html").read_text()
    assert (tmp_path / "ev" / "scores.csv").read_text().startswith("variable,lead_hours,region")
    assert (tmp_path / "ev" / "report.html").exists() and (tmp_path / "ev" / "figs" / "stamps.png").exists()
    assert saved["climatology"]["period"][1] < str(inits[0]) and not saved["climatology"]["includes_verification_times"]
    assert "members_curve" not in row and saved["member_curve_sizes"] == []
    # skill against ensemble size: the curve's last point is the whole ensemble, one CSV row per (key, size)
    curved = evaluate(fc_path, truth_path, tmp_path / "ev_curve", member_curve="auto")
    crow = next(r for r in curved["scores"] if r["lead_hours"] == 12 and r["region"] == "global")
    assert [c["members"] for c in crow["members_curve"]] == [1, 2, 4] and curved["member_curve_sizes"] == [1, 2, 4]
    assert crow["members_curve"][-1]["rmse"] == pytest.approx(row["rmse"], rel=1e-12)
    first = [((ensf[i, 0, 1] - t2[i, 1]) ** 2 * w).mean() / w.mean() for i in range(2)]
    assert crow["members_curve"][0]["rmse"] == pytest.approx(np.sqrt(np.mean(first)), rel=1e-6)
    table = pd.read_csv(tmp_path / "ev_curve" / "members_curve.csv")
    assert len(table) == 2 * 3 and list(table.columns[:4]) == ["variable", "lead_hours", "region", "members"]
    assert (tmp_path / "ev_curve" / "figs" / "members_curve.png").exists()
    assert "Skill against ensemble size" in (tmp_path / "ev_curve" / "report.html").read_text()
    # Brier at two thresholds of the one channel: rows, CSV, the exceedance map; an unknown channel writes nothing
    u = float(np.median(t2))
    briered = evaluate(fc_path, truth_path, tmp_path / "ev_brier", thresholds={"2m_temperature": [u, u + 2.0]})
    brow = next(r for r in briered["scores"] if r["lead_hours"] == 12)
    assert [b["threshold"] for b in brow["brier"]] == [u, u + 2.0] and briered["thresholds"] == {"2m_temperature": [u, u + 2.0]}
    p = (ensf[:, :, 1] > u).mean(axis=1)
    hand = [((p[i] - (t2[i, 1] > u)) ** 2 * w).mean() / w.mean() for i in range(2)]
    assert brow["brier"][0]["brier"] == pytest.approx(np.mean(hand), rel=1e-9)
    brier_csv = pd.read_csv(tmp_path / "ev_brier" / "brier.csv")
    assert len(brier_csv) == 2 * 2 and {"threshold", "brier", "brier_fair", "base_rate"} <= set(brier_csv.columns)
    assert brier_csv.query("lead_hours == 12")["brier"].iloc[0] == pytest.approx(brow["brier"][0]["brier"], rel=1e-9)
    assert (tmp_path / "ev_brier" / "figs" / "exceedance.png").exists() and np.isfinite(brow["energy_score"])
    assert "Ensemble plume" in (tmp_path / "ev_brier" / "report.html").read_text()
    assert "Scorecard: RMSE skill" in (tmp_path / "ev_brier" / "report.html").read_text()
    lat, lon = truth.latitude.values, truth.longitude.values
    assert nearest_cell(lat, lon, None) == (4, 8) and nearest_cell(lat, lon, (lat[2] + 0.1, lon[5] - 0.1)) == (2, 5)
    assert nearest_cell(lat, lon, (lat[6], 359.9)) == (6, 0)  # across the 0° meridian
    evaluate(fc_path, truth_path, tmp_path / "ev_plume", plume_at=(float(lat[1]), float(lon[3])))
    assert json.loads((tmp_path / "ev_plume" / "scores.json").read_text())["plume_at"] == [float(lat[1]), float(lon[3])]
    assert (tmp_path / "ev_plume" / "figs" / "plume.png").exists()
    with pytest.raises(ValueError, match=r"fc.zarr: thresholds for \['rain'\], which the forecast does not hold"):
        evaluate(fc_path, truth_path, tmp_path / "ev_bad_brier", thresholds={"rain": [1.0]})
    assert not (tmp_path / "ev_bad_brier").exists()
    with pytest.raises(ValueError, match=r"fc.zarr: member curve sizes \[2, 5\] must lie in 1..4"):
        evaluate(fc_path, truth_path, tmp_path / "ev_bad_curve", member_curve=[2, 5])
    assert not (tmp_path / "ev_bad_curve").exists()
    # a truth with fewer than 24 h before the first init still keeps the climatology off the verification times
    late = tmp_path / "late.zarr"
    truth.isel(time=slice(110, None)).to_zarr(late, consolidated=False, zarr_format=3)
    res_late = evaluate(fc_path, late, tmp_path / "ev_late", report=False)
    assert [np.datetime64(t) for t in res_late["climatology"]["period"]] == list(truth.time.values[[110, 119]])
    assert res_late["climatology"]["hours_of_day"] == 10 and not res_late["climatology"]["includes_verification_times"]
    # a truth that covers no valid time is an error naming it, not an empty score table
    early = tmp_path / "early.zarr"
    truth.isel(time=slice(0, 100)).to_zarr(early, consolidated=False, zarr_format=3)
    with pytest.raises(ValueError, match=r"early.zarr \[time\]: no \(init, lead\) pair of the forecast has truth"):
        evaluate(fc_path, early, tmp_path / "ev_early", report=False)
    assert not (tmp_path / "ev_early").exists()


def test_scorecard_skill_against_the_better_baseline():
    """1 − RMSE / min(persistence, climatology): its sign and colour per cell; a missing baseline is left out."""
    rows = [
        {"variable": "t2m", "lead_hours": 6, "region": "global", "rmse": 0.8, "persistence_rmse": 1.0, "climatology_rmse": 2.0},
        {"variable": "t2m", "lead_hours": 12, "region": "global", "rmse": 1.5, "persistence_rmse": 2.0, "climatology_rmse": 1.2},
        {"variable": "t2m", "lead_hours": 6, "region": "tropics", "rmse": 1.0, "persistence_rmse": float("nan"),
         "climatology_rmse": 0.5},
        {"variable": "z500", "lead_hours": 6, "region": "global", "rmse": 1.0, "persistence_rmse": float("nan"),
         "climatology_rmse": float("nan")},
    ]
    assert [baseline_skill(r) for r in rows[:3]] == pytest.approx([0.2, -0.25, -1.0])
    assert np.isnan(baseline_skill(rows[3]))
    html = scorecard(rows)
    assert html.count("<table>") == 2 and "+20 %" in html and "-25 %" in html and "-100 %" in html
    assert "background:#afffaf" in html  # +20 %: green, two thirds of the full shade at ±30 % (255 − 120·2/3)
    assert html.count("–") == 3  # z500 has no baseline at 6 h; z500 and t2m in the tropics lack +12 h


def _wb2_climatology(truth: xr.Dataset, hours) -> tuple[xr.Dataset, callable]:
    """A WB2-schema climatology: dims (hour, dayofyear, longitude, latitude), latitude descending and
    longitude in [-180, 180) (as some files are) — values a known function of (dayofyear, hour)."""
    lat, lon = truth.latitude.values, truth.longitude.values
    base = truth["2m_temperature"].mean("time").values  # (H, W)
    doy = np.arange(1, 367)

    def value(d, h):
        return base + 0.1 * d + 0.5 * np.cos(2 * np.pi * h / 24)

    arr = np.stack([np.stack([value(d, h).T for d in doy]) for h in hours])  # (hour, doy, lon, lat)
    lon_w = (lon + 180.0) % 360.0 - 180.0
    clim = xr.Dataset(
        {"2m_temperature": (("hour", "dayofyear", "longitude", "latitude"), arr[..., ::-1].astype("f4"))},
        coords={"hour": np.asarray(hours), "dayofyear": doy, "longitude": lon_w, "latitude": lat[::-1]},
    )
    return clim, value


def test_acc_against_wb2_climatology_file(tmp_path):
    truth = simulate(8, 16, days=10, seed=2)
    truth_path = tmp_path / "truth.zarr"
    truth.to_zarr(truth_path, consolidated=False, zarr_format=3)
    inits = truth.time.values[[120, 151]]  # 00 UTC and 07 UTC: valid hours 06/12 and 13/19
    leads = np.array([6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]")
    rng = np.random.default_rng(1)
    t2 = np.stack([np.stack([truth["2m_temperature"].sel(time=i + l).values for l in leads]) for i in inits])
    ens = t2[:, None] + rng.normal(0, 1.0, (2, 3, 2, 8, 16))
    fc = xr.Dataset(
        {"2m_temperature": (("time", "realization", "prediction_timedelta", "latitude", "longitude"), ens.astype("f4"))},
        coords={"time": inits, "realization": np.arange(3), "prediction_timedelta": leads, "latitude": truth.latitude.values, "longitude": truth.longitude.values},
    )
    fc.to_zarr(tmp_path / "fc.zarr", consolidated=False, zarr_format=3)
    clim, value = _wb2_climatology(truth, [0, 6, 12, 18])
    clim.to_zarr(tmp_path / "clim.zarr", consolidated=True, zarr_format=2)
    res = evaluate(tmp_path / "fc.zarr", truth_path, tmp_path / "ev", climatology=str(tmp_path / "clim.zarr"))
    assert res["climatology"]["kind"] == "wb2_file"
    w = cell_area_weights(truth.latitude.values)[:, None]
    sm = lambda z: float((z * w).mean())  # noqa: E731
    for j, lead in enumerate((6, 12)):
        row = next(r for r in res["scores"] if r["lead_hours"] == lead)
        cmse, acc = [], []
        for i, init in enumerate(inits):
            valid = pd.Timestamp(init + leads[j])
            hour = min((0, 6, 12, 18), key=lambda h: abs((h - valid.hour + 12) % 24 - 12))  # nearest on the circle
            c = value(valid.dayofyear, hour)
            y = t2[i, j]
            fa, ya = ens[i, :, j].astype("f4").astype(np.float64).mean(0) - c, y - c
            cmse.append(sm((c - y) ** 2))
            acc.append(sm(fa * ya) / np.sqrt(sm(fa**2) * sm(ya**2)))
        assert row["climatology_rmse"] == pytest.approx(np.sqrt(np.mean(cmse)), rel=1e-5)
        assert row["acc"] == pytest.approx(np.mean(acc), rel=1e-5)
    # the harmonic fit stays the fallback, and gives different numbers
    fallback = evaluate(tmp_path / "fc.zarr", truth_path, tmp_path / "ev2", report=False)
    assert fallback["climatology"]["kind"] == "harmonic"
    assert fallback["scores"][0]["climatology_rmse"] != pytest.approx(res["scores"][0]["climatology_rmse"], rel=1e-3)


def test_wb2_climatology_file_bad_input(tmp_path):
    from apps.weather.climatology_file import FileClimatology
    from apps.weather.data import WeatherDataError

    truth = simulate(8, 16, days=2, seed=2)
    clim, value = _wb2_climatology(truth, list(range(24)))
    clim.to_netcdf(tmp_path / "clim.nc")
    lat, lon = truth.latitude.values, truth.longitude.values
    fc = FileClimatology(str(tmp_path / "clim.nc"), ["2m_temperature"], lat, lon)
    np.testing.assert_allclose(fc(np.datetime64("2001-03-01T13"))[0], value(60, 13), rtol=1e-6)  # hourly file, non-leap year
    np.testing.assert_allclose(fc(np.datetime64("2000-12-31T05"))[0], value(366, 5), rtol=1e-6)
    with pytest.raises(WeatherDataError, match=r"clim.nc \[temperature\].*no variable"):
        FileClimatology(str(tmp_path / "clim.nc"), ["temperature/850"], lat, lon)
    clim.isel(hour=0).to_netcdf(tmp_path / "nohour.nc")
    with pytest.raises(WeatherDataError, match="nohour.nc.*no 'hour' dimension"):
        FileClimatology(str(tmp_path / "nohour.nc"), ["2m_temperature"], lat, lon)
    with pytest.raises(WeatherDataError, match="clim.nc.*does not match"):
        FileClimatology(str(tmp_path / "clim.nc"), ["2m_temperature"], lat + 1.0, lon)
    # a NaN or a corrupt chunk where a valid time is looked up: named (NaN gave NaN ACC/baseline; a chunk a traceback)
    holes = clim.copy(deep=True)
    holes["2m_temperature"][13, 59, 2, 3] = np.nan
    holes.to_netcdf(tmp_path / "holes.nc")
    with pytest.raises(WeatherDataError, match=r"holes\.nc \[2m_temperature\]: 1 NaN.* at dayofyear 60, hour 13"):
        FileClimatology(str(tmp_path / "holes.nc"), ["2m_temperature"], lat, lon)(np.datetime64("2001-03-01T13"))
    clim.to_zarr(tmp_path / "clim.zarr", zarr_format=3, consolidated=False, encoding={"2m_temperature": {"chunks": (1, 366, 16, 8)}})
    (tmp_path / "clim.zarr" / "2m_temperature" / "c" / "13" / "0" / "0" / "0").write_bytes(b"\x00garbage")
    with pytest.raises(WeatherDataError, match=r"clim\.zarr \[2m_temperature\]: cannot read data at dayofyear 60, hour 13"):
        FileClimatology(str(tmp_path / "clim.zarr"), ["2m_temperature"], lat, lon)(np.datetime64("2001-03-01T13"))


def test_damaged_or_unfinished_forecast_store_is_named(tmp_path):
    """A corrupt chunk of the forecast store (was a decompression traceback) and a missing one (read as NaN: the
    scores came out NaN with exit 0) are errors naming the store, the channel, the init and the lead; no
    scores are written."""
    truth = simulate(4, 8, days=3, seed=3)
    truth.to_zarr(tmp_path / "truth.zarr", consolidated=False, zarr_format=3)
    leads = np.array([6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]")
    init = truth.time.values[24]
    vals = np.stack([truth["2m_temperature"].sel(time=init + lt).values for lt in leads])[None, None]  # (1, 1, L, H, W)
    fc = xr.Dataset({"2m_temperature": (("time", "realization", "prediction_timedelta", "latitude", "longitude"), np.repeat(vals, 2, 1).astype("f4"))},
                    coords={"time": [init], "realization": [0, 1], "prediction_timedelta": leads,
                            "latitude": truth.latitude.values, "longitude": truth.longitude.values})
    enc = {"2m_temperature": {"chunks": (1, 2, 1, 4, 8)}}
    for name in ("corrupt", "missing"):
        path = tmp_path / f"{name}.zarr"
        fc.to_zarr(path, consolidated=False, zarr_format=3, encoding=enc)
        chunk = path / "2m_temperature" / "c" / "0" / "0" / "1" / "0" / "0"  # lead 12 h
        chunk.write_bytes(b"\x00garbage\xff") if name == "corrupt" else chunk.unlink()
    with pytest.raises(ValueError, match=r"corrupt\.zarr \[2m_temperature\]: cannot read data at init 2000-01-02T00:00, lead 12 h"):
        evaluate(tmp_path / "corrupt.zarr", tmp_path / "truth.zarr", tmp_path / "ev1", report=False)
    with pytest.raises(ValueError, match=r"missing\.zarr \[2m_temperature\]: 64 NaN.* at init 2000-01-02T00:00, lead 12 h"):
        evaluate(tmp_path / "missing.zarr", tmp_path / "truth.zarr", tmp_path / "ev2", report=False)
    assert not (tmp_path / "ev1").exists() and not (tmp_path / "ev2").exists()


def test_forecast_store_in_other_orientations_scores_the_same(tmp_path):
    """A forecast store with longitudes in [-180, 180) (was refused: 'does not match the forecast's grid'),
    latitude descending or an ensemble dim named ``number`` scores exactly like the WB2-oriented store."""
    truth = simulate(4, 8, days=3, seed=4)
    truth.to_zarr(tmp_path / "truth.zarr", consolidated=False, zarr_format=3)
    leads = np.array([6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]")
    inits = truth.time.values[[24, 36]]
    rng = np.random.default_rng(1)
    ens = np.stack([np.stack([truth["2m_temperature"].sel(time=i + lt).values for lt in leads]) for i in inits])[:, None]
    ens = ens + rng.normal(0, 1.0, (2, 3, 2, 4, 8))
    fc = xr.Dataset({"2m_temperature": (("time", "realization", "prediction_timedelta", "latitude", "longitude"), ens.astype("f4"))},
                    coords={"time": inits, "realization": np.arange(3), "prediction_timedelta": leads,
                            "latitude": truth.latitude.values, "longitude": truth.longitude.values})
    fc.to_netcdf(tmp_path / "wb2.nc")
    ref = evaluate(tmp_path / "wb2.nc", tmp_path / "truth.zarr", tmp_path / "ev", report=False)["scores"]
    variants = {"lon180.nc": fc.assign_coords(longitude=(fc.longitude + 180) % 360 - 180).sortby("longitude"),
                "desc.nc": fc.sortby("latitude", ascending=False), "number.nc": fc.rename(realization="number")}
    for name, ds in variants.items():
        ds.to_netcdf(tmp_path / name)
        rows = evaluate(tmp_path / name, tmp_path / "truth.zarr", tmp_path / f"ev_{name}", report=False)["scores"]
        for a, b in zip(ref, rows):
            for key in ("rmse", "crps", "ssr", "bias", "persistence_rmse"):
                assert b[key] == pytest.approx(a[key], rel=1e-9), (name, key)
