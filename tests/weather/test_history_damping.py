"""Damped-anomaly prior (``prior="damped"``) and history conditioning (``history=h``)."""

from __future__ import annotations

from functools import partial

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from apps.weather.datamodule import WeatherDataModule, WeatherModule
from apps.weather.dataset import WindowDataset, compute_stats
from apps.weather.model import WeatherForecaster
from apps.weather.objective import WeatherEDMObjective
from apps.weather.prior import fit_damping, fit_diurnal, prior_tendency
from apps.weather.sampling import ForecastOptions, forecast, load_checkpoint


def _ar1_ds(phi: float, hours: int = 24 * 60, seed: int = 0) -> xr.Dataset:
    """Daily cycle plus a spatially uniform hourly AR(1) anomaly with coefficient ``phi``."""
    times = pd.date_range("2019-01-01", periods=hours, freq="h")
    rng = np.random.default_rng(seed)
    a = np.zeros(hours)
    for t in range(1, hours):
        a[t] = phi * a[t - 1] + rng.normal()
    cyc = 3.0 * np.cos(2 * np.pi * (times.hour.values - 14) / 24)
    vals = 280 + cyc[:, None, None] + a[:, None, None] + 0.05 * rng.normal(size=(hours, 4, 4))
    lat, lon = np.array([50.0, 51.0, 52.0, 53.0]), np.array([0.0, 1.0, 2.0, 3.0])
    return xr.Dataset({"2m_temperature": (("time", "latitude", "longitude"), vals.astype("f4"))},
                      coords={"time": times, "latitude": lat, "longitude": lon})


def test_fit_damping_recovers_the_ar1_decay():
    for phi in (0.97, 0.9):
        ds = _ar1_ds(phi)
        w = WindowDataset(ds, compute_stats(ds), frames=4, step_hours=6)
        a = fit_damping(w, fit_diurnal(w))[:, 0]
        want = phi ** (6 * np.arange(1, 5))
        # 60 days of one AR(1) series: sampling error of the lag regression ~ 0.05-0.1
        np.testing.assert_allclose(a, want, atol=0.1)
    assert a[0] > a[-1]  # decays with lead


def test_damped_prior_tendency_formula():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(24, 1, 3, 3, generator=g)
    x0 = torch.randn(2, 1, 3, 3, generator=g)
    init = torch.tensor([np.datetime64("2019-03-05T21", "ns").astype(np.int64), np.datetime64("2019-03-06T00", "ns").astype(np.int64)])
    damping = torch.tensor([[0.8], [0.5], [0.3], [0.1]])
    p = prior_tendency(table, init, 4, 6, x0=x0, damping=damping)
    plain = prior_tendency(table, init, 4, 6)
    for b, h0 in enumerate((21, 0)):
        for j in range(4):
            hj = (h0 + 6 * (j + 1)) % 24
            want = table[hj] + damping[j] * (x0[b] - table[h0]) - x0[b]  # prior state minus x0
            torch.testing.assert_close(p[b, j], want, atol=1e-5, rtol=1e-5)
    # a_j = 1 is the plain diurnal prior
    torch.testing.assert_close(prior_tendency(table, init, 4, 6, x0=x0, damping=torch.ones(4, 1)), plain)
    with pytest.raises(ValueError, match="needs x0"):
        prior_tendency(table, init, 4, 6, damping=damping)


def test_window_history_items():
    ds = _ar1_ds(0.9, hours=24 * 4)
    stats = compute_stats(ds)
    w0 = WindowDataset(ds, stats, frames=2, step_hours=6)
    w2 = WindowDataset(ds, stats, frames=2, step_hours=6, history=2)
    assert "x_hist" not in w0[0] and int(w0[0]["index"]) == 0
    assert int(w2.indices[0]) == 12 and len(w2) == len(w0) - 12
    item = w2[3]
    t0 = int(item["index"])
    assert item["x_hist"].shape == (2, 1, 4, 4)
    np.testing.assert_array_equal(item["x_hist"][0].numpy(), w2.frame(t0 - 12))
    np.testing.assert_array_equal(item["x_hist"][1].numpy(), w2.frame(t0 - 6))
    with pytest.raises(ValueError, match="history=-1"):
        WindowDataset(ds, stats, frames=2, step_hours=6, history=-1)


def test_model_uses_the_history():
    torch.manual_seed(0)
    net = WeatherForecaster(n_channels=1, grid=(4, 4), frames=2, step_hours=6, patch=2, dim=16, num_heads=2,
                            depth_dual=1, depth_single=1, rope="grid", history=1)
    with torch.no_grad():  # the core zero-initialises the output (adaLN-zero): give every weight a value
        for prm in net.parameters():
            prm.normal_(0, 0.2)
    args = (torch.randn(2, 2, 1, 4, 4), torch.zeros(2), torch.randn(2, 1, 4, 4), torch.zeros(2, 0, 4, 4),
            torch.zeros(2, dtype=torch.int64), torch.linspace(50, 53, 4), torch.linspace(0, 3, 4))
    h = torch.randn(2, 1, 1, 4, 4)
    y1, y2 = net(*args, x_hist=h), net(*args, x_hist=h + 1.0)
    assert y1.shape == (2, 2, 1, 4, 4) and (y1 - y2).abs().max() > 1e-4
    with pytest.raises(ValueError, match="x_hist"):
        net(*args)


