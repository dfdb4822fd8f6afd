"""Zonal energy spectra: the WB2 definition against a direct DFT, Parseval, grid checks, band averages, evaluate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from apps.weather.cli import _lat_band
from apps.weather.data import WeatherDataError
from apps.weather.evaluate import evaluate
from apps.weather.spectra import (EARTH_RADIUS_M, SpectrumAccumulator, band_rows, circumference_m, zonal_energy_spectrum,
                                  zonal_frequencies, zonal_spacing_deg)
from apps.weather.synthetic import simulate

LAT = np.array([-60.0, -30.0, 0.0, 45.0])
LON = np.arange(0.0, 360.0, 22.5)  # 16 longitudes


def _direct_dft_spectrum(row: np.ndarray, lat: float) -> np.ndarray:
    """The WB2 docstring's definition written out as sums: F[k] = (1/L) Σ f[l] e^{-2πi kl/L}, S = C|F|² (×2 for k > 0)."""
    n = len(row)
    out = []
    for k in range(n // 2 + 1):
        f_k = sum(row[l] * np.exp(-2j * np.pi * k * l / n) for l in range(n)) / n
        out.append((1 if k == 0 else 2) * abs(f_k) ** 2)
    return np.array(out) * 2 * np.pi * EARTH_RADIUS_M * np.cos(np.radians(lat))


def test_spectrum_equals_the_definition_and_keeps_parseval():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2, len(LAT), len(LON)))
    s = zonal_energy_spectrum(f, LAT)
    assert s.shape == (2, 4, 9)
    for i, lat in enumerate(LAT):
        np.testing.assert_allclose(s[1, i], _direct_dft_spectrum(f[1, i], lat), rtol=1e-10)
    # Parseval (with WB2's doubling every k > 0, the Nyquist term counts twice: the sum holds for odd L)
    g = rng.normal(size=(len(LAT), 15))
    np.testing.assert_allclose(zonal_energy_spectrum(g, LAT).sum(-1), circumference_m(LAT) * (g**2).mean(-1), rtol=1e-10)
    # a pure wave 3 of amplitude a: all its power, C a²/2, at k = 3
    a, lon = 2.5, np.radians(LON)
    wave = zonal_energy_spectrum(a * np.cos(3 * lon)[None].repeat(4, 0), LAT)
    np.testing.assert_allclose(wave[:, 3], circumference_m(LAT) * a**2 / 2, rtol=1e-12)
    assert np.abs(np.delete(wave, 3, axis=1)).max() < 1e-9 * wave[:, 3].max()


def test_frequencies_and_grid_checks():
    freqs = zonal_frequencies(LAT, 16, zonal_spacing_deg(LON))
    np.testing.assert_allclose(freqs[2, 1], 1.0 / (2 * np.pi * EARTH_RADIUS_M))  # wave 1 at the equator: one circumference
    np.testing.assert_allclose(freqs[3, 4], 4.0 / circumference_m(45.0))
    assert zonal_spacing_deg(np.arange(-180.0, 180.0, 22.5)) == 22.5  # any origin
    with pytest.raises(ValueError, match="span 180 degrees \\(a regional grid is not periodic\\)"):
        zonal_spacing_deg(np.arange(0.0, 180.0, 22.5))
    with pytest.raises(ValueError, match="uniformly spaced"):
        zonal_spacing_deg(np.array([0.0, 90.0, 200.0, 270.0]))
    assert list(band_rows(LAT, (30.0, 60.0))) == [0, 1, 3]
    with pytest.raises(ValueError, match="no grid row"):
        band_rows(LAT, (70.0, 80.0))
    with pytest.raises(ValueError, match="0 <= lo <= hi <= 90"):
        band_rows(LAT, (60.0, 30.0))
    assert band_rows(np.array([-90.0, 0.0, 90.0]), (0.0, 90.0)).tolist() == [1]  # pole rows have no zonal spectrum


