"""WeatherBench2-exact metrics: golden test on a real ERA5 ensemble against plain numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from apps.weather.data import open_weather
from apps.weather.metrics import (
    ScoreAccumulator,
    brier_parts,
    cell_area_weights,
    crps_parts,
    default_member_sizes,
    energy_parts,
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
    # energy score: field norms (area-weighted RMS), all member pairs
    norm = lambda z: np.sqrt(ref_area_mean(z**2, w))  # noqa: E731
    energy = np.mean([np.mean([norm(e[a] - y) for a in range(m)])
                      - 0.5 * np.mean([norm(e[a] - e[b]) for a in range(m) for b in range(m) if a != b])
                      for e, y in zip(ens.astype(np.float64), truth.astype(np.float64))])
    return {"crps": skill - 0.5 * spread, "crps_skill": skill, "crps_spread": spread, "ssr": np.sqrt(var_sum / mse_db),
            "energy_score": energy}


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


def test_member_curve_matches_the_long_way_and_the_full_ensemble():
    """The curve's point at k is the score of the first k members, written out here by loops; at k = M it is the
    row's own score; the standard CRPS divides the pair sum by k², the fair one by k(k − 1)."""
    rng = np.random.default_rng(3)
    lat, lon = -90 + (np.arange(5) + 0.5) * 36.0, np.arange(0, 360, 45.0)  # global rows: ref_weights applies
    n, m = 3, 6
    ens, truth = rng.normal(size=(n, m, 5, 8)), rng.normal(size=(n, 5, 8))
    acc = ScoreAccumulator(lat, lon, member_sizes=(6, 1, 3))
    for i in range(n):
        acc.add("x", 6, ens[i], truth[i])
    (row,) = acc.result()
    w = ref_weights(lat)
    assert [c["members"] for c in row["members_curve"]] == [1, 3, 6]
    for c in row["members_curve"]:
        k = c["members"]
        mse = np.mean([ref_area_mean((ens[i, :k].mean(0) - truth[i]) ** 2, w) for i in range(n)])
        pair = [sum(np.abs(ens[i, a] - ens[i, b]) for a in range(k) for b in range(k)) for i in range(n)]
        skill = np.mean([ref_area_mean(np.abs(ens[i, :k] - truth[i]).mean(0), w) for i in range(n)])
        standard = skill - 0.5 * np.mean([ref_area_mean(p / k**2, w) for p in pair])
        assert c["rmse"] == pytest.approx(np.sqrt(mse), rel=1e-12)
        assert c["crps_standard"] == pytest.approx(standard, rel=1e-12)
        if k == 1:
            assert np.isnan(c["crps"]) and np.isnan(c["ssr"]) and np.isnan(c["debiased_mse"])
        else:
            ref = ref_scores(ens[:, :k], truth, lat)
            assert c["crps"] == pytest.approx(ref["crps"], rel=1e-12) and c["ssr"] == pytest.approx(ref["ssr"], rel=1e-12)
    full = row["members_curve"][-1]
    assert (full["rmse"], full["crps"], full["ssr"], full["debiased_mse"]) == pytest.approx(
        (row["rmse"], row["crps"], row["ssr"], row["debiased_mse"]), rel=1e-12)
    with pytest.raises(ValueError, match="more than the 6 members of x at lead 6 h"):
        ScoreAccumulator(lat, lon, member_sizes=(7,)).add("x", 6, ens[0], truth[0])
    with pytest.raises(ValueError, match="must be >= 1"):
        ScoreAccumulator(lat, lon, member_sizes=(0, 2))
    assert default_member_sizes(1) == (1,) and default_member_sizes(10) == (1, 2, 5, 10)
    assert default_member_sizes(50) == (1, 2, 5, 10, 20, 50) and default_member_sizes(120) == (1, 2, 5, 10, 20, 50, 100, 120)


def test_member_curve_follows_the_finite_ensemble_laws():
    """Exchangeable members and truth (a calibrated ensemble): the ensemble-mean MSE is E∞·(1 + 1/k), the standard
    CRPS falls with k, the fair CRPS and the SSR stay put; the debiased MSE estimates E∞ at every k."""
    rng = np.random.default_rng(4)
    lat, lon = np.linspace(-60, 60, 16), np.arange(0, 360, 7.5)
    acc = ScoreAccumulator(lat, lon, member_sizes=(1, 2, 5, 20))
    for _ in range(30):
        centre = rng.normal(size=(16, 48))
        acc.add("x", 6, centre + rng.normal(size=(20, 16, 48)), centre + rng.normal(size=(16, 48)))
    curve = {c["members"]: c for c in acc.result()[0]["members_curve"]}
    for k in (1, 2, 5, 20):  # E∞ = 1 (the truth's own noise)
        assert curve[k]["rmse"] ** 2 == pytest.approx(1 + 1 / k, rel=0.03)
    for k in (2, 5, 20):
        assert curve[k]["debiased_mse"] == pytest.approx(1.0, rel=0.03) and curve[k]["ssr"] == pytest.approx(1.0, abs=0.03)
        assert curve[k]["crps"] == pytest.approx(curve[20]["crps"], rel=0.02)
    standard = [curve[k]["crps_standard"] for k in (1, 2, 5, 20)]
    assert all(a > b for a, b in zip(standard, standard[1:]))


