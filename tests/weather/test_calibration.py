"""Spread calibration: fitted on one draw of an over-dispersed ensemble, it makes the unbiased SSR of an
independent draw ≈ 1, leaves the mean alone, round-trips through JSON, and refuses leads it lacks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from apps.weather.calibration import CalibrationError, SpreadCalibration, fit_spread_scales
from apps.weather.evaluate import evaluate
from apps.weather.metrics import ScoreAccumulator

LAT, LON = np.linspace(-60, 60, 8), np.arange(0, 360, 30.0)
INFLATION = {6: 2.0, 12: 1.5, 24: 0.6}  # members' noise / truth's noise: over-, over-, under-dispersed
M = 10


def _draw(seed: int, n_inits: int = 30):
    """Truth and members are draws around a common centre; members' noise is INFLATION × truth's."""
    rng = np.random.default_rng(seed)
    out = {}
    for lead, k in INFLATION.items():
        centre = rng.normal(0, 3.0, (n_inits, 8, 12))
        truth = centre + rng.normal(0, 1.0, centre.shape)
        ens = centre[:, None] + k * rng.normal(0, 1.0, (n_inits, M, 8, 12))
        out[lead] = (ens, truth)
    return out


def _scores(draw, calib: SpreadCalibration | None = None) -> dict[int, dict]:
    acc = ScoreAccumulator(LAT, LON)
    for lead, (ens, truth) in draw.items():
        for e, y in zip(ens, truth):
            acc.add("2m_temperature", lead, calib.apply(e, "2m_temperature", lead) if calib else e, y)
    return {r["lead_hours"]: r for r in acc.result()}


def test_fitted_on_one_draw_calibrates_an_independent_draw():
    calib = fit_spread_scales(_scores(_draw(1)).values())
    test = _draw(2)
    raw, cal = _scores(test), _scores(test, calib)
    for lead, k in INFLATION.items():
        assert raw[lead]["ssr"] == pytest.approx(k, rel=0.1)  # the raw ensemble is mis-dispersed
        assert cal[lead]["ssr"] == pytest.approx(1.0, abs=0.06)
        # not 1/k: the finite-ensemble mean also carries k²/M of members' noise (module docstring)
        assert calib.factor("2m_temperature", lead) == pytest.approx(np.sqrt((1 / k**2 + 1 / M) / (1 + 1 / M)), rel=0.1)
        assert cal[lead]["rmse"] == pytest.approx(raw[lead]["rmse"], rel=1e-12)  # mean unchanged


def test_factor_is_exact_on_the_fitting_window():
    """With the debiased SSR the factor is not 1/SSR; the closed form must give SSR = 1 exactly."""
    draw = _draw(3, n_inits=5)
    calib = fit_spread_scales(_scores(draw).values())
    for lead, row in _scores(draw, calib).items():
        assert row["ssr"] == pytest.approx(1.0, rel=1e-9)


def test_apply_keeps_the_mean_and_scales_departures():
    rng = np.random.default_rng(0)
    ens = rng.normal(size=(M, 4, 5))
    calib = SpreadCalibration({"t": {6: 0.5}})
    out = calib.apply(ens, "t", 6)
    np.testing.assert_allclose(out.mean(0), ens.mean(0), atol=1e-12)
    np.testing.assert_allclose(out.std(0), 0.5 * ens.std(0), rtol=1e-12)


def test_mismatched_leads_and_channels_are_errors():
    calib = SpreadCalibration({"2m_temperature": {6: 0.8, 12: 0.9}})
    with pytest.raises(CalibrationError, match="no lead 18 h"):
        calib.check_covers(["2m_temperature"], [6, 12, 18])
    with pytest.raises(CalibrationError, match="no channel 'u10'"):
        calib.apply(np.zeros((2, 3)), "u10", 6)
    with pytest.raises(CalibrationError, match="finite and > 0"):
        SpreadCalibration({"t": {6: 0.0}})


def test_fit_clips_and_rejects_undefined_ssr():
    rows = [{"variable": "t", "lead_hours": 6, "region": "global", "members": 10, "ssr": 100.0},
            {"variable": "t", "lead_hours": 12, "region": "global", "members": 10, "ssr": 0.01}]
    calib = fit_spread_scales(rows, clip_min=0.25, clip_max=4.0)
    # SSR 100 -> sqrt((1e-4 + 0.1) / 1.1) = 0.3017 (not 0.01: the V/M term); SSR 0.01 -> 90.5, clipped to 4
    assert calib.factors["t"][6] == pytest.approx(np.sqrt((1e-4 + 0.1) / 1.1), rel=1e-12) and calib.factors["t"][12] == 4.0
    assert fit_spread_scales(rows, clip_min=0.5).factors["t"][6] == 0.5
    with pytest.raises(CalibrationError, match="cannot calibrate"):
        fit_spread_scales([dict(rows[0], ssr=float("inf"))])
    with pytest.raises(CalibrationError, match="no score rows"):
        fit_spread_scales(rows, region="tropics")


def test_json_round_trip_and_bad_file(tmp_path):
    calib = SpreadCalibration({"2m_temperature": {6: 0.7, 48: 0.6}}, {"note": "x"})
    path = calib.save(tmp_path / "c.json")
    back = SpreadCalibration.load(path)
    assert back.factors == calib.factors and back.source == {"note": "x"}
    assert list(tmp_path.iterdir()) == [path]  # atomic: no temporary left behind
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "something else"}))
    with pytest.raises(CalibrationError, match="bad.json: not a spread calibration"):
        SpreadCalibration.load(bad)
    bad.write_text("{")
    with pytest.raises(CalibrationError, match="bad.json: cannot read"):
        SpreadCalibration.load(bad)


def test_evaluate_applies_a_calibration_file(tmp_path):
    """evaluate(calibration=...) scores the scaled members: spread × s, RMSE unchanged; a file that
    lacks a forecast lead fails before anything is written."""
    times = pd.date_range("2020-01-01", periods=72, freq="h")
    lat, lon = np.array([50.0, 52.0, 54.0]), np.array([0.0, 2.0, 4.0, 6.0])
    rng = np.random.default_rng(0)
    truth = xr.Dataset({"2m_temperature": (("time", "latitude", "longitude"), 280 + rng.normal(0, 1, (72, 3, 4)))},
                       coords={"time": times, "latitude": lat, "longitude": lon})
    truth.to_netcdf(tmp_path / "truth.nc")
    leads = np.array([6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]")
    inits = times.values[[24, 36]]
    ens = 280 + rng.normal(0, 2, (2, M, 2, 3, 4))
    fc = xr.Dataset({"2m_temperature": (("time", "realization", "prediction_timedelta", "latitude", "longitude"), ens)},
                    coords={"time": inits, "realization": np.arange(M), "prediction_timedelta": leads, "latitude": lat, "longitude": lon})
    fc.to_zarr(tmp_path / "fc.zarr", consolidated=False, zarr_format=3)
    raw = evaluate(tmp_path / "fc.zarr", tmp_path / "truth.nc", tmp_path / "raw", report=False)
    cpath = SpreadCalibration({"2m_temperature": {6: 0.5, 12: 0.25}}).save(tmp_path / "c.json")
    cal = evaluate(tmp_path / "fc.zarr", tmp_path / "truth.nc", tmp_path / "cal", report=False, calibration=cpath)
    for r, c in zip(raw["scores"], cal["scores"]):
        s = {6: 0.5, 12: 0.25}[r["lead_hours"]]
        assert c["rmse"] == pytest.approx(r["rmse"], rel=1e-12) and c["spread"] == pytest.approx(s * r["spread"], rel=1e-9)
    short = SpreadCalibration({"2m_temperature": {6: 0.5}}).save(tmp_path / "short.json")
    with pytest.raises(CalibrationError, match="no lead 12 h"):
        evaluate(tmp_path / "fc.zarr", tmp_path / "truth.nc", tmp_path / "none", report=False, calibration=short)
    assert not (tmp_path / "none").exists()


def test_calibrate_store_with_levels_to_netcdf(tmp_path):
    """Per-level factors reach the right slices; the output is NetCDF with the provenance attribute."""
    from apps.weather.calibration import calibrate_store

    rng = np.random.default_rng(1)
    leads = np.array([6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]")
    inits = pd.date_range("2020-01-02", periods=2, freq="12h").values
    z = rng.normal(0, 1, (2, M, 2, 2, 3, 4))
    fc = xr.Dataset({"geopotential": (("time", "realization", "prediction_timedelta", "level", "latitude", "longitude"), z)},
                    coords={"time": inits, "realization": np.arange(M), "prediction_timedelta": leads, "level": [500.0, 850.0],
                            "latitude": [50.0, 52.0, 54.0], "longitude": [0.0, 2.0, 4.0, 6.0]})
    fc.to_zarr(tmp_path / "fc.zarr", consolidated=False, zarr_format=3)
    f = {"geopotential/500": {6: 0.5, 12: 2.0}, "geopotential/850": {6: 1.0, 12: 3.0}}
    out = calibrate_store(tmp_path / "fc.zarr", tmp_path / "cal.nc", SpreadCalibration(f))
    cal = xr.open_dataset(out)
    assert "spread_calibration" in cal.attrs
    for li, lead in enumerate((6, 12)):
        for ki, lv in enumerate((500, 850)):
            raw = z[:, :, li, ki]
            got = cal["geopotential"].values[:, :, li, ki]
            np.testing.assert_allclose(got.mean(1), raw.mean(1), atol=1e-12)
            np.testing.assert_allclose(got.std(1), f[f"geopotential/{lv}"][lead] * raw.std(1), rtol=1e-10)
    cal.close()
    with pytest.raises(CalibrationError, match="fc.zarr: calibration has no channel 'geopotential/850'"):
        calibrate_store(tmp_path / "fc.zarr", tmp_path / "x.nc", SpreadCalibration({"geopotential/500": {6: 1.0, 12: 1.0}}))
    assert not (tmp_path / "x.nc").exists()
