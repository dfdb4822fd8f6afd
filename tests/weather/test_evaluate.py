"""Evaluation: climatology fit, streaming scores against a hand computation, JSON/CSV/report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from apps.weather.evaluate import Climatology, evaluate
from apps.weather.metrics import cell_area_weights
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
    assert (tmp_path / "ev" / "scores.csv").read_text().startswith("variable,lead_hours,region")
    assert (tmp_path / "ev" / "report.html").exists() and (tmp_path / "ev" / "figs" / "stamps.png").exists()
