"""The latent-vs-pixel benchmark's contract: both paths trained on one budget, scored on identical cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest


def test_latent_vs_pixel_quick(tmp_path, load_benchmark):
    bench = load_benchmark("weather_latent_vs_pixel")
    out = tmp_path / "lvp.json"
    res = bench.main(["--quick", "--seed", "1", "--out", str(out), "--workdir", str(tmp_path / "work")])
    saved = json.loads(out.read_text())
    assert saved["summary"] == res["summary"]
    for key in ("date_utc", "command", "machine", "settings", "inits", "leads", "channels", "pixel", "latent", "baselines", "ratios"):
        assert key in saved, key
    assert saved["command"].startswith("python benchmarks/weather_latent_vs_pixel.py ") and "--quick" in saved["command"]
    assert saved["machine"]["cpu_count"] >= 1 and len(saved["machine"]["load_average_1_5_15_at_start"]) == 3
    # one budget: the autoencoder's share plus the latent forecaster's equals the pixel forecaster's
    pix, lat = saved["pixel"], saved["latent"]
    ae_min, lat_min = lat["autoencoder_train"]["budget_minutes"], lat["forecaster_train"]["budget_minutes"]
    assert ae_min + lat_min == pytest.approx(pix["train"]["budget_minutes"])
    assert ae_min == pytest.approx(saved["settings"]["ae_fraction"] * saved["settings"]["minutes_per_path"])
    for fit in (pix["train"], lat["autoencoder_train"], lat["forecaster_train"]):
        assert 1 <= fit["steps"] <= saved["settings"]["max_steps"] and fit["fit_seconds"] > 0
    assert saved["settings"]["patch_latent"] * saved["settings"]["ae_factor"] == saved["settings"]["patch_pixel"]
    # identical cases: same inits (every one scored), leads and channels in both evaluations
    inits = [np.datetime64(t, "h") for t in saved["inits"]]
    assert len(inits) == 4 and all(t > np.datetime64("2000-01-08T23") for t in inits)  # held out after training
    for path in (pix, lat):
        assert [np.datetime64(t, "h") for t in path["inits_scored"]] == inits and path["skipped_pairs"] == 0
    assert saved["leads"] == [6, 12, 18, 24, 30, 36, 42, 48]
    assert len(saved["channels"]) == 6 and "2m_temperature" in saved["channels"]
    for table in (pix["scores"], lat["scores"], saved["baselines"]):
        assert sorted(table) == saved["channels"]
        assert all(sorted(map(int, per)) == saved["leads"] for per in table.values())
    assert saved["baselines_identical_in_both_evaluations"] is True
    for ch in saved["channels"]:
        for lead in map(str, saved["leads"]):
            for path in (pix, lat):
                s = path["scores"][ch][lead]
                assert math.isfinite(s["rmse"]) and s["rmse"] > 0 and math.isfinite(s["crps"]) and s["crps"] > 0
                assert s["ssr"] is None or s["ssr"] > 0  # None: JSON's stand-in for an infinite SSR (untrained toy)
            b = saved["baselines"][ch][lead]
            assert math.isfinite(b["persistence_rmse"]) and math.isfinite(b["climatology_rmse"])
            r = saved["ratios"][ch][lead]
            assert r["rmse_latent_over_pixel"] == pytest.approx(lat["scores"][ch][lead]["rmse"] / pix["scores"][ch][lead]["rmse"])
            assert r["crps_latent_over_pixel"] == pytest.approx(lat["scores"][ch][lead]["crps"] / pix["scores"][ch][lead]["crps"])
    assert saved["summary"]["cases"] == 48 and 0 <= saved["summary"]["latent_lower_rmse"] <= 48
    # the latent path really forecast in latent space and was decoded to the pixel grid; the pixel path did not
    import xarray as xr

    stores = {name: xr.open_zarr(tmp_path / "work" / name / "forecast.zarr", consolidated=False) for name in ("pixel", "latent")}
    assert stores["pixel"].attrs["autoencoder_sha256"] == "none (pixel space)"
    assert len(stores["latent"].attrs["autoencoder_sha256"]) == 64
    assert dict(stores["latent"].sizes) == dict(stores["pixel"].sizes) and stores["latent"].sizes["latitude"] == 8
    # the autoencoder's reconstruction on the test hours: finite and below the field's own std
    rec = lat["autoencoder_reconstruction"]
    assert sorted(rec["reconstruction_rmse"]) == saved["channels"]
    assert rec["n_times"] == 3 * 24 + 12 + 1  # 2000-01-09T00 .. the last init + 48 h (2000-01-12T12)
    for ch, err in rec["reconstruction_rmse"].items():
        assert math.isfinite(err) and 0 < err < rec["field_std"][ch], ch


def test_latent_vs_pixel_bad_arguments(tmp_path, load_benchmark, capsys):
    """Usage errors (exit 2) before anything is trained or written: a test period that is not held out after
    training, an autoencoder share outside (0, 1), a pixel patch that gives the two paths different token grids."""
    bench = load_benchmark("weather_latent_vs_pixel")
    out = ["--out", str(tmp_path / "x.json"), "--workdir", str(tmp_path / "work")]
    for args, message in ((["--train", "2000-01-01:2000-01-08", "--test", "2000-01-08:2000-01-09"], "must start after"),
                          (["--test", "2001-11-01:"], "need both START and END"),
                          (["--ae-fraction", "1.5"], "--ae-fraction"),
                          (["--patch", "2"], "multiple of the autoencoder's factor 4")):
        with pytest.raises(SystemExit) as exc:
            bench.main(args + out)
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "work").exists()
