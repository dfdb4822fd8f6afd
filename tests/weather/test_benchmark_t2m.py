"""The t2m benchmark's command-line contract on a file of the real schema (CDS names, descending
latitude, longitudes west of 0°), any period: JSON keys per lead and train_seconds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr


def _t2m_file(tmp_path):
    """Nine days of hourly t2m with CDS names, descending latitude and longitudes west of 0°."""
    times = pd.date_range("2021-07-01", periods=24 * 9, freq="h")
    lat = np.arange(58.0, 49.9, -0.5)  # 17 rows, descending -> cropped to 16
    lon = np.arange(-10.0, -2.9, 0.5)  # 15 columns -> cropped to 12
    hour = times.hour.values[:, None, None]
    rng = np.random.default_rng(0)
    t2m = 285 + 4 * np.cos(2 * np.pi * (hour - 15) / 24) + rng.normal(0, 0.3, (len(times), len(lat), len(lon)))
    ds = xr.Dataset({"t2m": (("time", "latitude", "longitude"), t2m.astype("f4"), {"units": "K"})},
                    coords={"time": times, "latitude": lat, "longitude": lon})
    path = tmp_path / "t2m.nc"
    ds.to_netcdf(path)
    return path


def _common(path) -> list[str]:
    return ["--data", str(path), "--train", "2021-07-01:2021-07-06", "--test", "2021-07-07:2021-07-09",
            "--quick", "--steps", "2", "--sampler-steps", "2", "--threads", "1"]


def test_t2m_benchmark_contract(tmp_path, load_benchmark):
    bench = load_benchmark("weather_t2m_uk")
    out = tmp_path / "b.json"
    path = _t2m_file(tmp_path)
    common = _common(path)
    # the defaults (damped prior, history 1, no calibration): contract keys and the run description
    plain = bench.main(common + ["--out", str(tmp_path / "plain.json")])
    assert plain["history"] == 1 and plain["prior"] == "damped" and plain["calibration"] is None
    assert plain["train_steps_done"] == 2 and plain["precision"] in ("32-true", "bf16-mixed")
    assert plain["width"] == {"dim": 64, "depth_dual": 2, "depth_single": 1} and plain["lr"] == 2e-3
    assert plain["weight_decay"] == 0.01 and plain["train_crop"] is None and plain["train_crop_prob"] is None
    assert plain["nets"] == 1 and plain["train_seeds"] == [0] and plain["checkpoint"] is None
    assert plain["year_harmonics"] == 0  # auto: six training days are far from a year -> the hour of day only
    # half the 16x12 grid per axis, down to the patch 4: 8x4, on every step unless told otherwise
    half = bench.main(common + ["--out", str(tmp_path / "half.json"), "--train-crop", "half"])
    assert half["train_crop"] == [8, 4] and half["train_crop_prob"] == 1.0
    # another width and learning rate by numbers only: recorded in the JSON and the ones the kept checkpoint holds
    narrow = bench.main(common + ["--out", str(tmp_path / "narrow.json"), "--dim", "32", "--depth-dual", "1",
                                  "--depth-single", "0", "--lr", "5e-4", "--weight-decay", "0.1", "--train-crop", "8x8", "--train-crop-prob", "0.5",
                                  "--year-harmonics", "2",
                                  "--keep-checkpoint", str(tmp_path / "narrow.ckpt")])
    assert narrow["width"] == {"dim": 32, "depth_dual": 1, "depth_single": 0} and narrow["lr"] == 5e-4
    saved_ckpt = torch.load(tmp_path / "narrow.ckpt", map_location="cpu", weights_only=True)
    assert saved_ckpt["optimizer_states"][0]["param_groups"][0]["initial_lr"] == pytest.approx(5e-4)
    assert narrow["train_crop"] == [8, 8] and saved_ckpt["weather"]["objective"]["train_crop"] == [8, 8]
    assert narrow["train_crop_prob"] == 0.5 and saved_ckpt["weather"]["objective"]["train_crop_prob"] == 0.5
    assert narrow["year_harmonics"] == 2 and saved_ckpt["weather"]["net"]["year_harmonics"] == 2
    assert narrow["grid"] == "16x12"  # the crop is a training augmentation: the forecast covers the whole grid
    assert narrow["weight_decay"] == 0.1 and saved_ckpt["optimizer_states"][0]["param_groups"][0]["weight_decay"] == 0.1
    weights = saved_ckpt["state_dict"]
    widths = {w.shape[-1] for k, w in weights.items() if k.endswith("qkv.weight")}
    assert widths == {32} and any("dual_blocks.0." in k for k in weights)
    assert not any("dual_blocks.1." in k or "single_blocks" in k for k in weights), sorted(weights)
    # a reused checkpoint: the JSON describes the training it holds, not the command line's defaults
    reused = bench.main(common + ["--out", str(tmp_path / "reused.json"), "--checkpoint", str(tmp_path / "narrow.ckpt")])
    assert reused["width"] == {"dim": 32, "depth_dual": 1, "depth_single": 0}
    assert reused["lr"] == pytest.approx(5e-4) and reused["weight_decay"] == pytest.approx(0.1)
    assert reused["train_seconds"] is None and reused["train_steps_done"] == 2 and reused["train_steps"] is None
    assert reused["prior"] == "damped" and reused["history"] == 1 and reused["train_crop"] == [8, 8]
    assert reused["train_crop_prob"] == 0.5 and reused["year_harmonics"] == 2
    assert reused["checkpoint_train_period"] == "2021-07-01:2021-07-06"
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="junk.ckpt: not a readable checkpoint"):
        bench.main(common + ["--out", str(tmp_path / "junk.json"), "--checkpoint", str(tmp_path / "junk.ckpt")])
    assert not (tmp_path / "junk.json").exists()
    for v in plain["leads"].values():
        assert {"rmse", "crps", "ssr", "persistence_rmse", "climatology_rmse"} <= set(v) and "spread_factor" not in v
    # with a held-out calibration window (the diurnal prior: on this white-noise field the damped prior is close to
    # the climatology, and a 2-step net's spread then dwarfs the mean's error -> SSR = inf, nothing to fit)
    res = bench.main(common + ["--out", str(out), "--val-days", "4", "--prior", "diurnal", "--history", "0"])
    saved = json.loads(out.read_text())
    assert set(saved["leads"]) == {"6", "12", "24", "48"}
    for v in saved["leads"].values():
        assert {"rmse", "crps", "ssr", "persistence_rmse", "climatology_rmse"} <= set(v)
        assert all(isinstance(x, float) for k, x in v.items() if k not in ("raw", "members_curve"))
        assert np.isfinite(v["rmse"]) and np.isfinite(v["crps"])
        # the raw members' skill against ensemble size up to the default 50; the last point is the raw ensemble
        assert [c["members"] for c in v["members_curve"]] == [1, 2, 5, 10, 20, 50]
        assert v["members_curve"][-1]["rmse"] == pytest.approx(v["raw"]["rmse"], rel=1e-12)
        assert v["members_curve"][-1]["crps"] == pytest.approx(v["raw"]["crps"], rel=1e-12)
        # calibrated = raw with the spread scaled: mean scores identical, spread scaled by the factor exactly
        assert set(v["raw"]) >= {"rmse", "crps", "ssr"} and v["raw"]["rmse"] == pytest.approx(v["rmse"], rel=1e-9)
        assert v["spread"] == pytest.approx(v["raw"]["spread"] * v["spread_factor"], rel=1e-6)
    assert saved["train_seconds"] > 0 and saved["grid"] == "16x12" and saved["n_inits"] == 2
    assert res["members"] == 50
    # validation = the last 4 days of training, never the test period; the model trains on the first 2
    assert saved["fit_period"] == "2021-07-01:2021-07-02"
    assert saved["validation_inits"] == ["2021-07-03T00", "2021-07-03T12", "2021-07-04T00", "2021-07-04T12"]
    calib = json.loads((tmp_path / "b_calibration.json").read_text())
    assert set(calib["factors"]["2m_temperature"]) >= {"6", "12", "24", "48"}
    # a run that fails after the calibration was fitted leaves neither its JSON nor a calibration file
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "write_json_atomic", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
        with pytest.raises(OSError, match="disk full"):
            bench.main(common + ["--out", str(tmp_path / "failed.json"), "--val-days", "4", "--prior", "diurnal", "--history", "0"])
    assert not list(tmp_path.glob("failed*")) and not list(tmp_path.glob(".failed*"))
    with pytest.raises(SystemExit):
        bench.main(["--data", str(path), "--train", "2021-07-01:2021-07-06", "--test", "2021-07-07:2021-07-09", "--out", str(out), "--members", "5"])
    with pytest.raises(SystemExit):  # four heads: the width must split into them
        bench.main(common + ["--out", str(tmp_path / "odd.json"), "--dim", "30"])
    with pytest.raises(SystemExit):
        bench.main(common + ["--out", str(tmp_path / "odd.json"), "--lr", "nan"])
    with pytest.raises(SystemExit, match="--train-crop 20x12 is larger than the 16x12 training grid of .*t2m.nc"):
        bench.main(common + ["--out", str(tmp_path / "odd.json"), "--train-crop", "20x12"])
    assert not (tmp_path / "odd.json").exists()
    # refused before training (--sampler-steps 0 failed after it with a traceback; --steps 0 trained the default 300)
    for bad in (["--sampler-steps", "0"], ["--steps", "0"], ["--history", "-1"], ["--max-train-minutes", "0"],
                ["--weight-decay", "-0.1"], ["--train-crop", "6x8"], ["--train-crop", "8"], ["--train-crop", "0x8"],
                ["--train-crop-prob", "1.5"], ["--train-crop-prob", "x"], ["--year-harmonics", "-1"],
                ["--year-harmonics", "often"], ["--nets", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            bench.main(["--data", str(path), "--train", "2021-07-01:2021-07-06", "--test", "2021-07-07:2021-07-09", "--out", str(out), *bad])
        assert exit_info.value.code == 2, bad


def _daily_cycle_file(path, drop_hours=()):
    """A NetCDF t2m file (9 days hourly from 2021-07-01, 9 x 9 UK box) that is only a daily cycle, without the
    hours ``drop_hours`` (indices from the start: a gap in the time axis)."""
    times = pd.date_range("2021-07-01", periods=24 * 9, freq="h")
    lat, lon = np.arange(58.0, 49.9, -1.0), np.arange(-10.0, -1.9, 1.0)  # 9 x 9 -> cropped to 8 x 8
    hour = times.hour.values[:, None, None]
    t2m = 285 + 4 * np.cos(2 * np.pi * (hour - 14) / 24) * (1 + 0.05 * lat[None, :, None] - 2.5) + np.zeros((1, 1, len(lon)))
    ds = xr.Dataset({"t2m": (("time", "latitude", "longitude"), t2m.astype("f4"))}, coords={"time": times, "latitude": lat, "longitude": lon})
    ds.isel(time=np.setdiff1d(np.arange(len(times)), drop_hours)).to_netcdf(path)
    return path


@pytest.mark.parametrize("drop_hours", [(), tuple(range(30, 41))], ids=["regular", "gap"])
def test_t2m_baselines_on_a_pure_daily_cycle(tmp_path, load_benchmark, drop_hours):
    """A field that is only a daily cycle plus a slow drift: persistence + cycle is near exact at every lead,
    persistence is exact at 24/48 h only, and the scores match a hand computation. With 11 hours missing in the
    training period the local fits still pair states by time (index arithmetic paired states 11 h off)."""
    _daily_cycle_file(tmp_path / "t.nc", list(drop_hours))
    res = load_benchmark("weather_t2m_baselines").main(
        ["--data", str(tmp_path / "t.nc"), "--train", "2021-07-01:2021-07-06", "--test", "2021-07-07:2021-07-09", "--out", str(tmp_path / "b.json")])
    assert res["n_inits"] == 2 and res["grid"] == "8x8"
    for lead, v in res["leads"].items():
        assert v["persistence_plus_cycle"] < 0.01 and v["diurnal_climatology"] < 0.01
        assert v["damped_anomaly_persistence"] < 0.01  # no anomaly to damp: the cycle itself
        assert v["damped_per_cell_hour"] < 0.01 and v["persistence_plus_mean_change"] < 0.01  # local fits exact too
        assert v["stencil_ridge"] < 0.01
        assert v["persistence_plus_yesterday_change"] < 1e-3  # yesterday's cycle repeats exactly
        assert v["damped_recent_cycle"] < 0.01  # the recent days' cycle is the cycle
        if lead in ("6", "12"):
            assert v["persistence"] > 1.0  # the cycle moved; persistence misses it
        else:
            assert v["persistence"] < 1e-4


def test_damped_recent_cycle_follows_a_new_level(tmp_path, load_benchmark):
    """The daily cycle jumps 3 K warmer from day 4 on: the training period's climatology sits half-way, so
    damping towards it misses at 48 h, while the recent days' cycle (2 days, all after the jump) is exact."""
    with xr.open_dataset(_daily_cycle_file(tmp_path / "t.nc")) as ds:
        warm = ds.load()
    warm["t2m"] = warm["t2m"] + 3.0 * (warm.time >= np.datetime64("2021-07-04")).astype("f4")
    warm.to_netcdf(tmp_path / "warm.nc")
    res = load_benchmark("weather_t2m_baselines").main(
        ["--data", str(tmp_path / "warm.nc"), "--train", "2021-07-01:2021-07-06", "--test", "2021-07-07:2021-07-09",
         "--out", str(tmp_path / "b.json"), "--recent-days", "2"])
    assert res["recent_days"] == 2
    for lead, v in res["leads"].items():
        assert v["damped_recent_cycle"] < 0.01, lead
    assert res["leads"]["48"]["damped_anomaly_persistence"] > 0.3
    assert res["leads"]["48"]["diurnal_climatology"] > 1.0
    with pytest.raises(SystemExit):  # an empty window is refused before any work
        load_benchmark("weather_t2m_baselines").main(
            ["--data", str(tmp_path / "warm.nc"), "--train", "2021-07-01:2021-07-06", "--test", "2021-07-07:2021-07-09",
             "--out", str(tmp_path / "b0.json"), "--recent-days", "0"])
    assert not (tmp_path / "b0.json").exists()