def test_accumulator_band_mean_members_and_masked_rows():
    rng = np.random.default_rng(1)
    acc = SpectrumAccumulator(LAT, LON, band=(40.0, 50.0))  # one row: its own frequencies, no interpolation
    truth = rng.normal(size=(4, 16))
    ens = truth[None] + rng.normal(size=(20, 4, 16))
    acc.add("t", 6, ens, truth)
    acc.add("t", 6, ens[:, ::-1] * 0 + truth, truth)  # members equal to the truth: all three spectra agree
    (row,) = acc.result()
    one = zonal_energy_spectrum(truth[3:4], LAT[3:4])[0]
    np.testing.assert_allclose(row["truth"], one, rtol=1e-12)
    members = (zonal_energy_spectrum(ens[:, 3:4], LAT[3:4])[:, 0].mean(0) + one) / 2
    np.testing.assert_allclose(row["members"], members, rtol=1e-12)
    mean = (zonal_energy_spectrum(ens[:, 3:4].mean(0), LAT[3:4])[0] + one) / 2
    np.testing.assert_allclose(row["ensemble_mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(row["wavelength_km"][1:], circumference_m(45.0) / 1e3 / np.arange(1, 9), rtol=1e-12)
    assert row["wavelength_km"][0] == np.inf and row["n_inits"] == 2 and row["rows"] == 1
    # independent members: the ensemble mean has less power than a member at every k > 0
    assert all(np.asarray(row["ensemble_mean"][1:]) < np.asarray(row["members"][1:]))

    # two rows: each row's spectrum interpolated onto the common grid, then the plain mean; a row with a NaN is left out
    band = SpectrumAccumulator(LAT, LON, band=(30.0, 60.0))
    masked = truth.copy()
    masked[0, 5] = np.nan
    band.add("t", 6, truth[None].repeat(3, 0), masked)
    (r2,) = band.result()
    assert r2["rows"] == 2
    freqs = zonal_frequencies(LAT, 16, 22.5)
    grid = np.linspace(0.0, min(freqs[1, -1], freqs[3, -1]), 9)
    s = zonal_energy_spectrum(truth, LAT)
    hand = (np.interp(grid, freqs[1], s[1]) + np.interp(grid, freqs[3], s[3])) / 2
    np.testing.assert_allclose(r2["truth"], hand, rtol=1e-12)


def _global_pair(tmp_path, lon=None):
    truth = simulate(8, 16, days=8, seed=3)
    if lon is not None:
        truth = truth.isel(longitude=lon)
    truth_path = tmp_path / "truth.zarr"
    truth.to_zarr(truth_path, consolidated=False, zarr_format=3)
    inits = truth.time.values[[100, 130]]
    leads = np.array([6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]")
    t2 = np.stack([np.stack([truth["2m_temperature"].sel(time=i + l).values for l in leads]) for i in inits])
    ens = t2[:, None] + np.random.default_rng(0).normal(0, 1.0, (2, 5, *t2.shape[1:]))
    fc = xr.Dataset({"2m_temperature": (("time", "realization", "prediction_timedelta", "latitude", "longitude"), ens.astype("f4"))},
                    coords={"time": inits, "realization": np.arange(5), "prediction_timedelta": leads,
                            "latitude": truth.latitude.values, "longitude": truth.longitude.values})
    fc_path = tmp_path / "fc.zarr"
    fc.to_zarr(fc_path, consolidated=False, zarr_format=3)
    return fc_path, truth_path, fc, truth


def test_evaluate_writes_spectra_and_refuses_a_regional_grid(tmp_path):
    fc_path, truth_path, fc, truth = _global_pair(tmp_path)
    res = evaluate(fc_path, truth_path, tmp_path / "ev", spectra_band=(30.0, 60.0))
    assert res["spectra_band"] == [30.0, 60.0] and [(s["variable"], s["lead_hours"]) for s in res["spectra"]] == [
        ("2m_temperature", 6), ("2m_temperature", 12)]
    # the truth's spectrum at lead 12 is the band mean over its two inits' valid times, recomputed here by hand
    lat = truth.latitude.values
    acc = SpectrumAccumulator(lat, truth.longitude.values, (30.0, 60.0))
    for i in range(2):
        y = truth["2m_temperature"].sel(time=fc.time.values[i] + fc.prediction_timedelta.values[1]).values
        acc.add("x", 12, fc["2m_temperature"].values[i, :, 1].astype(np.float64), y)
    hand = acc.result()[0]
    np.testing.assert_allclose(res["spectra"][1]["truth"], hand["truth"], rtol=1e-9)
    np.testing.assert_allclose(res["spectra"][1]["members"], hand["members"], rtol=1e-9)
    table = pd.read_csv(tmp_path / "ev" / "spectra.csv")
    assert list(table.columns) == ["variable", "lead_hours", "wavelength_km", "truth", "ensemble_mean", "members"]
    assert len(table) == 2 * 9
    saved = json.loads((tmp_path / "ev" / "scores.json").read_text())
    assert saved["spectra"][0]["wavelength_km"][0] is None  # infinite (the zonal mean): null in strict JSON
    assert (tmp_path / "ev" / "figs" / "spectra.png").exists()
    assert "Zonal energy spectra" in (tmp_path / "ev" / "report.html").read_text()
    plain = evaluate(fc_path, truth_path, tmp_path / "ev_plain", report=False)
    assert plain["spectra_band"] is None and "spectra" not in plain and not (tmp_path / "ev_plain" / "spectra.csv").exists()

    regional = tmp_path / "regional"
    regional.mkdir()
    fc_r, truth_r, _, _ = _global_pair(regional, lon=slice(0, 8))
    with pytest.raises(WeatherDataError, match=r"fc.zarr: zonal spectra need a grid around the whole globe"):
        evaluate(fc_r, truth_r, regional / "ev", spectra_band=(30.0, 60.0))
    assert not (regional / "ev").exists()


def test_cli_band_argument():
    assert _lat_band("30:60") == (30.0, 60.0)
    for bad in ("60:30", "30", "a:b", "-5:20", "10:95"):
        with pytest.raises(Exception, match="LO"):
            _lat_band(bad)


@pytest.mark.shared_data
def test_real_era5_members_share_the_controls_spectrum(shared_file):
    """The real 10-member ERA5 ensemble of data assimilations (global 3° grid): its members are exchangeable, so the
    mean spectrum of nine members matches the tenth's (sampling noise of 4 times: within 15 %); the ensemble mean has
    no more power than the members at any wavelength (|mean F|² ≤ mean |F|², exact) and loses most at the smallest
    scales; z500 falls off steeply (geostrophic turbulence: about k⁻⁵ for geopotential; a slope between −6 and −3)."""
    from apps.weather.data import open_weather

    ds = open_weather(shared_file("weather/era5_levels_members_2017-01-01.nc")).load()
    for var, level in (("geopotential", 500.0), ("temperature", 850.0)):
        x = ds[var].sel(level=level).values  # (member, time, lat, lon)
        acc = SpectrumAccumulator(ds.latitude.values, ds.longitude.values, (30.0, 60.0))
        for t in range(x.shape[1]):
            acc.add(var, 0, x[1:, t], x[0, t])  # the control as the "truth"
        (row,) = acc.result()
        wl = np.array(row["wavelength_km"][1:])
        truth, members, mean = (np.asarray(row[k][1:]) for k in ("truth", "members", "ensemble_mean"))
        assert row["rows"] == 22 and len(wl) == 60
        np.testing.assert_allclose(members / truth, 1.0, atol=0.15, err_msg=var)
        assert np.all(mean <= members * (1 + 1e-12)), var
        assert mean[-1] / members[-1] < mean[1] / members[1] <= 1.0, var
        if var == "geopotential":
            band = (wl > 700) & (wl < 10000)
            slope = np.polyfit(np.log(1.0 / wl[band]), np.log(truth[band]), 1)[0]
            assert -6.0 < slope < -3.0
