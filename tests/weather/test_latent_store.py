"""Latent-only forecast stores: the lazily decoded view and ``decode`` equal the decoded store; bad input is named."""

from __future__ import annotations

import shutil
from functools import partial

import numpy as np
import pytest
import torch
import xarray as xr

from apps.weather.autoencoder import AutoencoderObjective, SphericalAutoencoder, encode_dataset
from apps.weather.calibration import CalibrationError, SpreadCalibration, calibrate_store
from apps.weather.cli import main
from apps.weather.data import WeatherDataError
from apps.weather.evaluate import evaluate
from apps.weather.latent_store import decode_store, open_decoded
from apps.weather.sampling import ForecastOptions, forecast
from apps.weather.synthetic import write_synthetic_zarr


def _dir_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _fit(module, dm, steps: int = 2):
    import lightning.pytorch as pl

    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, dm)
    return trainer


@pytest.fixture(scope="module")
def latent_setup(tmp_path_factory):
    """A synthetic dataset, a tiny autoencoder, its latent zarr and a latent forecaster (2 frames of 6 h)."""
    from apps.weather.datamodule import WeatherDataModule, WeatherModule
    from apps.weather.model import WeatherForecaster
    from apps.weather.objective import WeatherEDMObjective

    tmp = tmp_path_factory.mktemp("latent_store")
    data = write_synthetic_zarr(tmp / "syn.zarr", n_lat=8, n_lon=16, days=5, seed=4, time_chunk=48)
    torch.manual_seed(0)
    dm = WeatherDataModule(str(data), frames=1, step_hours=1, batch_size=4)
    ae = SphericalAutoencoder(6, 2, latent_channels=4, width=8, n_down=2)
    trainer = _fit(WeatherModule(ae, AutoencoderObjective(), optimizer=partial(torch.optim.AdamW, lr=1e-3)), dm)
    ae_ckpt = tmp / "ae.ckpt"
    trainer.save_checkpoint(ae_ckpt, weights_only=False)
    latent = encode_dataset(ae_ckpt, data, tmp / "latent.zarr", block=24)
    dm_lat = WeatherDataModule(str(latent), train_period="2000-01-01:2000-01-03", frames=2, step_hours=6, batch_size=4)
    net = WeatherForecaster(n_channels=4, grid=(2, 4), frames=2, patch=1, dim=32, num_heads=2, depth_dual=1, depth_single=0, rope="geo")
    trainer = _fit(WeatherModule(net, WeatherEDMObjective()), dm_lat)
    fc_ckpt = tmp / "latent_fc.ckpt"
    trainer.save_checkpoint(fc_ckpt, weights_only=False)
    # 3 members in batches of 2 (a short last batch), 2 blocks of 2 leads
    opts = dict(inits=["2000-01-04T00", "2000-01-04T06"], lead_hours=24, members=3, batch_members=2, steps=2)
    decoded = forecast(fc_ckpt, latent, tmp / "decoded.zarr", ForecastOptions(**opts), progress=False, autoencoder=ae_ckpt)
    latent_fc = forecast(fc_ckpt, latent, tmp / "latent_fc.zarr", ForecastOptions(**opts, store="latent"), progress=False,
                         autoencoder=ae_ckpt)
    return dict(tmp=tmp, data=data, ae=ae_ckpt, latent=latent, fc_ckpt=fc_ckpt, decoded=decoded, latent_fc=latent_fc, opts=opts)