def test_stencil_ridge_learns_advection(load_benchmark):
    """Departures that move one cell east per lead: persistence of the departure misses, the shared 5x5
    stencil recovers the shift (the weight sits on the western neighbour) and predicts unseen fields."""
    mod = load_benchmark("weather_t2m_baselines")
    rng = np.random.default_rng(0)
    fields = rng.normal(size=(40, 12, 14))
    moved = np.pad(fields, ((0, 0), (0, 0), (1, 0)), mode="edge")[:, :, :-1]  # value at x comes from x - 1
    coef = mod.fit_stencil_ridge(fields, moved, ridge=1e-3)
    assert coef.shape == (26,)
    assert coef[2 * 5 + 1] == pytest.approx(1.0, abs=1e-3)  # row dy = 2 (same row), column dx = 1 (west)
    assert np.abs(np.delete(coef, 2 * 5 + 1)).max() < 1e-3
    fresh = rng.normal(size=(12, 14))
    pred = (mod.stencil_features(fresh) @ coef).reshape(fresh.shape)
    truth = np.pad(fresh, ((0, 0), (1, 0)), mode="edge")[:, :-1]
    assert np.abs(pred - truth).max() < 1e-2 and np.abs(fresh - truth).mean() > 0.5


def test_half_crop(load_benchmark):
    half = load_benchmark("weather_t2m_uk")._half_crop
    assert half(32, 48) == (16, 24) and half(33, 50) == (16, 24) and half(16, 12) == (8, 4)
    assert half(4, 8) == (4, 4) and half(4, 4) is None  # one patch: nothing to crop


