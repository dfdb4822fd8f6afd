"""Training around gaps in the time axis (e.g. January and March downloaded): windows, tendency scales,
damping and a fit, every state looked up by time so that nothing is shifted across a gap."""

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
from apps.weather.model import WeatherForecaster
from apps.weather.objective import WeatherEDMObjective
from apps.weather.prior import fit_damping, fit_diurnal
from apps.weather.synthetic import write_synthetic_zarr

HOUR = np.timedelta64(1, "h")


@pytest.fixture(scope="module")
def gappy(tmp_path_factory):
    """(full dataset, the same without hour 50 and hours 200..229) of a 10-day hourly synthetic zarr."""
    path = write_synthetic_zarr(tmp_path_factory.mktemp("gap") / "syn.zarr", n_lat=8, n_lon=16, days=10, seed=2, time_chunk=48)
    full = open_weather(path)
    keep = np.ones(full.sizes["time"], bool)
    keep[50] = False
    keep[200:230] = False
    return full, full.isel(time=np.flatnonzero(keep))


def _expected_inits(times: np.ndarray, history: int, frames: int, step: int, init_hours=None) -> list[np.datetime64]:
    """Inits (hours present, of ``init_hours``) whose states from ``history`` steps before to ``frames`` after exist."""
    have = set(times.astype("datetime64[h]").tolist())  # datetime.datetime
    step = np.timedelta64(step, "h").astype(object)
    out = []
    for t in sorted(have):
        if init_hours is not None and t.hour not in init_hours:
            continue
        if all(t + j * step in have for j in range(-history, frames + 1)):
            out.append(t)
    return out


def test_windows_skip_gaps_and_read_by_time(gappy):
    """Exactly the windows that do not cross a gap (history included), each frame the state at its time."""
    full, gap = gappy
    stats = compute_stats(full)
    w = WindowDataset(gap, stats, frames=2, step_hours=6, history=1, max_blocks=2)
    times = gap.time.values
    expected = _expected_inits(times, 1, 2, 6)
    inits = [np.datetime64(int(w[i]["init_time"]), "ns").astype("datetime64[h]") for i in range(len(w))]
    assert [np.datetime64(t, "h") for t in expected] == inits
    # 209 times; the ends cost 6 + 10 inits (hours 0..5: no history; 230..239: frames beyond the file); the gaps
    # drop the inits 38, 44, 56 (around hour 50) and 188..199 (frames in 200..229), and count them
    assert w.gap_dropped == 3 + 12 and len(w) == 209 - 6 - 10 - 15
    reference = WindowDataset(full, stats, frames=2, step_hours=6, history=1)
    full_index = {t: i for i, t in enumerate(full.time.values)}
    for i in range(0, len(w), 5):
        item = w[i]
        t0 = np.datetime64(int(item["init_time"]), "ns")
        want = [reference.frame(full_index[t0 + j * 6 * HOUR]) for j in (-1, 0, 1, 2)]
        np.testing.assert_array_equal(item["x_hist"][0].numpy(), want[0])
        np.testing.assert_array_equal(item["x0"].numpy(), want[1])
        np.testing.assert_array_equal(item["y"].numpy(), np.stack(want[2:]))
    w12 = WindowDataset(gap, stats, frames=2, step_hours=6, init_hours=[0, 12], history=1)
    assert [np.datetime64(int(w12[i]["init_time"]), "ns").astype("datetime64[h]") for i in range(len(w12))] == \
        [np.datetime64(t, "h") for t in _expected_inits(times, 1, 2, 6, (0, 12))]


def test_only_gap_crossing_windows_say_so(gappy):
    """No window left: the 'period too short' error says that gaps dropped windows."""
    full, _ = gappy
    stats = compute_stats(full)
    short = full.isel(time=[0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13])  # inits 0 and 1 need hours 6, 7
    with pytest.raises(WeatherDataError, match=r"period too short for 2 frames of 6 h .*gaps in the time axis dropped 2 window"):
        WindowDataset(short, stats, frames=2, step_hours=6)


