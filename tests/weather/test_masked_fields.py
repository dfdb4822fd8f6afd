"""Declared masked fields (SST, NaN over land) in training, forecasting and scoring: the land cells are filled
for the network, weigh nothing in the loss, the tendency scales and the prior, come out NaN in the forecast and
are left out of the scores."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from apps.weather.data import WeatherDataError, open_weather
from apps.weather.datamodule import WeatherDataModule, WeatherModule, tendency_scale
from apps.weather.dataset import WindowDataset, compute_stats
from apps.weather.evaluate import Climatology, _design, evaluate
from apps.weather.metrics import ScoreAccumulator
from apps.weather.model import WeatherForecaster
from apps.weather.objective import WeatherEDMObjective
from apps.weather.sampling import ForecastOptions, forecast
from apps.weather.synthetic import simulate

CHANNELS = ["2m_temperature", "sea_surface_temperature"]


@pytest.fixture(scope="module")
def sst_file(tmp_path_factory):
    """(NetCDF path, land mask (H, W)): 4 days hourly on 8 x 16, SST = 2 m temperature over sea, NaN over land."""
    ds = simulate(8, 16, days=4, seed=5)
    land = ds["land_sea_mask"].values >= 0.5
    assert 0 < land.sum() < land.size
    ds = ds.assign(sea_surface_temperature=ds["2m_temperature"].where(~land))
    path = tmp_path_factory.mktemp("sst") / "sst.nc"
    ds.to_netcdf(path)
    return path, land


def test_windows_fill_land_and_carry_the_mask(sst_file):
    """Items read 0 on land for SST (finite everywhere), ``valid`` is the sea for SST and everything for t2m, and
    the tendency scale of SST is the RMS over sea cells only."""
    path, land = sst_file
    ds = open_weather(path, variables=CHANNELS)
    stats = compute_stats(ds)
    assert np.all(np.isfinite(stats.mean)) and np.all(np.isfinite(stats.std))
    n = ds.sizes["time"]
    w = WindowDataset(ds, stats, frames=2, step_hours=6, history=1, block=n)
    item = w[3]
    for key in ("x0", "y", "x_hist"):
        assert torch.isfinite(item[key]).all(), key
    assert (item["x0"][1][torch.from_numpy(land)] == 0).all() and (item["x_hist"][0, 1][torch.from_numpy(land)] == 0).all()
    assert item["valid"].shape == (2, 2, 8, 16) and item["valid"].dtype == torch.bool
    assert item["valid"][:, 0].all() and (item["valid"][:, 1] == torch.from_numpy(~land)).all()
    scale = tendency_scale(w)
    raw = ds["sea_surface_temperature"].values.astype(np.float64)
    arr = (raw - stats.mean[1]) / stats.std[1]
    m = n - 12  # inits of the single read (block = the whole period) with both frames inside it
    for j in (1, 2):
        d = arr[6 * j : 6 * j + m] - arr[:m]
        assert scale[j - 1, 1] == pytest.approx(np.sqrt(np.mean(d[:, ~land] ** 2)), rel=1e-5)
    assert np.all(np.isfinite(scale))


class _WrongOnLand(torch.nn.Module):
    """The wrapped forecaster, its output (B, k, C, H, W) off by 50 at the land cells of channel 1 (SST)."""

    def __init__(self, net: torch.nn.Module, land: np.ndarray) -> None:
        super().__init__()
        self.net, self.land = net, torch.from_numpy(land)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        out = self.net(*args, **kwargs).clone()
        out[:, :, 1, self.land] += 50.0
        return out


def test_fit_forecast_evaluate_with_sst(sst_file, tmp_path):
    """Fit runs with a finite loss that ignores land SST, the forecast is NaN exactly on land for SST (every
    member and lead), and evaluate scores SST on the sea."""
    path, land = sst_file
    torch.manual_seed(0)
    dm = WeatherDataModule(str(path), variables=CHANNELS, train_period="2000-01-01:2000-01-03", frames=2, step_hours=6,
                           batch_size=4, prior="damped", history=1)
    dm.prepare_data()
    assert np.all(np.isfinite(dm.delta_scale)) and np.all(np.isfinite(dm.diurnal)) and np.all(np.isfinite(dm.damping))
    net = WeatherForecaster(n_channels=2, n_statics=len(dm.stats.static_names), grid=(8, 16), frames=2, step_hours=6, patch=4,
                            dim=32, num_heads=2, depth_dual=1, depth_single=1, history=1)
    objective = WeatherEDMObjective()
    module = WeatherModule(net, objective, optimizer=partial(torch.optim.AdamW, lr=1e-3))
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, dm)
    assert trainer.global_step == 2 and np.isfinite(float(trainer.callback_metrics["train/loss"]))
    # the land cells of SST weigh nothing: a network output that is wrong there gives the same loss
    batch = next(iter(dm.train_dataloader()))
    assert batch["valid"].shape == batch["y"].shape
    torch.manual_seed(1)
    before = objective.loss(net, batch)["loss"]
    torch.manual_seed(1)
    assert torch.isfinite(before) and objective.loss(_WrongOnLand(net, land), batch)["loss"] == before
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    opts = ForecastOptions(inits=["2000-01-04T00", "2000-01-04T06"], lead_hours=12, members=2, steps=2, sampler="dpmpp_2m")
    out = forecast(ckpt, path, tmp_path / "fc.zarr", opts, progress=False)
    fc = xr.open_zarr(out, consolidated=False)
    sst = fc["sea_surface_temperature"].values  # (init, member, lead, H, W)
    assert np.array_equal(np.isnan(sst), np.broadcast_to(land, sst.shape))
    assert np.all(np.isfinite(fc["2m_temperature"].values))
    res = evaluate(out, path, tmp_path / "ev", report=False)
    rows = [r for r in res["scores"] if r["variable"] == "sea_surface_temperature"]
    assert {r["lead_hours"] for r in rows} == {6, 12}
    for r in rows:
        assert all(np.isfinite(r[k]) for k in ("rmse", "crps", "acc", "persistence_rmse", "climatology_rmse", "ssr")), r
    # NaN outside the declared masked fields stays an error naming the field
    bad = xr.open_dataset(path).load()
    bad["2m_temperature"][5, 2, 3] = np.nan
    bad.to_netcdf(tmp_path / "bad.nc")
    with pytest.raises(WeatherDataError, match=r"bad\.nc \[2m_temperature\]: 1 NaN/inf value\(s\) in a field not declared as masked"):
        WeatherDataModule(str(tmp_path / "bad.nc"), variables=CHANNELS, frames=2).prepare_data()


def test_scores_leave_out_cells_without_data():
    """NaN south of 20° N (truth, members, climatology, persistence) scores globally exactly like the same fields
    without NaN on the northern-hemisphere region (lat ≥ 20°)."""
    rng = np.random.default_rng(0)
    lat, lon = np.linspace(-60.0, 60.0, 5), np.arange(8) * 45.0
    ens, truth = rng.normal(size=(4, 5, 8)), rng.normal(size=(5, 8))
    clim, pers = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    holes = [z.copy() for z in (ens, truth, clim, pers)]
    for z in holes:
        z[..., :3, :] = np.nan  # latitudes -60, -30, 0
    masked = ScoreAccumulator(lat, lon, ("global",), rank_ties="split")
    masked.add("sea_surface_temperature", 6, holes[0], holes[1], climatology=holes[2], persistence=holes[3])
    south_cut = ScoreAccumulator(lat, lon, ("northern-hemisphere",), rank_ties="split")
    south_cut.add("sea_surface_temperature", 6, ens, truth, climatology=clim, persistence=pers)
    (a,), (b,) = masked.result(), south_cut.result()
    for key in ("rmse", "bias", "mae", "acc", "crps", "spread", "ssr", "persistence_rmse", "climatology_rmse", "member_rmse"):
        assert np.isfinite(a[key]) and a[key] == pytest.approx(b[key], rel=1e-12), key
    np.testing.assert_allclose(a["rank_histogram"], b["rank_histogram"], rtol=1e-12)


def test_fallback_climatology_with_a_mask_changing_in_time():
    """Cells a masked field leaves empty for part of the period (sea ice) get the mean over the times holding data
    (K = 0) or their own least-squares fit (K = 1), whichever block the gap starts in; a cell never holding data
    (land) is NaN, a cell empty at every 06 UTC only then; the full cells and the other channel are unchanged."""
    times = pd.date_range("2001-01-01", periods=24 * 20, freq="h")
    hours = times.hour.values
    rng = np.random.default_rng(3)
    t2m = 280.0 + rng.normal(size=(len(times), 2, 3))
    sst = 285.0 + rng.normal(size=(len(times), 2, 3)) + np.cos(2 * np.pi * np.arange(len(times)) / len(times))[:, None, None]
    full = sst.copy()
    sst[:, 0, 0] = np.nan  # land
    sst[24 * 5 : 24 * 12, 1, 1] = np.nan  # ice after a first block with data
    sst[: 24 * 3, 1, 0] = np.nan  # ice from the start (first block empty)
    sst[hours == 6, 0, 2] = np.nan  # empty at every 06 UTC
    sst, full, t2m = (z.astype(np.float32).astype(np.float64) for z in (sst, full, t2m))  # states are read as float32
    ds = xr.Dataset({"sea_surface_temperature": (("time", "latitude", "longitude"), sst.astype("f8")),
                     "2m_temperature": (("time", "latitude", "longitude"), t2m)},
                    coords={"time": times, "latitude": [-10.0, 10.0], "longitude": [0.0, 120.0, 240.0]})
    chans = ["sea_surface_temperature", "2m_temperature"]
    for k in (0, 1):
        clim = Climatology(ds, chans, harmonics=k, block=48)
        assert clim.k == k
        for t in (np.datetime64("2001-01-10T06"), np.datetime64("2001-01-10T07")):
            h = int(np.datetime64(t, "h").astype(np.int64) % 24)
            c = clim(t)
            design = _design(times.values[hours == h], k)
            x_t = _design(np.array([np.datetime64(t, "s")]), k)[0]

            def fit(series: np.ndarray) -> float:
                ok = np.isfinite(series)
                coef = np.linalg.lstsq(design[ok], series[ok], rcond=None)[0]
                return float(x_t @ coef)

            assert np.isnan(c[0, 0, 0])
            for i, j in ((1, 1), (1, 0), (0, 1), (1, 2)):
                assert c[0, i, j] == pytest.approx(fit(sst[hours == h, i, j]), rel=1e-10, abs=1e-9), (k, t, i, j)
            if k == 0:
                assert c[0, 1, 1] == pytest.approx(np.nanmean(sst[hours == h, 1, 1]), rel=1e-12)
            if h == 6:
                assert np.isnan(c[0, 0, 2])
            else:
                assert c[0, 0, 2] == pytest.approx(fit(full[hours == h, 0, 2]), rel=1e-10)
            for i in range(2):
                for j in range(3):
                    assert c[1, i, j] == pytest.approx(fit(t2m[hours == h, i, j]), rel=1e-10)


class _AEWrongOnLand(torch.nn.Module):
    """The wrapped autoencoder, its reconstruction (B, C, H, W) off by 50 at the land cells of channel 1 (SST)."""

    def __init__(self, net: torch.nn.Module, land: np.ndarray) -> None:
        super().__init__()
        self.net, self.land = net, torch.from_numpy(land)

    def forward(self, x: torch.Tensor, statics: torch.Tensor | None = None) -> torch.Tensor:
        out = self.net(x, statics).clone()
        out[:, 1, self.land] += 50.0
        return out


@pytest.fixture(scope="module")
def sst_ice_file(tmp_path_factory):
    """(NetCDF path, land (H, W), ice (H, W)): as ``sst_file``, plus a few sea cells empty (sea ice) from
    2000-01-04T00 to 05 only."""
    ds = simulate(8, 16, days=4, seed=5)
    land = ds["land_sea_mask"].values >= 0.5
    ice = np.zeros_like(land)
    ice[-1, np.flatnonzero(~land[-1])[:3]] = True
    assert ice.sum() == 3
    t = ds.time.values.astype("datetime64[h]")
    frozen = (t >= np.datetime64("2000-01-04T00")) & (t <= np.datetime64("2000-01-04T05"))
    empty = land[None] | (ice[None] & frozen[:, None, None])
    ds = ds.assign(sea_surface_temperature=ds["2m_temperature"].where(~empty))
    path = tmp_path_factory.mktemp("sst_ice") / "sst_ice.nc"
    ds.to_netcdf(path)
    return path, land, ice


def test_latent_path_with_sst(sst_ice_file, tmp_path):
    """Autoencoder: fit with a finite loss that ignores land SST, encode gives finite latents and stores the
    cells with data, and ``forecast --autoencoder`` writes SST NaN exactly where the init is empty (land, plus
    the ice of the first init), every member and lead; t2m finite. A latent store without the cells is an error."""
    import shutil

    from apps.weather.autoencoder import AutoencoderObjective, SphericalAutoencoder, encode_dataset

    path, land, ice = sst_ice_file
    torch.manual_seed(0)
    dm = WeatherDataModule(str(path), variables=CHANNELS, frames=1, step_hours=1, batch_size=4)
    dm.prepare_data()
    ae = SphericalAutoencoder(2, len(dm.stats.static_names), latent_channels=4, width=8, n_down=2)
    objective = AutoencoderObjective()
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(WeatherModule(ae, objective, optimizer=partial(torch.optim.AdamW, lr=1e-3)), dm)
    assert trainer.global_step == 2 and np.isfinite(float(trainer.callback_metrics["train/loss"]))
    batch = next(iter(dm.train_dataloader()))
    assert torch.isfinite(batch["x0"]).all() and batch["x0_valid"].shape == batch["x0"].shape
    before = objective.loss(ae, batch)["loss"]
    assert torch.isfinite(before) and objective.loss(_AEWrongOnLand(ae, land), batch)["loss"] == before
    ae_ckpt = tmp_path / "ae.ckpt"
    trainer.save_checkpoint(ae_ckpt)

    latent = encode_dataset(ae_ckpt, path, tmp_path / "latent.zarr", block=24)
    lat_ds = open_weather(latent)
    assert lat_ds.attrs["factor"] == 4 and len(lat_ds.attrs["autoencoder_sha256"]) == 64  # kept over the appended blocks
    assert len(lat_ds.data_vars) == 4 and all(np.all(np.isfinite(lat_ds[v].values)) for v in lat_ds.data_vars)
    stored = xr.open_zarr(latent, group="pixel_valid", consolidated=False)
    sst = xr.open_dataset(path)["sea_surface_temperature"].values
    assert stored.attrs["channels"] == ["sea_surface_temperature"]
    assert np.array_equal(stored["valid"].values[:, 0], np.isfinite(sst))

    dm_lat = WeatherDataModule(str(latent), train_period="2000-01-01:2000-01-03", frames=2, step_hours=6, batch_size=4)
    net = WeatherForecaster(n_channels=4, grid=(2, 4), frames=2, patch=1, dim=32, num_heads=2, depth_dual=1, depth_single=0, rope="geo")
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(WeatherModule(net, WeatherEDMObjective()), dm_lat)
    fc_ckpt = tmp_path / "latent_fc.ckpt"
    trainer.save_checkpoint(fc_ckpt)
    opts = ForecastOptions(inits=["2000-01-04T00", "2000-01-04T06"], lead_hours=12, members=2, steps=2, sampler="dpmpp_2m")
    out = forecast(fc_ckpt, latent, tmp_path / "fc.zarr", opts, progress=False, autoencoder=ae_ckpt)
    fc = xr.open_zarr(out, consolidated=False)
    sst_fc = fc["sea_surface_temperature"].values  # (init, member, lead, H, W)
    assert sst_fc.shape == (2, 2, 2, 8, 16)
    empty = np.stack([land | ice, land])[:, None, None]
    assert np.array_equal(np.isnan(sst_fc), np.broadcast_to(empty, sst_fc.shape))
    assert np.all(np.isfinite(fc["2m_temperature"].values))
    # a latent-only store keeps the cells with data of each init: its lazily decoded view equals the decoded store
    from apps.weather.latent_store import open_decoded

    lat_only = forecast(fc_ckpt, latent, tmp_path / "fc_latent.zarr", replace(opts, store="latent"), progress=False, autoencoder=ae_ckpt)
    assert xr.open_zarr(lat_only, group="pixel_valid", consolidated=False).attrs["channels"] == ["sea_surface_temperature"]
    view = open_decoded(lat_only)
    assert np.array_equal(view["sea_surface_temperature"].values, sst_fc, equal_nan=True)
    assert np.array_equal(view["2m_temperature"].values, fc["2m_temperature"].values)

    old = tmp_path / "latent_old.zarr"
    shutil.copytree(latent, old)
    shutil.rmtree(old / "pixel_valid")
    with pytest.raises(WeatherDataError, match=r"latent_old\.zarr \[sea_surface_temperature\]: no 'pixel_valid' group"):
        forecast(fc_ckpt, old, tmp_path / "fc_old.zarr", opts, progress=False, autoencoder=ae_ckpt)
    assert not (tmp_path / "fc_old.zarr.partial").exists() and not (tmp_path / "fc_old.zarr").exists()