def test_test_inits_any_period(load_benchmark):
    """Inits: 00/12 UTC in the period (END a date = the whole day; END with an hour = that hour), the history
    states and every lead present in the file by time (a gap drops the init, never shifts it)."""
    bench = load_benchmark("weather_t2m_uk")
    times = pd.date_range("2019-03-01", "2019-03-10T23", freq="h").values
    h = lambda s: np.datetime64(s, "h")  # noqa: E731
    one_day = bench._inits(times, h("2019-03-05T00"), h("2019-03-05T23"), history=1)
    assert [str(t) for t in one_day] == ["2019-03-05T00", "2019-03-05T12"]  # truth after END comes from the file
    assert [str(t) for t in bench._inits(times, h("2019-03-07T00"), h("2019-03-10T23"))] == ["2019-03-07T00", "2019-03-07T12", "2019-03-08T00", "2019-03-08T12"]
    assert bench._inits(times, h("2019-03-01T00"), h("2019-03-01T12"), history=1) == [h("2019-03-01T12")]
    within = bench._inits(times, h("2019-03-02T00"), h("2019-03-05T00"), truth_end=h("2019-03-05T00"))
    assert [str(t) for t in within] == ["2019-03-02T00", "2019-03-02T12", "2019-03-03T00"]
    gap = times[times != np.datetime64("2019-03-04T18")]
    assert h("2019-03-05T00") not in bench._inits(gap, h("2019-03-05T00"), h("2019-03-05T12"), history=1)
    # 03-04T18 is the 6 h lead of 03-04T12 and no time of 03-04T00's (its leads: T06, T12, 05T00, 06T00)
    assert bench._inits(gap, h("2019-03-04T00"), h("2019-03-04T12")) == [h("2019-03-04T00")]
    assert bench._split("2019-03-01T06:00:2019-03-10T18") == ("2019-03-01T06:00", "2019-03-10T18")
    with pytest.raises(SystemExit):
        bench._split("2019-03-01")