def _ramp(hours: np.ndarray) -> xr.Dataset:
    """2 m temperature rising 0.1 K per hour everywhere plus a fixed pattern, at the given hours since 2000."""
    times = np.datetime64("2000-01-01T00", "ns") + hours * HOUR
    pattern = np.random.default_rng(0).normal(size=(4, 8))
    t2m = 280.0 + 0.1 * hours[:, None, None] + pattern[None]
    ds = xr.Dataset({"2m_temperature": (("time", "latitude", "longitude"), t2m.astype(np.float32))},
                    coords={"time": times, "latitude": np.linspace(-60, 60, 4), "longitude": np.arange(8) * 45.0})
    ds.attrs["source_path"] = "ramp.nc"
    return ds


def test_tendency_scale_pairs_states_by_time():
    """On a ramp every true 6 h pair changes by 0.6 K: a pair shifted across the gap would change by more."""
    hours = np.concatenate([np.arange(0, 100), np.arange(400, 500)])  # hourly, 300 hours missing
    ds = _ramp(hours)
    stats = compute_stats(ds)
    w = WindowDataset(ds, stats, frames=2, step_hours=6, block=48)
    scale = tendency_scale(w, n_reads=8)
    np.testing.assert_allclose(scale[:, 0], [0.6 / stats.std[0], 1.2 / stats.std[0]], rtol=1e-4)


def test_damping_pairs_states_by_time(gappy):
    """fit_damping over a gappy period equals the regression over the (init, frame) pairs found by time."""
    full, gap = gappy
    stats = compute_stats(full)
    w = WindowDataset(gap, stats, frames=2, step_hours=6)
    table = fit_diurnal(w)
    got = fit_damping(w, table)
    times = gap.time.values
    index = {t: i for i, t in enumerate(times)}
    hours = times.astype("datetime64[h]").astype(np.int64) % 24
    anomaly = [w.frame(i).astype(np.float64) - table[hours[i]] for i in range(len(times))]
    cross, auto = np.zeros((2, len(stats.channels))), np.zeros(len(stats.channels))
    for i, t in enumerate(times):
        later = [index.get(t + j * 6 * HOUR) for j in (1, 2)]
        if None in later:
            continue
        auto += (anomaly[i] ** 2).sum(axis=(1, 2))
        for j, k in enumerate(later):
            cross[j] += (anomaly[k] * anomaly[i]).sum(axis=(1, 2))
    np.testing.assert_allclose(got, np.clip(cross / auto, 0, 1), rtol=1e-5)


def test_fit_on_a_file_with_gaps(gappy, tmp_path, capsys):
    """A tiny forecaster trains on a NetCDF file with two gaps (damped prior, one history state); a note says
    how many windows the gaps dropped."""
    _, gap = gappy
    path = tmp_path / "gap.nc"
    gap.drop_encoding().to_netcdf(path)
    torch.manual_seed(0)
    dm = WeatherDataModule(str(path), frames=2, step_hours=6, batch_size=4, prior="damped", history=1,
                           train_period="2000-01-01:2000-01-06", val_period="2000-01-07:2000-01-10")
    net = WeatherForecaster(n_channels=6, n_statics=2, grid=(8, 16), frames=2, step_hours=6, patch=4, dim=32, num_heads=2,
                            depth_dual=1, depth_single=1, history=1)
    module = WeatherModule(net, WeatherEDMObjective(), optimizer=partial(torch.optim.AdamW, lr=1e-3))
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=1)
    trainer.fit(module, dm)
    assert trainer.global_step == 2 and np.isfinite(float(trainer.callback_metrics["train/loss"]))
    assert np.all(np.isfinite(dm.delta_scale)) and np.all(np.isfinite(dm.damping))
    assert len(dm.val_set) == 3  # 00/12 UTC inits 2000-01-07T12, 08T00, 08T12; 09T00 needs 09T12 (in the gap)
    err = capsys.readouterr().err
    assert f"note: {path}: gaps in the time axis dropped 3 training window(s)" in err
    assert f"note: {path}: gaps in the time axis dropped 1 validation window(s) (3 left)" in err
