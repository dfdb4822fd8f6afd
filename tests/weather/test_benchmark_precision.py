"""The precision benchmark: fp32 always timed, bf16 only where the CPU supports it natively."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import xarray as xr

from dualsci.training import bf16_supported


def test_precision_benchmark_rows(tmp_path, load_benchmark):
    times = pd.date_range("2021-07-01", periods=24 * 4, freq="h")
    lat, lon = np.arange(58.0, 49.9, -1.0), np.arange(-10.0, -1.9, 1.0)  # 9 x 9 -> cropped to 8 x 8
    rng = np.random.default_rng(0)
    t2m = 285 + rng.normal(0, 1.0, (len(times), len(lat), len(lon)))
    xr.Dataset({"t2m": (("time", "latitude", "longitude"), t2m.astype("f4"))},
               coords={"time": times, "latitude": lat, "longitude": lon}).to_netcdf(tmp_path / "t.nc")
    out = tmp_path / "p.json"
    res = load_benchmark("weather_precision").main(["--data", str(tmp_path / "t.nc"), "--out", str(out), "--quick", "--repeats", "1"])
    saved = json.loads(out.read_text())
    assert saved["rows"] == res["rows"] and saved["threads"] == 1
    want = ["fp32", "bf16"] if bf16_supported() else ["fp32"]
    assert [r["precision"] for r in saved["rows"]] == want
    assert all(r["dim"] == 64 and r["ms_per_step"] > 0 and r["params"] > 0 for r in saved["rows"])