def test_periods_refused_with_the_reason(tmp_path, load_benchmark):
    """Overlapping train/test periods (were scored on training data without a word), a test period before the
    training one whose 48 h truth would fall inside it, a training period shorter than one window: one error each,
    naming the file and the periods, before any training."""
    from apps.weather.data import WeatherDataError

    times = pd.date_range("2021-07-01", periods=24 * 9, freq="h")
    rng = np.random.default_rng(0)
    ds = xr.Dataset({"2t": (("time", "latitude", "longitude"), (285 + rng.normal(0, 1, (len(times), 8, 8))).astype("f4"))},
                    coords={"time": times, "latitude": np.arange(57.0, 49.0, -1.0), "longitude": np.arange(-10.0, -2.0)})
    ds.to_netcdf(tmp_path / "t.nc")
    bench = load_benchmark("weather_t2m_uk")

    def run(train, test):
        return bench.main(["--data", str(tmp_path / "t.nc"), "--train", train, "--test", test, "--out", str(tmp_path / "o.json"),
                           "--quick", "--steps", "1", "--sampler-steps", "2", "--threads", "1"])

    with pytest.raises(WeatherDataError, match=r"t\.nc \[time\]: test period 2021-07-04:2021-07-07 overlaps the training period 2021-07-05:2021-07-06"):
        run("2021-07-05:2021-07-06", "2021-07-04:2021-07-07")  # inside the test's verification: nothing left to train on
    bench.main(["--data", str(tmp_path / "t.nc"), "--train", "2021-07-01:2021-07-05", "--test", "2021-07-05:2021-07-07",
                "--out", str(tmp_path / "cut.json"), "--quick", "--steps", "1", "--sampler-steps", "2", "--threads", "1"])
    cut = json.loads((tmp_path / "cut.json").read_text())  # the shared day is cut from training, not refused
    assert cut["fit_period"] == "2021-07-01:2021-07-04T23" and cut["inits"][0].startswith("2021-07-05T00")
    assert set(cut["leads"]) == {"6", "12", "24", "48"}
    with pytest.raises(WeatherDataError, match=r"no 00/12 UTC init .* before the training period 2021-07-03:2021-07-09"):
        run("2021-07-03:2021-07-09", "2021-07-01:2021-07-02")
    with pytest.raises(WeatherDataError, match=r"period too short for 4 frames of 6 h \(with 1 history state\(s\) a window spans 30 h; "
                                               r"the period 2021-07-08T00:00 .. 2021-07-09T05:00 has 30 times"):
        run("2021-07-08T00:2021-07-09T05", "2021-07-01:2021-07-05")
    ds.isel(time=slice(0, None, 4)).to_netcdf(tmp_path / "4h.nc")
    with pytest.raises(WeatherDataError, match=r"4h\.nc \[time\]: the file's time step \(4 h\) does not divide the model's 6 h step"):
        bench.main(["--data", str(tmp_path / "4h.nc"), "--train", "2021-07-01:2021-07-05", "--test", "2021-07-06:2021-07-07",
                    "--out", str(tmp_path / "o.json")])
    with pytest.raises(WeatherDataError, match=r"--val-days 4 holds out the whole training period 2021-07-01:2021-07-03"):
        bench.main(["--data", str(tmp_path / "t.nc"), "--train", "2021-07-01:2021-07-03", "--test", "2021-07-05:2021-07-06",
                    "--out", str(tmp_path / "o.json"), "--val-days", "4"])
    with pytest.raises(WeatherDataError, match=r"overlaps the training period"):  # the baselines use the same rule
        load_benchmark("weather_t2m_baselines").main(["--data", str(tmp_path / "t.nc"), "--train", "2021-07-05:2021-07-06",
                                                      "--test", "2021-07-04:2021-07-07", "--out", str(tmp_path / "o.json")])
    assert not (tmp_path / "o.json").exists()