def test_damped_history_checkpoint_forecast(tmp_path, monkeypatch):
    """Train 2 steps with prior="damped" and history=1; forecast two blocks; early init is an error."""
    ds = _ar1_ds(0.95, hours=24 * 10)
    path = tmp_path / "d.zarr"
    ds.to_zarr(path, consolidated=False, zarr_format=3)
    dm = WeatherDataModule(str(path), train_period="2019-01-01:2019-01-08", frames=2, step_hours=6, batch_size=4,
                           prior="damped", history=1)
    dm.setup("fit")
    item = dm.train_set[0]
    assert item["x_hist"].shape == (1, 1, 4, 4) and dm.damping.shape == (2, 1)
    torch.manual_seed(0)
    net = WeatherForecaster(n_channels=1, grid=(4, 4), frames=2, step_hours=6, patch=2, dim=16, num_heads=2,
                            depth_dual=1, depth_single=1, rope="grid", history=1)
    module = WeatherModule(net, WeatherEDMObjective(), optimizer=partial(torch.optim.AdamW, lr=1e-3))
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, dm)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    net2, _, meta = load_checkpoint(ckpt)
    assert net2.history == 1 and meta["history"] == 1 and tuple(meta["damping"].shape) == (2, 1)
    opts = ForecastOptions(inits=["2019-01-09T00"], lead_hours=24, members=2, steps=2, batch_members=2)
    calls = []
    orig = WeatherEDMObjective.sample_block

    def spy(self, net, x0, *args, x_hist=None, **kw):
        y = orig(self, net, x0, *args, x_hist=x_hist, **kw)
        calls.append((x0.clone(), x_hist.clone(), y.clone()))
        return y

    monkeypatch.setattr(WeatherEDMObjective, "sample_block", spy)
    a = xr.open_zarr(forecast(ckpt, str(path), tmp_path / "a.zarr", opts, progress=False), consolidated=False)
    monkeypatch.undo()
    assert len(calls) == 2  # two 12 h blocks
    truth = WindowDataset(xr.open_zarr(path, consolidated=False), dm.stats, frames=2, step_hours=6)
    t_init = int(np.flatnonzero(truth.times == np.datetime64("2019-01-09T00"))[0])
    # block 1: the analysis 6 h before the init; block 2: block 1's first frame (the state before its last)
    np.testing.assert_allclose(calls[0][1][:, 0].numpy(), np.broadcast_to(truth.frame(t_init - 6), (2, 1, 4, 4)), atol=1e-5)
    np.testing.assert_allclose(calls[1][1][:, 0].numpy(), calls[0][2][:, 0].numpy(), atol=1e-4)
    np.testing.assert_allclose(calls[1][0].numpy(), calls[0][2][:, 1].numpy(), atol=1e-4)
    b = xr.open_zarr(forecast(ckpt, str(path), tmp_path / "b.zarr", opts, progress=False), consolidated=False)
    va = a["2m_temperature"].values
    assert va.shape == (1, 2, 4, 4, 4) and np.isfinite(va).all()
    np.testing.assert_array_equal(va, b["2m_temperature"].values)  # deterministic with the history rollout
    early = ForecastOptions(inits=["2019-01-01T03"], lead_hours=12, members=2, steps=2, batch_members=2)
    with pytest.raises(Exception, match="history"):
        forecast(ckpt, str(path), tmp_path / "c.zarr", early, progress=False)
    # the history state is found by time: a file without 2019-01-08T18 is an error naming it (before, the state
    # one position earlier, 17 UTC, was used silently)
    gap = tmp_path / "gap.nc"
    xr.open_zarr(path, consolidated=False).load().drop_sel(time=np.datetime64("2019-01-08T18")).to_netcdf(gap)
    with pytest.raises(ValueError, match=r"gap.nc \[time\]: init 2019-01-09T00 needs 1 state.*missing 2019-01-08T18"):
        forecast(ckpt, str(gap), tmp_path / "g.zarr", opts, progress=False)
    assert not (tmp_path / "g.zarr.partial").exists()
    # a 6-hourly copy of the same file gives the same forecast (the states are looked up by time, not position)
    six = tmp_path / "six.nc"
    full = xr.open_zarr(path, consolidated=False).load()
    full.isel(time=np.flatnonzero(full.time.dt.hour.values % 6 == 0)).to_netcdf(six)
    c = xr.open_zarr(forecast(ckpt, str(six), tmp_path / "six.zarr", opts, progress=False), consolidated=False)
    np.testing.assert_array_equal(c["2m_temperature"].values, va)
