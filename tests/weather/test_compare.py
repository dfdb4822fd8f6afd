"""Per-init scores from evaluate, and one forecast compared with another with paired bootstrap intervals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from apps.weather.cli import main
from apps.weather.compare import compare
from apps.weather.data import WeatherDataError
from apps.weather.evaluate import evaluate
from apps.weather.synthetic import simulate


@pytest.fixture(scope="module")
def two_evaluations(tmp_path_factory):
    """One truth, two 4-member forecasts of 12 inits (6 days): A with error 0.5 K, B with error 1.0 K."""
    tmp = tmp_path_factory.mktemp("compare")
    truth = simulate(8, 16, days=10, seed=6)
    truth.to_zarr(tmp / "truth.zarr", consolidated=False, zarr_format=3)
    inits = truth.time.values[48:48 + 12 * 12:12]
    leads = np.array([6, 24], dtype="timedelta64[h]").astype("timedelta64[ns]")
    t2 = np.stack([np.stack([truth["2m_temperature"].sel(time=i + lt).values for lt in leads]) for i in inits])
    rng = np.random.default_rng(0)
    out = {}
    for name, err in (("a", 0.5), ("b", 1.0)):
        centre = t2 + rng.normal(0, err, t2.shape)
        ens = centre[:, None] + rng.normal(0, err, (len(inits), 4, *t2.shape[1:]))
        fc = xr.Dataset({"2m_temperature": (("time", "realization", "prediction_timedelta", "latitude", "longitude"), ens.astype("f4"))},
                        coords={"time": inits, "realization": np.arange(4), "prediction_timedelta": leads,
                                "latitude": truth.latitude.values, "longitude": truth.longitude.values})
        fc.to_zarr(tmp / f"{name}.zarr", consolidated=False, zarr_format=3)
        out[name] = evaluate(tmp / f"{name}.zarr", tmp / "truth.zarr", tmp / f"ev_{name}", regions=("global", "tropics"), report=False)
    return tmp, out


def test_per_init_scores_add_up_to_the_scores(two_evaluations):
    tmp, res = two_evaluations
    table = pd.read_csv(tmp / "ev_a" / "per_init.csv")
    assert list(table.columns) == ["variable", "lead_hours", "region", "init", "mse", "mae", "bias", "crps", "variance"]
    assert len(table) == 12 * 2 * 2  # inits x leads x regions (one channel)
    for row in res["a"]["scores"]:
        part = table.query(f"lead_hours == {row['lead_hours']} and region == '{row['region']}'")
        assert np.sqrt(part["mse"].mean()) == pytest.approx(row["rmse"], rel=1e-12)
        assert part["crps"].mean() == pytest.approx(row["crps"], rel=1e-12)
        assert part["bias"].mean() == pytest.approx(row["bias"], rel=1e-12, abs=1e-12)


def test_compare_skill_intervals_and_scorecard(two_evaluations, tmp_path):
    tmp, res = two_evaluations
    ab = compare(tmp / "ev_a", tmp / "ev_b", tmp_path / "ab", n_boot=400)
    assert ab["cases_matched"] == 48 and ab["inits"] == 12 and ab["init_days"] == 6
    for row in ab["rows"]:
        a = next(r for r in res["a"]["scores"] if (r["lead_hours"], r["region"]) == (row["lead_hours"], row["region"]))
        b = next(r for r in res["b"]["scores"] if (r["lead_hours"], r["region"]) == (row["lead_hours"], row["region"]))
        assert row["rmse_skill"] == pytest.approx(1 - a["rmse"] / b["rmse"], rel=1e-9)
        assert row["crps_skill"] == pytest.approx(1 - a["crps"] / b["crps"], rel=1e-9)
        assert row["rmse_skill_low"] < row["rmse_skill"] < row["rmse_skill_high"]
        assert row["significant"] and row["rmse_skill_low"] > 0.2  # half the error: about 50 % skill
    ba = compare(tmp / "ev_b", tmp / "ev_a", tmp_path / "ba", n_boot=400)
    assert all(r["significant"] and r["rmse_skill_high"] < 0 for r in ba["rows"])
    same = compare(tmp / "ev_a", tmp / "ev_a", tmp_path / "aa", n_boot=50)
    assert all(r["rmse_skill"] == 0 and r["rmse_skill_low"] == 0 == r["rmse_skill_high"] and not r["significant"] for r in same["rows"])
    assert len(pd.read_csv(tmp_path / "ab" / "comparison.csv")) == 4
    page = (tmp_path / "ab" / "scorecard.html").read_text()
    assert "<b>" in page and "tropics" in page and "12 common inits over 6 day(s)" in page
    assert json.loads((tmp_path / "ab" / "comparison.json").read_text())["n_boot"] == 400
    # a wider interval at a lower level is narrower: the levels are honoured
    narrow = compare(tmp / "ev_a", tmp / "ev_b", tmp_path / "ab80", n_boot=400, level=0.8)
    assert narrow["rows"][0]["rmse_skill_high"] - narrow["rows"][0]["rmse_skill_low"] < \
        ab["rows"][0]["rmse_skill_high"] - ab["rows"][0]["rmse_skill_low"]
    cli = main(["compare", "--forecast", str(tmp / "ev_a"), "--baseline", str(tmp / "ev_b"), "--out", str(tmp_path / "cli"), "--boot", "50"])
    assert len(cli["rows"]) == 4 and (tmp_path / "cli" / "scorecard.html").exists()


def test_compare_bad_input(two_evaluations, tmp_path):
    tmp, _ = two_evaluations
    with pytest.raises(WeatherDataError, match="no per_init.csv"):
        compare(tmp, tmp / "ev_b", tmp_path / "x")
    other = tmp_path / "other"
    other.mkdir()
    table = pd.read_csv(tmp / "ev_b" / "per_init.csv")
    table.assign(init="1999-01-01T00").to_csv(other / "per_init.csv", index=False)
    with pytest.raises(WeatherDataError, match="no \\(channel, lead, region, init\\) case in common"):
        compare(tmp / "ev_a", other, tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(ValueError, match="n_boot=5"):
        compare(tmp / "ev_a", tmp / "ev_b", tmp_path / "z", n_boot=5)