def test_overlapping_training_period_is_cut_not_scored_on(capsys):
    """Half-open habits (``--train 07-01:07-05 --test 07-05:07-07``) or a test inside the training period: the
    benchmark trains on the part before the test (or after the test's 48 h verification), says so, and never
    on the test's truth (before: scored on training data; then: refused, so such a run gave no result)."""
    from apps.weather.data import trim_training_overlap

    assert trim_training_overlap(("2021-07-01", "2021-07-05"), ("2021-07-06", "2021-07-07"), 48) == (("2021-07-01", "2021-07-05"), None)
    cut, note = trim_training_overlap(("2021-07-01", "2021-07-05"), ("2021-07-05", "2021-07-07"), 48)
    assert cut == ("2021-07-01", "2021-07-04T23") and "training on 2021-07-01:2021-07-04T23" in note
    assert trim_training_overlap(("2021-07-01", "2021-07-20"), ("2021-07-05T12", "2021-07-07"), 48)[0] == ("2021-07-01", "2021-07-05T11")
    assert trim_training_overlap(("2021-07-03", "2021-07-20"), ("2021-07-01", "2021-07-04"), 48)[0] == ("2021-07-07T00", "2021-07-20")
    assert trim_training_overlap(("2021-07-05", "2021-07-06"), ("2021-07-04", "2021-07-07"), 48)[1] is None  # nothing left


