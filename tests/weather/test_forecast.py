"""Forecaster, EDM objective, checkpoint round trip and resumable CF-compliant ensemble rollouts."""

from __future__ import annotations

import json
import shutil
from functools import partial

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import xarray as xr

from apps.weather.datamodule import WeatherDataModule, WeatherModule
from apps.weather.evaluate import evaluate
from apps.weather.model import WeatherForecaster
from apps.weather.objective import WeatherEDMObjective
from apps.weather.data import WeatherDataError
from apps.weather.cli import main
from apps.weather.sampling import ForecastOptions, forecast, load_checkpoint, member_nets, member_seed, parse_inits
from apps.weather.synthetic import write_synthetic_zarr

NET = dict(n_channels=6, n_statics=2, grid=(8, 16), frames=2, step_hours=6, patch=4, dim=32, num_heads=2, depth_dual=1, depth_single=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("fc")
    data = write_synthetic_zarr(root / "syn.zarr", n_lat=8, n_lon=16, days=12, seed=1, time_chunk=48)
    torch.manual_seed(0)
    dm = WeatherDataModule(str(data), train_period="2000-01-01:2000-01-09", frames=2, step_hours=6, batch_size=4)
    net = WeatherForecaster(**NET)
    module = WeatherModule(net, WeatherEDMObjective(), optimizer=partial(torch.optim.AdamW, lr=1e-3))
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, dm)
    ckpt = root / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    return root, data, ckpt


def test_untrained_forecaster_is_zero_and_grid_checked():
    net = WeatherForecaster(**NET)
    b = 2
    args = (torch.randn(b, 2, 6, 8, 16), torch.zeros(b), torch.randn(b, 6, 8, 16), torch.randn(b, 2, 8, 16), torch.zeros(b, dtype=torch.int64))
    lat, lon = torch.linspace(-78.75, 78.75, 8), torch.arange(16) * 22.5
    assert torch.count_nonzero(net(*args, lat, lon)) == 0
    with pytest.raises(ValueError, match="grid mismatch"):
        net(*args, torch.linspace(-80, 80, 9)[:8].repeat(2)[:9], lon)
    with pytest.raises(ValueError, match="rope"):
        WeatherForecaster(**{**NET, "rope": "healpix"})
    # a patch-aligned crop of the grid: accepted in training mode (train_crop), refused in eval mode
    crop = (args[0][..., :4, 4:12], args[1], args[2][..., :4, 4:12], args[3][..., :4, 4:12], args[4])
    net.train()
    assert net(*crop, lat[:4], lon[4:12]).shape == (b, 2, 6, 4, 8)
    with pytest.raises(ValueError, match="grid mismatch"):  # not a multiple of the patch
        net(args[0][..., :3, :], args[1], args[2][..., :3, :], args[3][..., :3, :], args[4], lat[:3], lon)
    with pytest.raises(ValueError, match="lat/lon describe"):
        net(*crop, lat, lon)
    net.eval()
    with pytest.raises(ValueError, match="grid mismatch: the model was built for 8x16"):
        net(*crop, lat[:4], lon[4:12])


