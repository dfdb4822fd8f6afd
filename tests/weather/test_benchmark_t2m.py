"""The t2m benchmark's command-line contract on a file of the real schema (CDS names, descending
latitude, longitudes west of 0°), any period: JSON keys per lead and train_seconds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr


def test_t2m_benchmark_contract(tmp_path, load_benchmark):
    times = pd.date_range("2021-07-01", periods=24 * 9, freq="h")
    lat = np.arange(58.0, 49.9, -0.5)  # 17 rows, descending -> cropped to 16
    lon = np.arange(-10.0, -2.9, 0.5)  # 15 columns -> cropped to 12
    hour = times.hour.values[:, None, None]
    rng = np.random.default_rng(0)
    t2m = 285 + 4 * np.cos(2 * np.pi * (hour - 15) / 24) + rng.normal(0, 0.3, (len(times), len(lat), len(lon)))
    ds = xr.Dataset({"t2m": (("time", "latitude", "longitude"), t2m.astype("f4"), {"units": "K"})},
                    coords={"time": times, "latitude": lat, "longitude": lon})
    path = tmp_path / "t2m.nc"
    ds.to_netcdf(path)
    bench = load_benchmark("weather_t2m_uk")
    out = tmp_path / "b.json"
    res = bench.main(["--data", str(path), "--train", "2021-07-01:2021-07-06", "--test", "2021-07-07:2021-07-09",
                      "--out", str(out), "--quick", "--steps", "2", "--sampler-steps", "2", "--threads", "1"])
    saved = json.loads(out.read_text())
    assert set(saved["leads"]) == {"6", "12", "24", "48"}
    for v in saved["leads"].values():
        assert {"rmse", "crps", "ssr", "persistence_rmse", "climatology_rmse"} <= set(v)
        assert all(isinstance(x, float) for x in v.values()) and np.isfinite(v["rmse"]) and np.isfinite(v["crps"])
    assert saved["train_seconds"] > 0 and saved["grid"] == "16x12" and saved["n_inits"] == 2
    assert res["members"] == 10
    with pytest.raises(SystemExit):
        bench.main(["--data", str(path), "--train", "2021-07-01:2021-07-06", "--test", "2021-07-07:2021-07-09", "--out", str(out), "--members", "5"])
