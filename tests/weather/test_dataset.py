"""Synthetic WB2-schema generator, streaming statistics and the windowed dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.weather.data import channel_names, open_weather
from apps.weather.dataset import BlockShuffleSampler, NormStats, WindowDataset, compute_stats
from apps.weather.synthetic import simulate, write_synthetic_zarr


@pytest.fixture(scope="module")
def syn_path(tmp_path_factory):
    return write_synthetic_zarr(tmp_path_factory.mktemp("syn") / "syn.zarr", n_lat=8, n_lon=16, days=20, seed=3, lon_major=True, time_chunk=48)


def test_generator_schema_and_determinism(syn_path):
    ds = open_weather(syn_path)
    assert {"geopotential", "temperature", "2m_temperature", "mean_sea_level_pressure", "land_sea_mask"} <= set(ds.data_vars)
    assert list(ds.level.values) == [500, 850]
    assert ds.sizes["time"] == 480 and ds["geopotential"].dims == ("time", "level", "latitude", "longitude")
    a, b, c = simulate(8, 16, days=20, seed=3), simulate(8, 16, days=20, seed=3), simulate(8, 16, days=20, seed=4)
    np.testing.assert_array_equal(a["geopotential"].values, b["geopotential"].values)
    assert not np.array_equal(a["geopotential"].values, c["geopotential"].values)
    # stored lon-major, read by name: identical to the in-memory simulation
    np.testing.assert_array_equal(ds["2m_temperature"].values, a["2m_temperature"].values)


def test_generator_physics_plausible():
    ds = simulate(16, 32, days=40, seed=0)
    z500 = ds["geopotential"].sel(level=500)
    assert 4.8e4 < float(z500.min()) and float(z500.max()) < 6.2e4
    t2m = ds["2m_temperature"]
    assert 220 < float(t2m.min()) and float(t2m.max()) < 320
    # diurnal cycle stronger over land than sea
    lsm = ds["land_sea_mask"].values > 0.5
    amp = (t2m.groupby("time.hour").mean().max("hour") - t2m.groupby("time.hour").mean().min("hour")).values
    assert amp[lsm].mean() > 2 * amp[~lsm].mean()
    # the waves move: the field 24 h later differs from persistence, but is correlated with it
    a = z500.isel(time=0).values - z500.mean("time").values
    b = z500.isel(time=24).values - z500.mean("time").values
    r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert 0.0 < r < 0.99


def test_streaming_stats_match_direct(syn_path):
    ds = open_weather(syn_path)
    st = compute_stats(ds, block=37)
    ch = channel_names(ds)
    assert st.channels == ch
    for i, c in enumerate(ch):
        v, _, lv = c.partition("/")
        arr = ds[v].sel(level=int(lv)).values if lv else ds[v].values
        assert st.mean[i] == pytest.approx(arr.astype(np.float64).mean(), rel=1e-9)
        assert st.std[i] == pytest.approx(arr.astype(np.float64).std(ddof=1), rel=1e-6)
    assert set(st.static_names) == {"land_sea_mask", "geopotential_at_surface"}
    rt = NormStats.from_dict(st.to_dict())
    np.testing.assert_array_equal(rt.mean, st.mean)


def test_window_dataset(syn_path):
    ds = open_weather(syn_path)
    st = compute_stats(ds)
    w = WindowDataset(ds, st, frames=3, step_hours=6, max_blocks=2)
    assert len(w) == 480 - 18
    item = w[5]
    assert item["x0"].shape == (6, 8, 16) and item["y"].shape == (3, 6, 8, 16) and item["statics"].shape == (2, 8, 16)
    np.testing.assert_allclose(item["y"][1].numpy(), w.frame(5 + 12), rtol=0, atol=0)
    raw = ds["temperature"].sel(level=850).isel(time=5 + 18).values
    j = st.channels.index("temperature/850")
    np.testing.assert_allclose(item["y"][2, j].numpy() * st.std[j] + st.mean[j], raw, rtol=1e-5)
    # bounded cache: memory does not grow with the period
    for i in range(0, len(w), 7):
        w[i]
    assert len(w._cache) <= 2
    w12 = WindowDataset(ds, st, frames=2, step_hours=6, init_hours=[0, 12])
    hours = {int(np.datetime64(int(w12[i]["init_time"]), "ns").astype("datetime64[h]").astype(int) % 24) for i in range(len(w12))}
    assert hours == {0, 12}
    order = list(BlockShuffleSampler(len(w), 48, seed=1))
    assert sorted(order) == list(range(len(w))) and order != list(range(len(w)))
    batch = torch.utils.data.default_collate([w[0], w[1]])
    assert batch["y"].shape == (2, 3, 6, 8, 16)


def test_mixed_time_steps_are_located(syn_path):
    """Steps that are not multiples of the smallest one (1 h, then 1.5 h) are refused naming where; a gap (a
    whole multiple) is not an error any more (tests/weather/test_time_gaps.py)."""
    from apps.weather.data import WeatherDataError

    ds = open_weather(syn_path, variables=["2m_temperature"]).isel(time=slice(0, 96))
    shifted = ds.time.values.copy()
    shifted[51:] += np.timedelta64(30, "m")
    mixed = ds.assign_coords(time=shifted)
    stats = compute_stats(ds.isel(time=slice(0, 48)))
    with pytest.raises(WeatherDataError, match=r"\[time\]: time axis has mixed steps: 2000-01-03T02:00 -> 2000-01-03T03:30 "
                                               r"\(1.5 h\) is not a multiple of the smallest step 1 h"):
        WindowDataset(mixed, stats, frames=2, step_hours=6)
    with pytest.raises(WeatherDataError, match=r"step_hours=5 is not a multiple of the data spacing 2 h"):
        WindowDataset(ds.isel(time=slice(0, None, 2)), stats, frames=2, step_hours=5)
