"""Spherical padding, the autoencoder's symmetry, its loss, training through the CLI and ``encode``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.weather.autoencoder import AutoencoderObjective, SphericalAutoencoder, sphere_pad
from apps.weather.cli import CONFIG_DIR, main
from apps.weather.data import open_weather
from apps.weather.synthetic import write_synthetic_zarr


def test_sphere_pad_wraps_longitude_and_crosses_poles():
    x = torch.arange(4 * 8, dtype=torch.float32).reshape(1, 1, 4, 8)
    y = sphere_pad(x, 1)
    assert y.shape == (1, 1, 6, 10)
    core = y[..., 1:-1, 1:-1]
    assert torch.equal(core, x)
    assert torch.equal(y[0, 0, 1:-1, 0], x[0, 0, :, -1]) and torch.equal(y[0, 0, 1:-1, -1], x[0, 0, :, 0])
    # across the south pole: the row below row 0 is row 0 seen from the opposite meridian
    assert torch.equal(y[0, 0, 0, 1:-1], torch.roll(x[0, 0, 0], 4))
    assert torch.equal(y[0, 0, -1, 1:-1], torch.roll(x[0, 0, -1], 4))


def test_autoencoder_is_longitude_equivariant_and_loss_is_relative():
    torch.manual_seed(0)
    net = SphericalAutoencoder(3, 1, latent_channels=4, width=8, n_down=2).eval()
    x, s = torch.randn(2, 3, 8, 16), torch.randn(2, 1, 8, 16)
    z = net.encode(x, s)
    assert z.shape == (2, 4, 2, 4) and net.decode(z).shape == x.shape
    r = lambda t: torch.roll(t, 4, dims=-1)  # noqa: E731 - one latent column
    torch.testing.assert_close(net(r(x), r(s)), r(net(x, s)), rtol=1e-4, atol=1e-5)
    batch = {"x0": x, "statics": s, "lat": torch.linspace(-78.75, 78.75, 8)[None]}
    assert float(AutoencoderObjective().loss(_Perfect(), batch)["loss"]) == 0.0


class _Perfect(torch.nn.Module):
    def forward(self, x, statics=None):
        return x


def test_fit_and_encode(tmp_path):
    data = write_synthetic_zarr(tmp_path / "syn.zarr", n_lat=8, n_lon=16, days=6, seed=0, time_chunk=48)
    fitted = main([
        "fit", "--config", str(CONFIG_DIR / "autoencoder.yaml"), "--data.init_args.path", str(data),
        "--data.init_args.train_period", "2000-01-01:2000-01-05", "--data.init_args.val_period", "null",
        "--model.init_args.net.init_args.width", "8", "--trainer.max_steps", "2", "--trainer.logger", "false",
        "--trainer.default_root_dir", str(tmp_path / "fit"), "--trainer.callbacks.init_args.dirpath", str(tmp_path / "ck"),
    ])
    ckpt = tmp_path / "ae.ckpt"
    fitted.trainer.save_checkpoint(ckpt)
    out = main(["encode", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(tmp_path / "latent.zarr"), "--period", "2000-01-01:2000-01-02"])
    lat = open_weather(out)
    assert lat.sizes["time"] == 48 and lat.sizes["latitude"] == 2 and lat.sizes["longitude"] == 4
    assert sorted(lat.data_vars)[:2] == ["latent_000", "latent_001"] and len(lat.data_vars) == 8
    assert np.all(np.diff(lat.latitude.values) > 0) and np.all(np.isfinite(lat["latent_000"].values))
    # latent forecaster: trained on the latent zarr like any dataset, decoded to physical fields
    import lightning.pytorch as pl
    import xarray as xr

    from apps.weather.datamodule import WeatherDataModule, WeatherModule
    from apps.weather.model import WeatherForecaster
    from apps.weather.objective import WeatherEDMObjective

    latent_all = main(["encode", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(tmp_path / "latent_all.zarr")])
    dm = WeatherDataModule(latent_all, train_period="2000-01-01:2000-01-04", frames=2, step_hours=6, batch_size=4)
    net = WeatherForecaster(n_channels=8, grid=(2, 4), frames=2, patch=1, dim=32, num_heads=2, depth_dual=1, depth_single=0, rope="geo")
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(WeatherModule(net, WeatherEDMObjective()), dm)
    fck = tmp_path / "latent_fc.ckpt"
    trainer.save_checkpoint(fck)
    out = main(["forecast", "--checkpoint", str(fck), "--data", latent_all, "--out", str(tmp_path / "fc.zarr"), "--inits", "2000-01-05T00",
                "--lead-hours", "12", "--members", "2", "--steps", "2", "--autoencoder", str(ckpt), "--no-progress"])
    fc = xr.open_zarr(out, consolidated=False)
    assert fc["2m_temperature"].shape == (1, 2, 2, 8, 16) and list(fc.level.values) == [500, 850]
    assert np.all(np.isfinite(fc["geopotential"].values)) and fc.attrs["autoencoder_sha256"] != "none (pixel space)"


def test_latent_forecast_decodes_the_latents_in_the_decoders_order(tmp_path):
    """A latent forecaster keeps its channels in the order it read them (the store's listing or
    ``data.variables``), e.g. latent_002, latent_000, ...; ``forecast --autoencoder`` must hand the decoder
    latent_000, latent_001, ... (it used to pass the forecaster's order: a decoded forecast of permuted latents).
    The decoded store equals decoding the latent-space forecast (same seeds) by name; a forecaster whose
    channels are not the decoder's latents is an error naming it, before anything is written."""
    from functools import partial

    import lightning.pytorch as pl
    import xarray as xr

    from apps.weather.autoencoder import encode_dataset, load_autoencoder
    from apps.weather.data import WeatherDataError
    from apps.weather.datamodule import WeatherDataModule, WeatherModule
    from apps.weather.dataset import NormStats
    from apps.weather.model import WeatherForecaster
    from apps.weather.objective import WeatherEDMObjective
    from apps.weather.sampling import ForecastOptions, forecast

    data = write_synthetic_zarr(tmp_path / "syn.zarr", n_lat=8, n_lon=16, days=5, seed=3, time_chunk=48)
    torch.manual_seed(0)
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    dm = WeatherDataModule(str(data), frames=1, step_hours=1, batch_size=4)
    ae = SphericalAutoencoder(6, 2, latent_channels=4, width=8, n_down=2)
    trainer = pl.Trainer(max_steps=2, **quiet)
    trainer.fit(WeatherModule(ae, AutoencoderObjective(), optimizer=partial(torch.optim.AdamW, lr=1e-3)), dm)
    ae_ckpt = tmp_path / "ae.ckpt"
    trainer.save_checkpoint(ae_ckpt)
    latent = encode_dataset(ae_ckpt, data, tmp_path / "latent.zarr", block=24)

    order = ["latent_002", "latent_000", "latent_003", "latent_001"]
    dm_lat = WeatherDataModule(str(latent), variables=order, train_period="2000-01-01:2000-01-03", frames=2, step_hours=6, batch_size=4)
    net = WeatherForecaster(n_channels=4, grid=(2, 4), frames=2, patch=1, dim=32, num_heads=2, depth_dual=1, depth_single=0, rope="geo")
    trainer = pl.Trainer(max_steps=2, **quiet)
    trainer.fit(WeatherModule(net, WeatherEDMObjective()), dm_lat)
    fc_ckpt = tmp_path / "latent_fc.ckpt"
    trainer.save_checkpoint(fc_ckpt)
    assert torch.load(fc_ckpt, weights_only=True)["weather"]["stats"]["channels"] == order

    opts = ForecastOptions(inits=["2000-01-04T00"], lead_hours=12, members=2, steps=2)
    z_fc = xr.open_zarr(forecast(fc_ckpt, latent, tmp_path / "z.zarr", opts, progress=False), consolidated=False)
    decoded = xr.open_zarr(forecast(fc_ckpt, latent, tmp_path / "fc.zarr", opts, progress=False, autoencoder=ae_ckpt), consolidated=False)
    dec, meta = load_autoencoder(ae_ckpt)
    stats = NormStats.from_dict(meta["stats"])
    z = np.stack([z_fc[f"latent_{c:03d}"].values[0] for c in range(4)], 2)  # (member, lead, latent, h, w), by name
    with torch.no_grad():
        want = stats.denormalise(dec.decode(torch.from_numpy(z.reshape(-1, *z.shape[2:]))).numpy()).reshape(2, 2, 6, 8, 16)
    k = stats.channels.index("temperature/850")
    np.testing.assert_allclose(decoded["temperature"].sel(level=850.0).values[0], want[:, :, k], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(decoded["2m_temperature"].values[0], want[:, :, stats.channels.index("2m_temperature")], rtol=1e-5, atol=1e-4)

    # a forecaster on other channels (3 of the 4 latents) cannot be decoded: an error, nothing written
    dm_bad = WeatherDataModule(str(latent), variables=order[:3], train_period="2000-01-01:2000-01-03", frames=2, step_hours=6, batch_size=4)
    net = WeatherForecaster(n_channels=3, grid=(2, 4), frames=2, patch=1, dim=32, num_heads=2, depth_dual=1, depth_single=0, rope="geo")
    trainer = pl.Trainer(max_steps=1, **quiet)
    trainer.fit(WeatherModule(net, WeatherEDMObjective()), dm_bad)
    bad_ckpt = tmp_path / "bad.ckpt"
    trainer.save_checkpoint(bad_ckpt)
    with pytest.raises(WeatherDataError, match="latent_000 .. latent_003") as exc:
        forecast(bad_ckpt, latent, tmp_path / "bad.zarr", opts, progress=False, autoencoder=ae_ckpt)
    assert str(bad_ckpt) in str(exc.value)
    assert not (tmp_path / "bad.zarr").exists() and not (tmp_path / "bad.zarr.partial").exists()