def test_nets_train_and_pool_a_multi_model_ensemble(tmp_path, load_benchmark):
    bench = load_benchmark("weather_t2m_uk")
    common = _common(_t2m_file(tmp_path)) + ["--seed", "3"]
    kept = [str(tmp_path / "m.ckpt"), str(tmp_path / "m_net1.ckpt")]
    pooled = bench.main(common + ["--out", str(tmp_path / "pooled.json"), "--nets", "2", "--keep-checkpoint", kept[0]])
    assert pooled["nets"] == 2 and pooled["train_seeds"] == [3, 4] and pooled["train_steps_done"] == [2, 2]
    assert pooled["checkpoint"] == kept and pooled["train_seconds"] > 0
    weights = [torch.load(k, map_location="cpu", weights_only=True)["state_dict"] for k in kept]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # two seeds, two nets
    # the kept nets, reused, give the same ensemble (the forecast's seeds follow --seed and the member)
    reused = bench.main(common + ["--out", str(tmp_path / "reused.json"), "--checkpoint", *kept])
    assert reused["nets"] == 2 and reused["train_seeds"] is None and reused["checkpoint"] == kept
    for lead, v in pooled["leads"].items():
        assert reused["leads"][lead]["rmse"] == pytest.approx(v["rmse"], rel=1e-6)
        assert reused["leads"][lead]["crps"] == pytest.approx(v["crps"], rel=1e-6)
    with pytest.raises(SystemExit):  # --nets trains; checkpoints given are the ensemble already
        bench.main(common + ["--out", str(tmp_path / "x.json"), "--nets", "2", "--checkpoint", *kept])
    with pytest.raises(SystemExit, match="--members 10 cannot be shared among 11 nets"):
        bench.main(common + ["--out", str(tmp_path / "y.json"), "--nets", "11", "--members", "10"])
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "y.json").exists()


def test_nets_share_the_time_budget(load_benchmark):
    """Each net gets an equal share of what is left; an early finisher's minutes pass on to the nets after it."""
    share = load_benchmark("weather_t2m_uk").net_minutes
    assert share(28.0, 0.0, 4) == pytest.approx(7.0)
    assert share(28.0, 120.0, 3) == pytest.approx(26.0 / 3)  # the first net stopped after 2 of its 7 minutes
    assert share(28.0, 27.0 * 60, 1) == pytest.approx(1.0) and share(28.0, 30.0 * 60, 1) == 0.0


def test_year_harmonics_auto_follows_the_training_span(load_benchmark):
    """auto: the year fraction only when training spans 360 days or more (the climatology baseline's rule)."""
    rule = load_benchmark("weather_t2m_uk").year_harmonics
    assert rule("auto", "2019-03-01:2019-03-17") == 0
    assert rule("auto", "2018-03-01:2019-02-24") == 4  # 2018-03-01T00 .. 2019-02-24T23: 360 days 23 h
    assert rule("auto", "2018-03-01:2019-02-23") == 0  # 359 days 23 h
    assert rule(2, "2019-03-01:2019-03-17") == 2
