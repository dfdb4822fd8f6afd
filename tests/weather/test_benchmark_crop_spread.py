"""The crop-spread diagnostic: full-grid and crop-only ensembles of one crop-trained checkpoint, same cells."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr


def test_crop_spread_diagnostic(tmp_path, load_benchmark):
    times = pd.date_range("2021-07-01", periods=24 * 8, freq="h")
    lat, lon = np.arange(58.0, 49.9, -0.5), np.arange(-10.0, -1.9, 0.5)  # 17 x 17 -> 16 x 16
    rng = np.random.default_rng(0)
    hour = times.hour.values[:, None, None]
    t2m = 285 + 4 * np.cos(2 * np.pi * (hour - 15) / 24) + rng.normal(0, 0.3, (len(times), len(lat), len(lon)))
    path = tmp_path / "t2m.nc"
    xr.Dataset({"t2m": (("time", "latitude", "longitude"), t2m.astype("f4"))},
               coords={"time": times, "latitude": lat, "longitude": lon}).to_netcdf(path)
    ckpt = tmp_path / "crop.ckpt"
    load_benchmark("weather_t2m_uk").main([
        "--data", str(path), "--train", "2021-07-01:2021-07-05", "--test", "2021-07-06:2021-07-06", "--out", str(tmp_path / "b.json"),
        "--steps", "2", "--sampler-steps", "2", "--threads", "1", "--train-crop", "8x8", "--keep-checkpoint", str(ckpt)])
    diag = load_benchmark("weather_crop_spread")
    common = ["--checkpoint", str(ckpt), "--data", str(path), "--test", "2021-07-06:2021-07-08", "--members", "3", "--sampler-steps", "2"]
    res = diag.main(common + ["--train", "2021-07-01:2021-07-05", "--out", str(tmp_path / "d.json")])
    saved = json.loads((tmp_path / "d.json").read_text())
    assert saved["leads"] == res["leads"] and set(res["leads"]) == {"6", "12", "18", "24"}
    assert res["crop"] == [8, 8]  # the checkpoint's own train_crop and res["offset"] == [4, 4] and res["grid"] == [16, 16] and res["members"] == 3
    for row in res["leads"].values():
        for name in ("full_grid", "crop_only"):
            assert row[name]["spread"] > 0 and np.isfinite(row[name]["ens_mean_rmse"])
        # the two ensembles are different computations (16 vs 4 tokens), not one copied twice
        assert row["full_grid"]["spread"] != row["crop_only"]["spread"]
    # another training period does not rebuild the checkpoint's normalisation: refused, nothing written
    with pytest.raises(SystemExit, match="does not rebuild the checkpoint's tendency scales"):
        diag.main(common + ["--train", "2021-07-02:2021-07-05", "--out", str(tmp_path / "bad.json")])
    assert not (tmp_path / "bad.json").exists()
    with pytest.raises(SystemExit):
        diag.main(common + ["--train", "2021-07-01:2021-07-05", "--out", str(tmp_path / "bad.json"), "--crop", "6x8"])