def test_lazy_view_and_decode_equal_the_decoded_store(latent_setup, tmp_path):
    s = latent_setup
    ref = xr.open_zarr(s["decoded"], consolidated=False).load()
    raw = xr.open_zarr(s["latent_fc"], consolidated=False)
    assert raw.attrs["store"] == "latent" and sorted(raw.data_vars) == ["latent_000", "latent_001", "latent_002", "latent_003"]
    assert raw["latent_000"].shape == (2, 3, 4, 2, 4)
    assert _dir_bytes(s["latent_fc"]) < _dir_bytes(s["decoded"])

    view = open_decoded(s["latent_fc"])  # the autoencoder the store records
    assert sorted(view.data_vars) == sorted(ref.data_vars) and view["temperature"].dims == ref["temperature"].dims
    for v in ref.data_vars:  # the same batches of the same float32 latents through the same decoder: equal bits
        assert np.array_equal(view[v].values, ref[v].values), v
    for c in ("time", "realization", "prediction_timedelta", "level", "latitude", "longitude", "valid_time"):
        assert np.array_equal(view[c].values, ref[c].values), c
    assert view["2m_temperature"].attrs["units"] == "K" and "latent store" in view.attrs["decoded_from"]
    # a partial read (one member, the second block's leads, one level) decodes just that and equals the store
    part = view["temperature"].isel(time=1, realization=2, prediction_timedelta=slice(1, 4)).sel(level=850.0)
    np.testing.assert_array_equal(part.values, ref["temperature"].isel(time=1, realization=2, prediction_timedelta=slice(1, 4)).sel(level=850.0).values)
    assert view["geopotential"][0, :, -1, 0, 3, 5].shape == (3,)
    # dask-backed reads (users chunking the view) give the same values
    np.testing.assert_array_equal(view["2m_temperature"].chunk({"time": 1}).mean("realization").values,
                                  ref["2m_temperature"].mean("realization").values)

    out = decode_store(s["latent_fc"], tmp_path / "dec.zarr", s["ae"])
    written = xr.open_zarr(out, consolidated=False)
    for v in ref.data_vars:
        assert np.array_equal(written[v].values, ref[v].values), v
    assert not (tmp_path / "dec.zarr.partial").exists()
    nc = main(["decode", "--forecast", str(s["latent_fc"]), "--out", str(tmp_path / "dec.nc")])
    with xr.open_dataset(nc) as d:
        assert np.array_equal(d["geopotential"].values, ref["geopotential"].values)
    with pytest.raises(FileExistsError, match="dec.nc: output already exists"):
        decode_store(s["latent_fc"], tmp_path / "dec.nc")

    # evaluate (and its report) reads the latent store through the view: the same scores as the decoded store
    a = evaluate(s["decoded"], s["data"], tmp_path / "ev_dec", report=False)
    b = evaluate(s["latent_fc"], s["data"], tmp_path / "ev_lat", report=True)
    assert [(r["variable"], r["lead_hours"], r["rmse"], r["crps"]) for r in a["scores"]] == \
        [(r["variable"], r["lead_hours"], r["rmse"], r["crps"]) for r in b["scores"]]
    assert (tmp_path / "ev_lat" / "figs" / "stamps.png").exists()


def test_latent_store_bad_input_is_named(latent_setup, tmp_path):
    s = latent_setup
    with pytest.raises(ValueError, match="store='latent' .* needs the autoencoder"):
        forecast(s["fc_ckpt"], s["latent"], tmp_path / "x.zarr", ForecastOptions(**s["opts"], store="latent"), progress=False)
    with pytest.raises(ValueError, match="a latent-only store is a zarr folder"):
        ForecastOptions(**s["opts"], store="latent", format="netcdf")
    with pytest.raises(ValueError, match="store='packed' is not one of"):
        ForecastOptions(**s["opts"], store="packed")
    with pytest.raises(SystemExit):
        main(["forecast", "--checkpoint", str(s["fc_ckpt"]), "--data", str(s["latent"]), "--out", str(tmp_path / "y.zarr"),
              "--inits", "2000-01-04T00", "--lead-hours", "12", "--store", "latent"])
    assert not (tmp_path / "x.zarr.partial").exists() and not (tmp_path / "y.zarr.partial").exists()

    # the recorded autoencoder moved: named, and decodable with the checkpoint given explicitly
    moved = tmp_path / "moved.zarr"
    shutil.copytree(s["latent_fc"], moved)
    import zarr

    root = zarr.open_group(str(moved), mode="r+")
    root.attrs["autoencoder"] = str(tmp_path / "gone.ckpt")
    with pytest.raises(WeatherDataError, match=r"moved.zarr: .*gone.ckpt is not a file: pass the autoencoder"):
        open_decoded(moved)
    assert open_decoded(moved, s["ae"])["2m_temperature"].shape == (2, 3, 4, 8, 16)
    # another autoencoder (same shapes, other weights) would decode other fields: refused
    other = tmp_path / "other_ae.ckpt"
    ck = torch.load(s["ae"], weights_only=True)
    ck["state_dict"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
    torch.save(ck, other)
    with pytest.raises(WeatherDataError, match="is not the one the forecast was made with"):
        evaluate(s["latent_fc"], s["data"], tmp_path / "ev_other", autoencoder=other)
    assert not (tmp_path / "ev_other").exists()
    with pytest.raises(WeatherDataError, match="not a latent-only forecast store"):
        decode_store(s["decoded"], tmp_path / "z.zarr")
    assert not (tmp_path / "z.zarr").exists() and not (tmp_path / "z.zarr.partial").exists()
    calib = SpreadCalibration(factors={"2m_temperature": {6: 1.0}})
    with pytest.raises(CalibrationError, match="latent-only store; decode it first"):
        calibrate_store(s["latent_fc"], tmp_path / "cal.zarr", calib)


def test_dry_run_counts_the_latent_store(latent_setup):
    from apps.weather.plan import plan_forecast

    s = latent_setup
    decoded = plan_forecast(s["fc_ckpt"], s["latent"], ForecastOptions(**s["opts"]), autoencoder=s["ae"], time_block=False)
    latent = plan_forecast(s["fc_ckpt"], s["latent"], ForecastOptions(**s["opts"], store="latent"), autoencoder=s["ae"],
                           time_block=False)
    assert decoded["output_shape"] == [2, 3, 4, 6, 8, 16] and latent["output_shape"] == [2, 3, 4, 4, 2, 4]
    assert latent["output_bytes"] * 24 == decoded["output_bytes"]  # 4 latents on 2x4 against 6 fields on 8x16
