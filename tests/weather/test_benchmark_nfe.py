"""The NFE benchmark's contract: every ≤ 10-call candidate scored against Heun-20 in one run."""

from __future__ import annotations

import json
from functools import partial

import lightning.pytorch as pl
import pytest
import torch

from apps.weather.datamodule import WeatherDataModule, WeatherModule
from apps.weather.model import WeatherForecaster
from apps.weather.objective import WeatherEDMObjective
from apps.weather.synthetic import write_synthetic_zarr


def test_nfe_benchmark_candidates(tmp_path, load_benchmark):
    data = write_synthetic_zarr(tmp_path / "syn.zarr", n_lat=8, n_lon=16, days=6, seed=1, time_chunk=48)
    torch.manual_seed(0)
    dm = WeatherDataModule(str(data), variables=["2m_temperature"], train_period="2000-01-01:2000-01-04", frames=2, step_hours=6, batch_size=4)
    net = WeatherForecaster(n_channels=1, n_statics=2, grid=(8, 16), frames=2, step_hours=6, patch=4, dim=16, num_heads=2, depth_dual=1, depth_single=1)
    module = WeatherModule(net, WeatherEDMObjective(), optimizer=partial(torch.optim.AdamW, lr=1e-3))
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, dm)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    bench = load_benchmark("weather_nfe")
    out = tmp_path / "nfe.json"
    res = bench.main(["--checkpoint", str(ckpt), "--data", str(data), "--inits", "2000-01-05T00", "--lead-hours", "12",
                      "--members", "3", "--candidates", "dpmpp_2m:10,heun:5,dpmpp_2m:10:20:3", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert set(saved["candidates"]) == {"dpmpp_2m10_nfe10", "heun5_nfe9", "dpmpp_2m10_nfe10_smax20_rho3"}
    grid_run = saved["runs"]["dpmpp_2m10_nfe10_smax20_rho3"]
    assert (grid_run["sigma_max"], grid_run["rho"]) == (20.0, 3.0) and saved["runs"]["dpmpp_2m10_nfe10"]["sigma_max"] is None
    assert grid_run["crps"] != saved["runs"]["dpmpp_2m10_nfe10"]["crps"]  # the grid reached the sampler
    assert saved["runs"]["heun20_nfe39"]["nfe_per_block"] == 39 and saved["runs"]["heun5_nfe9"]["nfe_per_block"] == 9
    for name, c in saved["candidates"].items():
        ref, got = saved["runs"]["heun20_nfe39"]["crps"], saved["runs"][name]["crps"]
        assert c["relative_crps_difference"] == pytest.approx({k: got[k] / ref[k] - 1 for k in ref})
    best = min(saved["candidates"], key=lambda n: saved["candidates"][n]["max_abs_relative_difference"])
    assert res["best_candidate"] == best
    for bad in ("rk4:10", "dpmpp_2m:10:x:3", "dpmpp_2m:10:20"):
        with pytest.raises(SystemExit):
            bench.main(["--checkpoint", str(ckpt), "--data", str(data), "--candidates", bad, "--out", str(out)])


def test_sampling_grid_override():
    obj = WeatherEDMObjective()
    default, custom = obj.sigmas(10), obj.sigmas(10, sigma_max=20.0, rho=3.0)
    assert float(default[0]) == pytest.approx(80.0) and float(custom[0]) == pytest.approx(20.0)
    assert float(custom[-2]) == pytest.approx(obj.sigma_min) and float(custom[-1]) == 0.0
    # rho = 3 spends more of the levels at high sigma than rho = 7 (same end points)
    assert float(obj.sigmas(10, 20.0, 3.0)[5]) > float(obj.sigmas(10, 20.0, 7.0)[5])
    with pytest.raises(ValueError, match="sigma_max"):
        obj.sigmas(10, sigma_max=0.001)
