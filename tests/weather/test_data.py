"""Reader: real files in every format, normalisation, lazy selection and bad-input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from apps.weather.data import WeatherDataError, channel_names, load_block, open_weather

WX = "weather/"


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name", ["era5_levels_members_2017-01-01.nc", "era5_levels_members_2017-01-01.grib", "era5_t2m_uk_2019-03-01_to_24.nc", "eraint_uvz_monthly.nc"]
)
def test_real_files_normalise(shared_file, name):
    ds = open_weather(shared_file(WX + name))
    lat, lon = ds.latitude.values, ds.longitude.values
    assert np.all(np.diff(lat) > 0)
    assert lon.min() >= 0 and lon.max() < 360
    for v in ds.data_vars:
        assert v in {"geopotential", "temperature", "2m_temperature", "u_component_of_wind", "v_component_of_wind"}
        dims = ds[v].dims
        assert dims[-2:] == ("latitude", "longitude")
        if "level" in dims:
            assert dims[-3] == "level"
    if "realization" in ds.dims:
        assert ds.sizes["realization"] == 10 and ds[list(ds.data_vars)[0]].dims[0] == "realization"


@pytest.mark.shared_data
def test_grib_equals_netcdf(shared_file):
    a = open_weather(shared_file(WX + "era5_levels_members_2017-01-01.nc"), variables=["t"], levels=[500])
    b = open_weather(shared_file(WX + "era5_levels_members_2017-01-01.grib"), variables=["temperature"], levels=[500])
    np.testing.assert_array_equal(a["temperature"].values, b["temperature"].values)
    raw = xr.open_dataset(shared_file(WX + "era5_levels_members_2017-01-01.nc"))
    # descending latitude flipped: the first normalised row is the last raw row (90S)
    np.testing.assert_array_equal(a["temperature"].values[:, :, 0, 0, 0], raw["t"].sel(isobaricInhPa=500).values[:, :, -1, 0])


@pytest.mark.shared_data
def test_uk_box_lon_wrap_and_selection(shared_file):
    path = shared_file(WX + "era5_t2m_uk_2019-03-01_to_24.nc")
    ds = open_weather(path, variables=["t2m"], period=("2019-03-05", "2019-03-06"), frequency="6h", region={"lat": (52, 55), "lon": (-5, 1)})
    lon = ds.longitude.values
    assert lon[0] == 355.0 and lon[-1] == 1.0  # box stays contiguous across 0°
    assert np.all(np.diff((lon + 180) % 360) > 0)
    assert ds.sizes["time"] == 8 and set(ds.time.dt.hour.values) == {0, 6, 12, 18}
    assert ds["2m_temperature"].chunks is not None  # lazy
    raw = xr.open_dataset(path)
    want = raw["t2m"].sel(time="2019-03-05T06", latitude=53.0, longitude=-2.0).values
    assert float(ds["2m_temperature"].sel(time="2019-03-05T06", latitude=53.0, longitude=358.0)) == want


@pytest.mark.shared_data
def test_eraint_minus180_longitudes(shared_file):
    path = shared_file(WX + "eraint_uvz_monthly.nc")
    ds = open_weather(path, variables=["z"], levels=[500])
    raw = xr.open_dataset(path)
    v = raw["z"].sel(level=500, month=1, latitude=45.0, longitude=-90.0).values
    assert float(ds["geopotential"].sel(month=1, latitude=45.0, longitude=270.0).squeeze()) == pytest.approx(float(v))


def _tiny(tmp_path, **kw) -> xr.Dataset:
    times = pd.date_range("2020-01-01", periods=6, freq="h")
    lat = np.array([30.0, 0.0, -30.0])  # descending
    lon = np.array([-120.0, 0.0, 120.0])
    rng = np.random.default_rng(0)
    return xr.Dataset(
        {
            "t": (("time", "pressure_level", "lat", "lon"), rng.normal(size=(6, 2, 3, 3)).astype("f4")),
            "msl": (("time", "lat", "lon"), rng.normal(size=(6, 3, 3)).astype("f4")),
        },
        coords={"time": times, "pressure_level": [50000.0, 85000.0], "lat": lat, "lon": lon},
    )


def test_cds_names_levels_in_pa_and_dim_order(tmp_path):
    ds = _tiny(tmp_path).transpose("time", "lon", "lat", "pressure_level")
    ds.to_netcdf(tmp_path / "a.nc")
    out = open_weather(tmp_path / "a.nc")
    assert out["temperature"].dims == ("time", "level", "latitude", "longitude")
    assert list(out.level.values) == [500.0, 850.0]
    assert list(out.latitude.values) == [-30.0, 0.0, 30.0] and list(out.longitude.values) == [0.0, 120.0, 240.0]
    assert channel_names(out) == ["mean_sea_level_pressure", "temperature/500", "temperature/850"]  # name order
    blk = load_block(out, channel_names(out), slice(0, 2))
    assert blk.shape == (2, 3, 3, 3)


def test_bad_inputs_name_file_variable_problem(tmp_path):
    ds = _tiny(tmp_path)
    ds.to_netcdf(tmp_path / "ok.nc")
    with pytest.raises(WeatherDataError, match=r"ok\.nc.*\[u_component_of_wind\].*missing variable"):
        open_weather(tmp_path / "ok.nc", variables=["u"])
    with pytest.raises(WeatherDataError, match=r"ok\.nc.*\[level\].*missing pressure level.*\[1000"):
        open_weather(tmp_path / "ok.nc", levels=[1000])
    bad = ds.isel(time=[0, 2, 1, 3])
    bad.to_netcdf(tmp_path / "nonmono.nc")
    with pytest.raises(WeatherDataError, match=r"nonmono\.nc.*\[time\].*not strictly increasing"):
        open_weather(tmp_path / "nonmono.nc")
    nan = ds.copy(deep=True)
    nan["msl"][2, 1, 1] = np.nan
    nan.to_netcdf(tmp_path / "nan.nc")
    d = open_weather(tmp_path / "nan.nc")
    with pytest.raises(WeatherDataError, match=r"nan\.nc.*\[mean_sea_level_pressure\].*NaN"):
        load_block(d, ["mean_sea_level_pressure"], slice(0, 6))
    with pytest.raises(WeatherDataError, match="no such file"):
        open_weather(tmp_path / "absent.zarr")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(WeatherDataError, match="unknown format"):
        open_weather(tmp_path / "x.txt")


def test_corrupt_zarr_chunk_is_named(tmp_path):
    ds = _tiny(tmp_path)
    path = tmp_path / "c.zarr"
    ds.to_zarr(path, zarr_format=3, consolidated=False, encoding={"msl": {"chunks": (2, 3, 3)}})
    chunks = sorted(p for p in (path / "msl" / "c").rglob("*") if p.is_file())
    chunks[1].write_bytes(b"\x00garbage\xff" * 3)
    d = open_weather(path)
    with pytest.raises(WeatherDataError, match=r"c\.zarr.*\[mean_sea_level_pressure\].*cannot read"):
        load_block(d, ["mean_sea_level_pressure"], slice(0, 6))


@pytest.mark.parametrize("consolidated", [True, False])
def test_fsspec_url_zarr_takes_the_remote_code_path(tmp_path, consolidated):
    """A zarr store behind an fsspec ``memory://`` URL opens through the same code as ``gs://``."""
    import fsspec

    src = _tiny(tmp_path)
    url = f"memory://wx_{consolidated}/wb2.zarr"
    fs = fsspec.filesystem("memory")
    if fs.exists(url):
        fs.rm(url, recursive=True)
    src.to_zarr(url, consolidated=consolidated, zarr_format=2 if consolidated else 3)
    local = tmp_path / "local.zarr"
    src.to_zarr(local, consolidated=False, zarr_format=3)
    got = open_weather(url, variables=["temperature"], levels=[850])
    want = open_weather(str(local), variables=["temperature"], levels=[850])
    assert list(got.latitude.values) == [-30.0, 0.0, 30.0] and list(got.longitude.values) == [0.0, 120.0, 240.0]
    np.testing.assert_array_equal(got["temperature"].values, want["temperature"].values)
    with pytest.raises(WeatherDataError, match="memory://nowhere/none.zarr"):
        open_weather("memory://nowhere/none.zarr")
    fs.rm(url, recursive=True)


