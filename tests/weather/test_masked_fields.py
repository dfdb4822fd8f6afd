"""Declared masked fields (SST, NaN over land) in training, forecasting and scoring: the land cells are filled
for the network, weigh nothing in the loss, the tendency scales and the prior, come out NaN in the forecast and
are left out of the scores."""

from __future__ import annotations

from functools import partial

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import xarray as xr

from apps.weather.data import WeatherDataError, open_weather
from apps.weather.datamodule import WeatherDataModule, WeatherModule, tendency_scale
from apps.weather.dataset import WindowDataset, compute_stats
from apps.weather.evaluate import evaluate
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