def test_energy_score_and_brier_against_loops():
    """Energy score: area-weighted RMS norms of member-truth and member-member differences, by loops over pairs;
    Brier at two thresholds point by point; both on a region mask and through the accumulator's rows."""
    rng = np.random.default_rng(5)
    lat, lon = -90 + (np.arange(6) + 0.5) * 30.0, np.arange(0, 360, 40.0)
    w = ref_weights(lat)
    mask = np.zeros((6, 9), bool)
    mask[2:5, 1:7] = True
    ens, y = rng.normal(size=(5, 6, 9)), rng.normal(size=(6, 9))

    def norm(z):
        return np.sqrt(np.sum(z**2 * w[:, None] * mask) / np.sum(np.broadcast_to(w[:, None], z.shape) * mask))

    skill, spread = energy_parts(ens, y, cell_area_weights(lat), mask)
    assert skill == pytest.approx(np.mean([norm(e - y) for e in ens]), rel=1e-12)
    assert spread == pytest.approx(np.mean([norm(ens[a] - ens[b]) for a in range(5) for b in range(5) if a != b]), rel=1e-10)
    bs, fair, o, p = brier_parts(ens, y, 0.3)
    for i, j in [(0, 0), (3, 4), (5, 8)]:
        pij = sum(ens[m, i, j] > 0.3 for m in range(5)) / 5
        oij = float(y[i, j] > 0.3)
        assert (bs[i, j], fair[i, j], o[i, j], p[i, j]) == pytest.approx(((pij - oij) ** 2, (pij - oij) ** 2 - pij * (1 - pij) / 4, oij, pij))
    acc = ScoreAccumulator(lat, lon, thresholds={"x": (0.3, -1.0)})
    acc.add("x", 6, ens, y)
    acc.add("z", 6, ens, y)  # a channel without thresholds has no Brier entry
    rows = {r["variable"]: r for r in acc.result()}
    assert "brier" not in rows["z"] and [b["threshold"] for b in rows["x"]["brier"]] == [-1.0, 0.3]
    b = rows["x"]["brier"][1]
    ref = lambda z: ref_area_mean(z, w)  # noqa: E731
    assert (b["brier"], b["brier_fair"], b["base_rate"]) == pytest.approx((ref(bs), ref(fair), ref(o)), rel=1e-12)
    assert b["brier_skill_fair"] == pytest.approx(1 - ref(fair) / (ref(o) * (1 - ref(o))), rel=1e-12)
    skill_all, spread_all = energy_parts(ens, y, cell_area_weights(lat), np.ones((6, 9), bool))
    assert rows["x"]["energy_score"] == pytest.approx(skill_all - 0.5 * spread_all, rel=1e-12)


def test_fair_energy_and_brier_scores_do_not_depend_on_the_ensemble_size():
    """Fair scores estimate the infinite ensemble's: 3 members score like 30 on average, the plain Brier does not."""
    rng = np.random.default_rng(6)
    lat, lon = -90 + (np.arange(8) + 0.5) * 22.5, np.arange(0, 360, 22.5)
    small = ScoreAccumulator(lat, lon, thresholds={"x": (0.5,)})
    large = ScoreAccumulator(lat, lon, thresholds={"x": (0.5,)})
    for _ in range(200):
        centre = rng.normal(size=(8, 16))
        members = centre + rng.normal(size=(30, 8, 16))
        truth = centre + rng.normal(size=(8, 16))
        small.add("x", 6, members[:3], truth)
        large.add("x", 6, members, truth)
    (s,), (big,) = small.result(), large.result()
    assert s["energy_score"] == pytest.approx(big["energy_score"], rel=0.02)
    assert s["brier"][0]["brier_fair"] == pytest.approx(big["brier"][0]["brier_fair"], rel=0.03)
    assert s["brier"][0]["brier"] > 1.1 * big["brier"][0]["brier"]


def test_rank_ties_broken_at_random():
    ens = np.zeros((4, 1000))
    ranks = rank_of_truth(ens, np.zeros(1000), np.random.default_rng(0))
    counts = np.bincount(ranks, minlength=5)
    assert counts.min() > 120  # ~200 each, not all in one bin


def test_rank_histogram_does_not_depend_on_the_order_of_channels():
    """Ties are broken by a stream per (channel, lead, init): adding channels in another order (a zarr store lists
    its arrays in no fixed order) gives the same histograms; it used to consume one shared stream in call order."""
    lat, lon = np.linspace(-60, 60, 5), np.arange(0, 360, 45.0)
    rng = np.random.default_rng(3)
    fields = {ch: np.round(rng.normal(size=(3, 6, 5, 8))) for ch in ("a", "b", "c")}  # integers: many ties
    truth = {ch: np.round(rng.normal(size=(3, 5, 8))) for ch in fields}
    results = []
    for order in (("a", "b", "c"), ("c", "a", "b")):
        acc = ScoreAccumulator(lat, lon)
        for i in range(3):
            for ch in order:
                acc.add(ch, 6, fields[ch][i], truth[ch][i])
        results.append({r["variable"]: r["rank_histogram"] for r in acc.result()})
    assert results[0] == results[1]
    one = ScoreAccumulator(lat, lon, seed=1)
    for i in range(3):
        one.add("a", 6, fields["a"][i], truth["a"][i])
    assert one.result()[0]["rank_histogram"] != results[0]["a"]  # the seed still matters


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
        for key in ("crps", "crps_skill", "crps_spread", "ssr", "energy_score"):
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