def test_fsspec_url_netcdf_and_unknown_protocol(tmp_path):
    src = _tiny(tmp_path)
    src.to_netcdf(tmp_path / "t.nc", engine="h5netcdf")
    got = open_weather((tmp_path / "t.nc").resolve().as_uri(), variables=["mean_sea_level_pressure"])
    assert got["mean_sea_level_pressure"].shape == (6, 3, 3)
    with pytest.raises(WeatherDataError, match="nosuchproto://bucket/x.zarr"):
        open_weather("nosuchproto://bucket/x.zarr")


def test_split_period_and_end_hour():
    from apps.weather.data import period_end_hour, split_period

    assert split_period("2019-03-01:2019-03-17") == ("2019-03-01", "2019-03-17")
    assert split_period("2019-03-01T06:00:2019-03-10T18:00") == ("2019-03-01T06:00", "2019-03-10T18:00")
    assert split_period(":2019-03-10") == (None, "2019-03-10") and split_period("2019-03-01:") == ("2019-03-01", None)
    with pytest.raises(ValueError, match="START:END"):
        split_period("2019-03-01")
    assert str(period_end_hour("2019-03-10")) == "2019-03-10T23"
    assert str(period_end_hour("2019-03-10T18")) == "2019-03-10T18"


def test_static_fields_checked_like_states(tmp_path):
    """A NaN or an unreadable chunk in a static field is an error naming the file and the field (it used to give
    an all-NaN forecast with exit 0, or a decompression traceback)."""
    from apps.weather.data import load_statics

    ds = _tiny(tmp_path).assign(lsm=(("lat", "lon"), np.ones((3, 3), "f4")))
    ok = tmp_path / "ok.zarr"
    ds.to_zarr(ok, zarr_format=3, consolidated=False)
    np.testing.assert_array_equal(load_statics(open_weather(ok), ["land_sea_mask"]), np.ones((1, 3, 3)))
    nan = ds.copy(deep=True)
    nan["lsm"][1, 2] = np.nan
    nan.to_netcdf(tmp_path / "nan.nc")
    with pytest.raises(WeatherDataError, match=r"nan\.nc \[land_sea_mask\]: 1 NaN"):
        load_statics(open_weather(tmp_path / "nan.nc"), ["land_sea_mask"])
    (ok / "lsm" / "c" / "0" / "0").write_bytes(b"\x00garbage\xff")
    with pytest.raises(WeatherDataError, match=r"ok\.zarr \[land_sea_mask\]: cannot read data"):
        load_statics(open_weather(ok), ["land_sea_mask"])
    with pytest.raises(WeatherDataError, match=r"\[geopotential_at_surface\]: static field\(s\) used in training are missing"):
        load_statics(open_weather(ok), ["geopotential_at_surface"])