def test_geo_rope_seam_invariance():
    """Rolling the globe by whole token columns and shifting longitudes gives identical output."""
    torch.manual_seed(1)
    net = WeatherForecaster(**NET)
    for p in net.parameters():  # break the zero init so the output depends on the input
        torch.nn.init.normal_(p, std=0.05)
    b = 1
    x, x0, st = torch.randn(b, 2, 6, 8, 16), torch.randn(b, 6, 8, 16), torch.randn(b, 2, 8, 16)
    c, it = torch.zeros(b), torch.zeros(b, dtype=torch.int64)
    lat, lon = torch.linspace(-78.75, 78.75, 8).double(), (torch.arange(16) * 22.5).double()
    y = net(x, c, x0, st, it, lat, lon)
    # shift the grid by 4 columns (one patch) and relabel longitudes: same physical field
    r = lambda z: torch.roll(z, -4, dims=-1)  # noqa: E731
    y2 = net(r(x), c, r(x0), r(st), it, lat, torch.roll(lon, -4))
    torch.testing.assert_close(r(y), y2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("harmonics", [0, 4])
def test_year_harmonics_decide_whether_the_date_matters(harmonics):
    """With year_harmonics=0 the calendar is the hour of day alone: two dates at one hour give the same output."""
    torch.manual_seed(2)
    net = WeatherForecaster(**{**NET, "year_harmonics": harmonics})
    assert net.init_kwargs["year_harmonics"] == harmonics
    for p in net.parameters():  # break the zero init so the output depends on the input
        torch.nn.init.normal_(p, std=0.05)
    x, x0, st = torch.randn(1, 2, 6, 8, 16), torch.randn(1, 6, 8, 16), torch.randn(1, 2, 8, 16)
    lat, lon = torch.linspace(-78.75, 78.75, 8), torch.arange(16) * 22.5
    at = lambda t: torch.tensor([np.datetime64(t, "ns").astype(np.int64)])  # noqa: E731
    with torch.no_grad():
        march, july = (net(x, torch.zeros(1), x0, st, at(t), lat, lon) for t in ("2019-03-01T06", "2019-07-01T06"))
        six_later = net(x, torch.zeros(1), x0, st, at("2019-03-01T12"), lat, lon)
    assert torch.equal(march, july) == (harmonics == 0)
    assert not torch.equal(march, six_later)  # the hour of day always counts
    with pytest.raises(ValueError, match="year_harmonics=-1"):
        WeatherForecaster(**{**NET, "year_harmonics": -1})


def test_training_loss_and_checkpoint_meta(trained):
    _, _, ckpt = trained
    ck = torch.load(ckpt, weights_only=True)
    meta = ck["weather"]
    assert meta["frames"] == 2 and meta["net"]["grid"] == [8, 16]
    assert len(meta["stats"]["channels"]) == 6 and np.asarray(meta["delta_scale"]).shape == (2, 6)
    assert meta["net"]["year_harmonics"] == 4


def test_checkpoint_without_year_harmonics_loads_with_four(trained, tmp_path):
    """Checkpoints written before the option had 4 year-fraction harmonics, and load so."""
    _, _, ckpt = trained
    old = _variant(ckpt, tmp_path / "old.ckpt", seed=0, edit=lambda w: w["net"].pop("year_harmonics"))
    assert "year_harmonics" not in torch.load(old, weights_only=True)["weather"]["net"]
    assert load_checkpoint(old)[0].year_harmonics == 4


def test_seeds_are_counter_based():
    t = np.datetime64("2000-01-05T00", "h")
    seeds = {member_seed(0, t, m, b) for m in range(4) for b in range(3)}
    assert len(seeds) == 12
    assert member_seed(0, t, 1, 2) == member_seed(0, t, 1, 2)
    assert parse_inits("2000-01-01T00:2000-01-02T00:12") == [np.datetime64(f"2000-01-0{d}T{h}", "h") for d, h in ((1, "00"), (1, "12"), (2, "00"))]


def test_forecast_schema_and_resume_identical(trained, tmp_path):
    root, data, ckpt = trained
    opts = ForecastOptions(inits=["2000-01-10T00", "2000-01-10T07"], lead_hours=24, members=3, steps=3, batch_members=2, seed=5)
    full = forecast(ckpt, data, tmp_path / "full.zarr", opts, progress=False)
    fc = xr.open_zarr(full, consolidated=False)
    assert fc["geopotential"].dims == ("time", "realization", "prediction_timedelta", "level", "latitude", "longitude")
    assert fc.sizes["prediction_timedelta"] == 4 and fc.sizes["realization"] == 3
    assert list(fc.prediction_timedelta.values.astype("timedelta64[h]").astype(int)) == [6, 12, 18, 24]
    assert fc.valid_time.values[1, 0] == np.datetime64("2000-01-10T13")
    assert fc["2m_temperature"].attrs["units"] == "K" and fc["2m_temperature"].attrs["standard_name"] == "air_temperature"
    assert "model_sha256" in fc.attrs and json.loads(fc.attrs["options"])["seed"] == 5
    vals = fc["2m_temperature"].values
    assert np.all(np.isfinite(vals))
    assert not np.allclose(vals[0, 0], vals[0, 1])  # members differ
    # killed after one unit, then restarted: identical output
    part = forecast(ckpt, data, tmp_path / "resumed.zarr", opts, progress=False, stop_after_units=1)
    assert part.name.endswith(".partial") and not (tmp_path / "resumed.zarr").exists()
    res = forecast(ckpt, data, tmp_path / "resumed.zarr", opts, progress=False)
    rs = xr.open_zarr(res, consolidated=False)
    for v in fc.data_vars:
        np.testing.assert_array_equal(rs[v].values, fc[v].values)
    # member batching does not change members
    single = forecast(ckpt, data, tmp_path / "b1.nc", ForecastOptions(**{**opts.__dict__, "batch_members": 1, "format": "netcdf"}), progress=False)
    nc = xr.open_dataset(single)
    np.testing.assert_allclose(nc["temperature"].values, fc["temperature"].values, rtol=1e-5, atol=1e-3)


def _variant(ckpt, path, seed: int, edit=None):
    """A copy of ``ckpt`` with its net's weights moved (a stand-in for a net trained from another seed)."""
    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    gen = torch.Generator().manual_seed(seed)
    blob["state_dict"] = {k: v + 0.05 * torch.randn(v.shape, generator=gen) if k.startswith("net.") and v.is_floating_point() else v
                          for k, v in blob["state_dict"].items()}
    if edit:
        edit(blob["weather"])
    torch.save(blob, path)
    return path


def test_churn_settings_reach_the_sampler(trained, tmp_path):
    """EDM churn with its window and noise scale (core ``Churn``): a window above every level is the ODE forecast
    bit for bit, S_noise 1 is the plain churn, S_noise 2 another forecast; bad settings fail at construction."""
    root, data, ckpt = trained
    base = dict(inits=["2000-01-10T00"], lead_hours=12, members=2, steps=3, seed=2)
    run = lambda name, **kw: xr.open_zarr(forecast(ckpt, data, tmp_path / name, ForecastOptions(**base, **kw),  # noqa: E731
                                                   progress=False), consolidated=False)["2m_temperature"].values
    ode, churned = run("ode.zarr"), run("churn.zarr", churn=5.0)
    assert not np.array_equal(ode, churned)
    assert np.array_equal(run("window.zarr", churn=5.0, s_tmin=1e6), ode)  # no level reaches S_tmin
    assert np.array_equal(run("one.zarr", churn=5.0, s_noise=1.0, s_tmax=1e6), churned)
    assert not np.array_equal(run("two.zarr", churn=5.0, s_noise=2.0), churned)
    with pytest.raises(ValueError, match="Churn needs"):
        ForecastOptions(**base, churn=5.0, s_noise=-1.0)
    with pytest.raises(SystemExit):
        main(["forecast", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(tmp_path / "bad.zarr"),
              "--inits", "2000-01-10T00", "--lead-hours", "12", "--churn", "1", "--s-tmin", "5", "--s-tmax", "1"])
    assert not (tmp_path / "bad.zarr.partial").exists()


def test_member_nets_split_members_in_contiguous_runs():
    assert member_nets(10, 4).tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert member_nets(10, 5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert member_nets(3, 1).tolist() == [0, 0, 0] and member_nets(3, 3).tolist() == [0, 1, 2]


def test_multi_model_ensemble_pools_the_nets_members(trained, tmp_path):
    root, data, ckpt = trained
    other = _variant(ckpt, tmp_path / "other.ckpt", seed=1)
    # 4 members over 2 nets, in batches of 3: the first batch straddles the two nets
    opts = ForecastOptions(inits=["2000-01-10T00"], lead_hours=12, members=4, steps=2, batch_members=3, seed=5)
    pooled = xr.open_zarr(forecast([ckpt, other], data, tmp_path / "pooled.zarr", opts, progress=False), consolidated=False)
    alone = {name: xr.open_zarr(forecast(c, data, tmp_path / f"{name}.zarr", opts, progress=False), consolidated=False)
             for name, c in (("first", ckpt), ("second", other))}
    t2m = {k: v["2m_temperature"].values for k, v in {"pooled": pooled, **alone}.items()}
    # member m of the pool is member m of its own net's forecast: same seeds, only the batch size differs
    np.testing.assert_allclose(t2m["pooled"][:, :2], t2m["first"][:, :2], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(t2m["pooled"][:, 2:], t2m["second"][:, 2:], rtol=1e-5, atol=1e-3)
    assert np.abs(t2m["first"][:, 2:] - t2m["second"][:, 2:]).max() > 1e-2  # the two nets do differ
    hashes = pooled.attrs["model_sha256"].split(",")
    assert len(hashes) == 2 and hashes[0] == alone["first"].attrs["model_sha256"] and "member_model" in pooled.attrs
    assert "member_model" not in alone["first"].attrs
    # nets trained on another data description cannot share an ensemble: named, and nothing written
    shifted = _variant(ckpt, tmp_path / "shifted.ckpt", seed=2, edit=lambda w: w.update(lat=[x + 1.0 for x in w["lat"]]))
    with pytest.raises(WeatherDataError, match=r"shifted\.ckpt.*'lat' differs from the first checkpoint"):
        forecast([ckpt, shifted], data, tmp_path / "bad.zarr", opts, progress=False)
    assert not (tmp_path / "bad.zarr").exists() and not (tmp_path / "bad.zarr.partial").exists()


def test_dry_run_counts_what_the_forecast_does_and_writes_nothing(trained, tmp_path, monkeypatch, capsys):
    """The plan's network calls and output shape equal a real run's (calls counted in the net's forward)."""
    from apps.weather.plan import plan_forecast

    _, data, ckpt = trained
    calls = []
    forward = WeatherForecaster.forward
    monkeypatch.setattr(WeatherForecaster, "forward", lambda self, *a, **kw: calls.append(1) or forward(self, *a, **kw))
    opts = ForecastOptions(["2000-01-10T00", "2000-01-10T12"], lead_hours=18, members=3, steps=3, batch_members=2)
    plan = plan_forecast(ckpt, data, opts)
    # 2 frames of 6 h per block: 18 h -> 2 blocks; 2 inits x 2 member batches; Heun with 3 levels: 2*3 - 1 calls
    assert (plan["blocks_per_init"], plan["work_units"], plan["network_calls_per_block"]) == (2, 4, 5)
    assert plan["network_calls"] == 5 * 4 * 2 and plan["output_shape"] == [2, 3, 4, 6, 8, 16]
    assert plan["seconds_per_block"] > 0 and plan["estimated_seconds"] == pytest.approx(plan["seconds_per_block"] * 8)
    assert list(tmp_path.iterdir()) == []
    calls.clear()
    out = forecast(ckpt, data, tmp_path / "fc.zarr", opts, progress=False)
    fc = xr.open_zarr(out, consolidated=False)
    assert len(calls) == plan["network_calls"]
    first = next(iter(fc.data_vars.values()))
    n_channels = sum(v.sizes.get("level", 1) for v in fc.data_vars.values())  # a level is a channel
    assert [*(first.sizes[d] for d in ("time", "realization", "prediction_timedelta")), n_channels] == plan["output_shape"][:4]
    assert sum(v.size for v in fc.data_vars.values()) * 4 == plan["output_bytes"]
    assert plan_forecast(ckpt, data, ForecastOptions(opts.inits, 12, members=2, sampler="dpmpp_2m", steps=4))["network_calls_per_block"] == 4
    with pytest.raises(WeatherDataError, match=r"syn.zarr \[time\]: init time\(s\) 2031-01-01T00 not in the data"):
        plan_forecast(ckpt, data, ForecastOptions(["2031-01-01T00"], 12))
    with pytest.raises(WeatherDataError, match="lead_hours=7 must be a positive multiple"):
        plan_forecast(ckpt, data, ForecastOptions(opts.inits, 7))
    # the command line: printed, returned, nothing written
    res = main(["forecast", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(tmp_path / "dry.zarr"),
                "--inits", "2000-01-10T00", "--lead-hours", "12", "--members", "2", "--steps", "2", "--dry-run"])
    assert res["network_calls"] == 3 and not (tmp_path / "dry.zarr").exists()
    assert "dry run: nothing written" in capsys.readouterr().out


def test_forecast_bad_input(trained, tmp_path):
    root, data, ckpt = trained
    other = write_synthetic_zarr(tmp_path / "other.zarr", n_lat=4, n_lon=8, days=2, seed=1)
    opts = ForecastOptions(inits=["2000-01-01T00"], lead_hours=12, members=2, steps=2)
    with pytest.raises(ValueError, match=r"latitude 4 from .* does not match the checkpoint's grid \(latitude 8 from"):
        forecast(ckpt, other, tmp_path / "x.zarr", opts, progress=False)
    with pytest.raises(ValueError, match="not in the data"):
        forecast(ckpt, data, tmp_path / "y.zarr", ForecastOptions(inits=["1999-01-01T00"], lead_hours=12, members=2), progress=False)
    assert not (tmp_path / "x.zarr").exists() and not (tmp_path / "y.zarr").exists()
    # same coordinate count, shifted: the message shows where the grids differ
    shifted_ds = xr.open_zarr(data).load()
    shifted = tmp_path / "shifted.nc"
    shifted_ds.assign_coords(latitude=shifted_ds.latitude + 1.0).to_netcdf(shifted)
    with pytest.raises(ValueError, match=r"latitude 8 from -?[\d.]+ to [\d.]+; .* does not match the checkpoint's grid"):
        forecast(ckpt, shifted, tmp_path / "s.zarr", opts, progress=False)
    # bad input found only when the states are read (NaN at an init, a missing level): no .partial left behind,
    # so the corrected run starts cleanly
    nan_ds = shifted_ds.copy(deep=True)
    nan_ds["temperature"].loc[dict(time="2000-01-02T00")] = np.nan
    nan_path = tmp_path / "nan.nc"
    nan_ds.to_netcdf(nan_path)
    two_inits = ForecastOptions(inits=["2000-01-01T00", "2000-01-02T00"], lead_hours=12, members=2, steps=2)
    with pytest.raises(ValueError, match=r"nan.nc \[temperature/\d+\]: .*NaN"):
        forecast(ckpt, nan_path, tmp_path / "n.zarr", two_inits, progress=False)
    assert not (tmp_path / "n.zarr").exists() and not (tmp_path / "n.zarr.partial").exists()
    one_level = tmp_path / "one_level.nc"
    shifted_ds.isel(level=[0]).to_netcdf(one_level)
    with pytest.raises(ValueError, match=r"one_level.nc \[level\]: missing pressure level"):
        forecast(ckpt, one_level, tmp_path / "l.zarr", opts, progress=False)
    assert not (tmp_path / "l.zarr.partial").exists()


def test_forecast_refuses_a_nan_static_field(trained, tmp_path):
    """NaN in a static field (land-sea mask) used to give an all-NaN forecast and exit 0; now an error naming the
    file and the field, before anything is written."""
    root, data, ckpt = trained
    ds = xr.open_zarr(data, consolidated=False).load()
    ds["land_sea_mask"][3, 5] = np.nan
    ds.to_netcdf(tmp_path / "nan_lsm.nc")
    opts = ForecastOptions(inits=["2000-01-10T00"], lead_hours=12, members=2, steps=2)
    with pytest.raises(ValueError, match=r"nan_lsm\.nc \[land_sea_mask\]: 1 NaN"):
        forecast(ckpt, tmp_path / "nan_lsm.nc", tmp_path / "o.zarr", opts, progress=False)
    assert not list(tmp_path.glob("o.zarr*"))


def test_forecast_output_is_cf(trained, tmp_path):
    """Axes identifiable (axis X/Y/Z, level as air_pressure), no _FillValue on coordinate variables, time units and
    calendar, the 2-D valid_time named in `coordinates`; in NetCDF (read by netCDF4 and xarray) and zarr."""
    import netCDF4

    root, data, ckpt = trained
    opts = ForecastOptions(inits=["2000-01-10T00"], lead_hours=12, members=2, steps=2, format="netcdf")
    nc_path = forecast(ckpt, data, tmp_path / "fc.nc", opts, progress=False)
    zr_path = forecast(ckpt, data, tmp_path / "fc.zarr", ForecastOptions(**{**opts.__dict__, "format": "zarr"}), progress=False)
    from apps.weather.calibration import SpreadCalibration, calibrate_store
    from apps.weather.data import channel_names

    fc = xr.open_dataset(nc_path)
    unit = SpreadCalibration({ch: {6: 1.0, 12: 1.0} for ch in channel_names(fc, list(fc.data_vars))})
    cal_nc, cal_zr = (calibrate_store(nc_path, tmp_path / f"cal.{ext}", unit) for ext in ("nc", "zarr"))
    for path in (nc_path, cal_nc):
        with netCDF4.Dataset(path) as nc:
            for name, axis in (("latitude", "Y"), ("longitude", "X"), ("level", "Z")):
                assert nc[name].getncattr("axis") == axis and "_FillValue" not in nc[name].ncattrs(), name
            assert nc["level"].standard_name == "air_pressure" and nc["level"].units == "hPa"
            for name in ("time", "valid_time"):
                assert nc[name].units == "hours since 1970-01-01" and nc[name].calendar == "proleptic_gregorian"
            assert nc["valid_time"].standard_name == "time" and nc["prediction_timedelta"].units == "hours"
            t = nc["temperature"]
            assert t.units == "K" and t.standard_name == "air_temperature" and "valid_time" in t.coordinates
            assert np.isnan(t.getncattr("_FillValue")) and nc.Conventions == "CF-1.8"
            # 2 m temperature: a scalar `height` coordinate (CF 5.7), named by that field only
            _check_height(nc["height"].shape, nc["height"][...], {a: nc["height"].getncattr(a) for a in nc["height"].ncattrs()}, 2.0)
            coords = {v: nc[v].coordinates.split() for v in ("2m_temperature", "temperature", "geopotential", "mean_sea_level_pressure")}
            assert coords == {"2m_temperature": ["height", "valid_time"], "temperature": ["valid_time"],
                              "geopotential": ["valid_time"], "mean_sea_level_pressure": ["valid_time"]}
    for store in (zr_path, cal_zr):
        for c in ("latitude", "longitude", "level"):
            assert "_FillValue" not in json.loads((store / c / "zarr.json").read_text())["attributes"], c
        meta = json.loads((store / "height" / "zarr.json").read_text())
        _check_height(tuple(meta["shape"]), xr.open_zarr(store, consolidated=False)["height"].values, meta["attributes"], 2.0)
        attrs = {v: json.loads((store / v / "zarr.json").read_text())["attributes"]["coordinates"].split()
                 for v in ("2m_temperature", "temperature")}
        assert attrs == {"2m_temperature": ["height", "valid_time"], "temperature": ["valid_time"]}
    for fc in (xr.open_dataset(nc_path), xr.open_zarr(zr_path, consolidated=False), xr.open_dataset(cal_nc)):
        assert {c: fc[c].attrs.get("axis") for c in ("latitude", "longitude", "level")} == {"latitude": "Y", "longitude": "X", "level": "Z"}
        try:
            import cf_xarray  # noqa: F401 - optional: only checked where installed
        except ImportError:
            continue
        axes = {k: sorted(fc.cf.axes.get(k, [])) for k in "XYZT"}
        assert axes == {"X": ["longitude"], "Y": ["latitude"], "Z": ["height", "level"], "T": ["valid_time"]}
    # scoring aligns on (time, lead, grid): the scalar height coordinate does not get in the way
    res = evaluate(zr_path, data, tmp_path / "ev", report=False)
    t2m = [r for r in res["scores"] if r["variable"] == "2m_temperature"]
    assert {r["lead_hours"] for r in t2m} == {6, 12} and all(np.isfinite(r["rmse"]) and np.isfinite(r["crps"]) for r in t2m)


def _check_height(shape: tuple, value, attrs: dict, metres: float) -> None:
    """A CF scalar vertical coordinate: no dimension, the height in metres, the attributes a CF checker wants."""
    assert shape == () and float(value) == metres
    assert {k: attrs.get(k) for k in ("units", "standard_name", "positive", "axis")} == \
        {"units": "m", "standard_name": "height", "positive": "up", "axis": "Z"}
    assert "_FillValue" not in attrs  # CF 2.5.1: coordinates have no missing values


def test_several_heights_get_one_coordinate_each(tmp_path):
    """2 m and 10 m fields in one store: `height_2m` and `height_10m` (one variable holds one value), each field
    names only its own; a calibrated NetCDF copy (encodings dropped, attributes rebuilt) keeps that."""
    import netCDF4

    from apps.weather.calibration import SpreadCalibration, calibrate_store
    from apps.weather.data import near_surface_height
    from apps.weather.sampling import _encoding, _template

    assert [near_surface_height(v) for v in ("2m_dewpoint_temperature", "10m_wind_speed", "100m_u_component_of_wind",
                                             "temperature/850", "mean_sea_level_pressure")] == [2.0, 10.0, 100.0, None, None]
    channels = ["geopotential/500", "2m_temperature", "2m_dewpoint_temperature", "10m_u_component_of_wind", "10m_v_component_of_wind"]
    meta = {"lat": [-45.0, 45.0], "lon": [0.0, 120.0, 240.0]}
    tpl = _template(meta, channels, [np.datetime64("2000-01-01T00", "h")], np.array([6, 12]), 2, 2, 2)
    store = tmp_path / "fc.zarr"
    tpl.to_zarr(store, compute=False, encoding=_encoding(tpl), consolidated=False, zarr_format=3)
    fields = {v: (tpl[v].dims, np.ones(tpl[v].shape, np.float32)) for v in tpl.data_vars}
    xr.Dataset(fields).to_zarr(store, region="auto", consolidated=False, zarr_format=3)
    unit = SpreadCalibration({ch: {6: 1.0, 12: 1.0} for ch in channels})
    with netCDF4.Dataset(calibrate_store(store, tmp_path / "cal.nc", unit)) as nc:
        for name, metres in (("height_2m", 2.0), ("height_10m", 10.0)):
            _check_height(nc[name].shape, nc[name][...], {a: nc[name].getncattr(a) for a in nc[name].ncattrs()}, metres)
        assert "height" not in nc.variables
        coords = {v: nc[v].coordinates.split() for v in tpl.data_vars}
    assert coords == {"geopotential": ["valid_time"], "2m_temperature": ["height_2m", "valid_time"],
                      "2m_dewpoint_temperature": ["height_2m", "valid_time"],
                      "10m_u_component_of_wind": ["height_10m", "valid_time"], "10m_v_component_of_wind": ["height_10m", "valid_time"]}


def test_dask_chunked_store_gives_identical_numbers(trained, tmp_path):
    """Forecast and evaluate on a zarr in small dask chunks (1 h x 4 x 8) equal the same data read from NetCDF."""
    root, data, ckpt = trained
    ds = xr.open_zarr(data, consolidated=False).load()
    ds.to_netcdf(tmp_path / "mem.nc")
    for v in ds.variables:
        ds[v].encoding = {}
    ds.chunk({"time": 1, "latitude": 4, "longitude": 8}).to_zarr(tmp_path / "small.zarr", zarr_format=3, consolidated=False)
    opts = ForecastOptions(inits=["2000-01-09T00", "2000-01-10T05"], lead_hours=12, members=2, steps=2)
    scores = []
    for name in ("mem.nc", "small.zarr"):
        fc = forecast(ckpt, tmp_path / name, tmp_path / f"fc_{name}.zarr", opts, progress=False)
        scores.append(evaluate(fc, tmp_path / name, tmp_path / f"ev_{name}", report=False)["scores"])
    a, b = (xr.open_zarr(tmp_path / f"fc_{n}.zarr", consolidated=False) for n in ("mem.nc", "small.zarr"))
    for v in a.data_vars:
        np.testing.assert_array_equal(a[v].values, b[v].values)
    assert json.dumps(scores[0]) == json.dumps(scores[1])
