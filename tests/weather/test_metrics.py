"""WeatherBench2-exact metrics: golden test on a real ERA5 ensemble against plain numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from apps.weather.data import open_weather
from apps.weather.metrics import (
    ScoreAccumulator,
    cell_area_weights,
    crps_parts,
    great_circle_km,
    rank_of_truth,
    region_mask,
    spatial_mean,
)


# ---- plain numpy references, written the long way on purpose -------------------------------------


def ref_weights(lat):
    lat = np.asarray(lat, float)
    assert np.all(np.diff(lat) > 0)
    edges = [-90.0] + [(a + b) / 2 for a, b in zip(lat[:-1], lat[1:])] + [90.0]
    w = np.array([np.sin(np.radians(edges[j + 1])) - np.sin(np.radians(edges[j])) for j in range(len(lat))])
    return w / w.mean()


def ref_area_mean(z, w):
    return float((z * w[:, None]).sum() / (w.sum() * z.shape[1]))


def ref_scores(ens, truth, lat):
    """ens (N, M, H, W), truth (N, H, W): CRPS/skill/spread/SSR by double loops over members."""
    w = ref_weights(lat)
    n, m = ens.shape[:2]
    skill = spread = var_sum = mse_db = 0.0
    for k in range(n):
        e, y = ens[k].astype(np.float64), truth[k].astype(np.float64)
        sk = np.zeros_like(y)
        pair = np.zeros_like(y)
        for a in range(m):
            sk += np.abs(e[a] - y) / m
            for b in range(m):
                if a != b:
                    pair += np.abs(e[a] - e[b])
        mean = e.sum(axis=0) / m
        var = ((e - mean) ** 2).sum(axis=0) / (m - 1)
        skill += ref_area_mean(sk, w)
        spread += ref_area_mean(pair / (m * (m - 1)), w)
        var_sum += ref_area_mean(var, w)
        mse_db += ref_area_mean((mean - y) ** 2 - var / m, w)
    skill, spread = skill / n, spread / n
    return {"crps": skill - 0.5 * spread, "crps_skill": skill, "crps_spread": spread, "ssr": np.sqrt(var_sum / mse_db)}


def ref_rank_hist(ens, truth):
    """Point by point: a tie of the truth with t members adds 1/(t+1) to each of its t+1 bins."""
    m = ens.shape[1]
    counts = np.zeros(m + 1)
    e = np.moveaxis(ens, 1, -1).reshape(-1, m)
    for row, y in zip(e, truth.ravel()):
        below, ties = int((row < y).sum()), int((row == y).sum())
        counts[below : below + ties + 1] += 1.0 / (ties + 1)
    return counts / counts.sum()


# ---- unit tests --------------------------------------------------------------------------------


def test_cell_area_weights_wb2_properties():
    lat = np.linspace(-90, 90, 121)  # WB2 240x121 with poles
    w = cell_area_weights(lat)
    assert w.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(w, ref_weights(lat), rtol=1e-12)
    # pole cells: half-cell weight 1 - cos(Δ/2) relative to the sphere, tiny but not zero
    eq = w[60]
    assert 0 < w[0] < eq / 100
    np.testing.assert_allclose(w[1:-1] / w[60], np.cos(np.radians(lat[1:-1])), rtol=1e-3)
    # descending input gives the same weights per row
    np.testing.assert_allclose(cell_area_weights(lat[::-1]), w[::-1])
    # no pole rows (64x32): closes at ±90 exactly as WB2
    lat32 = -90 + (np.arange(32) + 0.5) * 180 / 32
    np.testing.assert_allclose(cell_area_weights(lat32), ref_weights(lat32), rtol=1e-12)


def test_crps_sorted_equals_pair_sum_and_is_fair():
    rng = np.random.default_rng(1)
    ens, y = rng.normal(size=(7, 5, 4)), rng.normal(size=(5, 4))
    skill, spread = crps_parts(ens, y)
    pair = sum(np.abs(ens[a] - ens[b]) for a in range(7) for b in range(7) if a != b) / (7 * 6)
    np.testing.assert_allclose(spread, pair, rtol=1e-12)
    np.testing.assert_allclose(skill, np.abs(ens - y).mean(0), rtol=1e-12)
    # fair: expected CRPS of an exchangeable M=2 ensemble equals that of M=20 (unbiased estimator)
    big = rng.normal(size=(20, 20000))
    truth = rng.normal(size=20000)
    s20, p20 = crps_parts(big, truth)
    s2, p2 = crps_parts(big[:2], truth)
    assert abs((s20 - 0.5 * p20).mean() - (s2 - 0.5 * p2).mean()) < 0.02
    with pytest.raises(ValueError, match="2 members"):
        crps_parts(big[:1], truth)


def test_rank_ties_broken_at_random():
    ens = np.zeros((4, 1000))
    ranks = rank_of_truth(ens, np.zeros(1000), np.random.default_rng(0))
    counts = np.bincount(ranks, minlength=5)
    assert counts.min() > 120  # ~200 each, not all in one bin


def test_region_mask_and_spatial_mean():
    lat = np.linspace(-90, 90, 61)
    lon = np.arange(0, 360, 3.0)
    m = region_mask(lat, lon, "europe")
    assert m[:, lon == 0.0].any() and m[:, lon == 351.0].any() and not m[:, lon == 180.0].any()
    w = cell_area_weights(lat)
    z = np.ones((61, 120)) * 3.0
    assert spatial_mean(z, w, m) == pytest.approx(3.0)


def test_great_circle():
    assert great_circle_km(0, 0, 0, 180) == pytest.approx(np.pi * 6371.0)
    assert great_circle_km(10, 359.5, 10, 0.5) == pytest.approx(great_circle_km(10, 0, 10, 1.0))


# ---- golden test on the real ERA5 ensemble ---------------------------------------------------------


@pytest.fixture
def era5_members(shared_file):
    ds = open_weather(shared_file("weather/era5_levels_members_2017-01-01.nc"))
    return ds.load()


def _score(ens, truth, lat, lon, rank_ties="split"):
    acc = ScoreAccumulator(lat, lon, rank_ties=rank_ties)
    for k in range(ens.shape[0]):
        acc.add("v", 0, ens[k], truth[k])
    return acc.result()[0]


@pytest.mark.shared_data
@pytest.mark.parametrize("var,level", [("temperature", 850.0), ("geopotential", 500.0)])
def test_golden_crps_ssr_rank_histogram(era5_members, var, level):
    da = era5_members[var].sel(level=level).values  # (10, 4, 61, 120)
    lat, lon = era5_members.latitude.values, era5_members.longitude.values
    hists, ssrs = [], []
    for held in range(1, 10):
        others = [m for m in range(1, 10) if m != held]
        ens = np.moveaxis(da[others], 0, 1)  # (N, M, H, W)
        truth = da[held]
        got = _score(ens, truth, lat, lon)
        ref = ref_scores(ens, truth, lat)
        for key in ("crps", "crps_skill", "crps_spread", "ssr"):
            assert got[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-9), key
        # the point-by-point reference is slow in pure Python: check it on three of the nine choices
        ref_h = ref_rank_hist(ens, truth) if held in (1, 5, 9) else np.asarray(got["rank_histogram"])
        np.testing.assert_allclose(got["rank_histogram"], ref_h, atol=1e-6)
        if held == 1:  # random tie-breaking agrees up to sampling noise (GRIB packing makes ties)
            rnd = _score(ens, truth, lat, lon, rank_ties="random")
            np.testing.assert_allclose(rnd["rank_histogram"], ref_h, atol=2e-3)
        hists.append(ref_h)
        ssrs.append(got["ssr"])
    # perturbed member as truth: calibrated (flat histogram, SSR near 1) on average over the 9 choices
    assert np.mean(ssrs) == pytest.approx(1.0, abs=0.1)
    np.testing.assert_allclose(np.mean(hists, axis=0), 1 / 9, atol=0.1 / 9)
    # control as truth: sits in the ensemble centre -> dome histogram, SSR well above 1
    ens = np.moveaxis(da[1:], 0, 1)
    ctrl = _score(ens, da[0], lat, lon)
    h = np.asarray(ctrl["rank_histogram"])
    assert h[4:6].mean() > 2 * h[[0, -1]].mean()
    assert ctrl["ssr"] > 1.3
