"""Diurnal prior: hour-of-day fit, climatological tendencies, objective target and forecast round trip."""

from __future__ import annotations

from functools import partial

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from apps.weather.datamodule import WeatherDataModule, WeatherModule
from apps.weather.dataset import compute_stats, WindowDataset
from apps.weather.model import WeatherForecaster
from apps.weather.objective import WeatherEDMObjective
from apps.weather.prior import check_prior, fit_diurnal, prior_tendency
from apps.weather.sampling import ForecastOptions, forecast, load_checkpoint


def _diurnal_ds(hours: int = 24 * 12, freq: str = "h", noise: float = 0.3, seed: int = 0) -> tuple[xr.Dataset, callable]:
    times = pd.date_range("2019-03-01", periods=hours, freq=freq)
    lat, lon = np.array([50.0, 51.0, 52.0, 53.0]), np.array([0.0, 1.0, 2.0, 3.0])
    amp = 1.0 + 0.5 * lon[None, :] + 0 * lat[:, None]  # (H, W): amplitude varies in space

    def cycle(h):
        return amp * np.cos(2 * np.pi * (np.asarray(h, float)[..., None, None] - 14) / 24)

    rng = np.random.default_rng(seed)
    vals = 280 + cycle(times.hour.values) + rng.normal(0, noise, (len(times), 4, 4))
    ds = xr.Dataset({"2m_temperature": (("time", "latitude", "longitude"), vals.astype("f4"))},
                    coords={"time": times, "latitude": lat, "longitude": lon})
    return ds, cycle


def test_fit_diurnal_recovers_the_daily_cycle_and_prior_tendency():
    ds, cycle = _diurnal_ds()
    stats = compute_stats(ds)
    w = WindowDataset(ds, stats, frames=4, step_hours=6)
    table = fit_diurnal(w)
    assert table.shape == (24, 1, 4, 4)
    want = (cycle(np.arange(24)) - (0 - stats.mean[0])) / stats.std[0]  # normalised cycle, up to the mean
    got = table[:, 0] - table[:, 0].mean(0)
    np.testing.assert_allclose(got, want - want.mean(0), atol=0.15 / stats.std[0] + 0.02)
    # tendencies: D(h0 + 6j) − D(h0), per init hour
    init = torch.tensor([np.datetime64("2019-03-05T21", "ns").astype(np.int64)])
    p = prior_tendency(torch.from_numpy(table), init, frames=4, step_hours=6)
    assert p.shape == (1, 4, 1, 4, 4)
    for j in range(4):
        np.testing.assert_allclose(p[0, j, 0].numpy(), table[(21 + 6 * (j + 1)) % 24, 0] - table[21, 0], rtol=1e-6)
    with pytest.raises(ValueError, match="prior='climate' is not one of"):
        check_prior("climate")


def test_fit_diurnal_on_six_hourly_data_uses_fewer_harmonics():
    ds, cycle = _diurnal_ds(hours=4 * 12, freq="6h", noise=0.0)
    stats = compute_stats(ds)
    table = fit_diurnal(WindowDataset(ds, stats, frames=2, step_hours=6))
    # 4 hours present -> 1 harmonic: the 24-h cycle is represented exactly at the sampled hours
    for h in (0, 6, 12, 18):
        np.testing.assert_allclose(table[h, 0] * stats.std[0] + stats.mean[0], 280 + cycle(h), atol=1e-3)


def test_diurnal_prior_target_and_forecast_round_trip(tmp_path):
    """The diffused target is the departure from persistence + daily cycle; forecasts add it back."""
    ds, _ = _diurnal_ds(hours=24 * 10, noise=0.0)
    path = tmp_path / "d.zarr"
    ds.to_zarr(path, consolidated=False, zarr_format=3)
    dm = WeatherDataModule(str(path), train_period="2019-03-01:2019-03-08", frames=2, step_hours=6, batch_size=4, prior="diurnal")
    dm.setup("fit")
    item = dm.train_set[5]
    assert item["prior"].shape == (2, 1, 4, 4)
    batch = {k: v[None] if torch.is_tensor(v) else v for k, v in item.items()}
    # a noise-free daily cycle is explained by the prior: the target is ~0, unlike plain tendencies
    resid = WeatherEDMObjective.tendency(batch).abs().max()
    plain = WeatherEDMObjective.tendency({k: v for k, v in batch.items() if k != "prior"}).abs().max()
    assert float(resid * dm.delta_scale.max()) < 0.05 and float(plain * dm.delta_scale.max()) > 0.3
    with pytest.raises(ValueError, match="prior="):
        WeatherDataModule(str(path), prior="climate")
    torch.manual_seed(0)
    net = WeatherForecaster(n_channels=1, n_statics=0, grid=(4, 4), frames=2, step_hours=6, patch=2, dim=16, num_heads=2, depth_dual=1, depth_single=1, rope="grid")
    module = WeatherModule(net, WeatherEDMObjective(), optimizer=partial(torch.optim.AdamW, lr=1e-3))
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, dm)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    _, _, meta = load_checkpoint(ckpt)  # weights_only=True load
    assert tuple(meta["diurnal"].shape) == (24, 1, 4, 4)
    # the same checkpoint with a flat table: same seeds, so the forecasts differ by exactly the prior
    ck = torch.load(ckpt, map_location="cpu", weights_only=True)
    ck["weather"]["diurnal"] = torch.zeros_like(ck["weather"]["diurnal"])
    torch.save(ck, tmp_path / "flat.ckpt")
    opts = ForecastOptions(inits=["2019-03-09T03"], lead_hours=12, members=2, steps=3, batch_members=2)
    with_prior = xr.open_zarr(forecast(ckpt, str(path), tmp_path / "a.zarr", opts, progress=False), consolidated=False)
    flat = xr.open_zarr(forecast(tmp_path / "flat.ckpt", str(path), tmp_path / "b.zarr", opts, progress=False), consolidated=False)
    table = meta["diurnal"].numpy()[:, 0] * dm.stats.std[0]  # physical units
    for j, h in enumerate((9, 15)):
        diff = (with_prior["2m_temperature"] - flat["2m_temperature"]).isel(time=0, prediction_timedelta=j).values
        np.testing.assert_allclose(diff, np.broadcast_to(table[h] - table[3], (2, 4, 4)), atol=1e-3)
    assert np.abs(table[15] - table[3]).max() > 0.5  # the cycle is real, so the check has teeth