def test_extra_dims_of_one_are_dropped_longer_ones_named(tmp_path):
    """A CDS file with a ``number`` dimension of one member reads as (T, C, H, W) (it was (1, T, C, H, W): an
    IndexError in training); two members are an error naming the dimension; a legacy CDS ERA5 + ERA5T
    ``expver`` axis is merged (it was refused), the final release winning where both hold a value."""
    ds = _tiny(tmp_path)
    ds.expand_dims(number=[0]).to_netcdf(tmp_path / "one.nc")
    got = load_block(open_weather(tmp_path / "one.nc"), ["mean_sea_level_pressure", "temperature/850"], slice(0, 4))
    assert got.shape == (4, 2, 3, 3)
    np.testing.assert_array_equal(got[:, 0], ds["msl"].values[:4, ::-1][:, :, [1, 2, 0]])  # lat flipped, lon from 0°
    ds.expand_dims(number=[0, 1]).to_netcdf(tmp_path / "two.nc")
    with pytest.raises(WeatherDataError, match=r"two\.nc \[mean_sea_level_pressure\]: unexpected dimension\(s\) \{'realization': 2\}"):
        load_block(open_weather(tmp_path / "two.nc"), ["mean_sea_level_pressure"], slice(0, 4))
    both = ds.expand_dims(expver=[5, 1]).copy(deep=True)  # ERA5T listed first: order must not matter
    recent = both["time"] >= both["time"][2]
    for name in both.data_vars:
        v = both[name]
        both[name] = xr.concat([v.sel(expver=5).where(recent), v.sel(expver=1).where(~recent | (v["time"] == v["time"][2]))], "expver")
    both["msl"].loc[{"expver": 5, "time": both["time"][2]}] = -1.0  # both releases at one time: the final one wins
    both.assign_coords(expver=[5, 1]).to_netcdf(tmp_path / "expver.nc")
    merged = load_block(open_weather(tmp_path / "expver.nc"), ["mean_sea_level_pressure", "temperature/850"], slice(0, 4))
    np.testing.assert_array_equal(merged, load_block(open_weather(tmp_path / "one.nc"), ["mean_sea_level_pressure", "temperature/850"], slice(0, 4)))


@pytest.mark.shared_data
def test_truncated_grib_is_named_at_open(shared_file, tmp_path):
    """A GRIB file cut mid-message fails when opened, naming the file (cfgrib used to log a traceback, skip the
    message and fill the field with NaN, reported later as a misleading NaN error)."""
    src = shared_file(WX + "era5_levels_members_2017-01-01.grib")
    cut = tmp_path / "cut.grib"
    cut.write_bytes(src.read_bytes()[:1_000_000])
    with pytest.raises(WeatherDataError, match=r"cut\.grib: cannot be opened as cfgrib: .*End of resource"):
        open_weather(cut)


def test_channel_and_static_order_does_not_depend_on_the_listing_order(tmp_path, monkeypatch):
    """A zarr store opened without consolidated metadata lists its arrays in file-system order, which differs
    between copies of one store; the channels and static fields (which network input each one feeds) must not:
    the same data and seed must train the same model from any copy. Variables the caller names keep the
    caller's order."""
    import apps.weather.data as data
    from apps.weather.dataset import compute_stats
    from apps.weather.synthetic import write_synthetic_zarr

    path = write_synthetic_zarr(tmp_path / "syn.zarr", n_lat=8, n_lon=16, days=2, seed=0)
    raw = data._open_raw(str(path))
    names = list(raw.data_vars)
    found = []
    for order in (names, names[::-1], names[1:] + names[:1]):
        monkeypatch.setattr(data, "_open_raw", lambda source, order=order: raw[order])
        ds = open_weather(path)
        found.append((channel_names(ds), compute_stats(ds.isel(time=slice(0, 24))).static_names))
        picked = open_weather(path, variables=["temperature", "2m_temperature"])
        assert channel_names(picked)[:1] == ["temperature/500"] and channel_names(picked)[-1] == "2m_temperature"
        assert compute_stats(picked.isel(time=slice(0, 24))).static_names == ["geopotential_at_surface", "land_sea_mask"]
    assert found[0] == found[1] == found[2]
    assert len(found[0][0]) == 6 and found[0][1] == ["geopotential_at_surface", "land_sea_mask"]
