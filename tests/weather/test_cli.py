"""The command line: LightningCLI fit with a shipped config, then forecast and evaluate verbs."""

from __future__ import annotations

import json
import re

import pytest
import torch
import xarray as xr

from apps.weather.cli import CONFIG_DIR, main
from apps.weather.synthetic import write_synthetic_zarr


@pytest.mark.parametrize("name", ["demo", "forecaster", "t2m_uk"])
def test_configs_validate(name, capsys):
    """Every shipped config parses and type-checks against the classes (LightningCLI --print_config)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIG_DIR / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "apps.weather.model.WeatherForecaster" in capsys.readouterr().out


def test_cli_fit_forecast_evaluate(tmp_path):
    data = write_synthetic_zarr(tmp_path / "syn.zarr", n_lat=8, n_lon=16, days=12, seed=0, time_chunk=48)
    fitted = main([
        "fit", "--config", str(CONFIG_DIR / "demo.yaml"),
        "--data.init_args.path", str(data), "--data.init_args.train_period", "2000-01-01:2000-01-08",
        "--data.init_args.val_period", "2000-01-09:2000-01-10", "--data.init_args.frames", "2",
        "--model.init_args.net.init_args.grid", "[8, 16]", "--model.init_args.net.init_args.frames", "2",
        "--model.init_args.net.init_args.dim", "32", "--model.init_args.net.init_args.depth_dual", "1",
        "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "2",
        "--trainer.default_root_dir", str(tmp_path / "fit"), "--trainer.logger", "false",
        "--trainer.callbacks.init_args.dirpath", str(tmp_path / "ck"),
    ])
    assert fitted.trainer.global_step == 2 and "val/loss" in fitted.trainer.callback_metrics
    ckpt = tmp_path / "m.ckpt"
    fitted.trainer.save_checkpoint(ckpt)
    assert "dualsci_config" in torch.load(ckpt, weights_only=True)
    common = ["--config", str(CONFIG_DIR / "demo.yaml"), "--data.init_args.path", str(data),
              "--data.init_args.train_period", "2000-01-01:2000-01-08", "--data.init_args.val_period", "2000-01-09:2000-01-10",
              "--data.init_args.frames", "2", "--model.init_args.net.init_args.grid", "[8, 16]",
              "--model.init_args.net.init_args.frames", "2", "--model.init_args.net.init_args.dim", "32",
              "--model.init_args.net.init_args.depth_dual", "1", "--trainer.logger", "false", "--trainer.callbacks", "[]",
              "--trainer.default_root_dir", str(tmp_path / "fit2"), "--ckpt_path", str(ckpt)]
    pred = main(["predict", *common, "--trainer.limit_predict_batches", "1"])
    assert pred.trainer.predict_loop.predictions[0].shape[1:] == (2, 6, 8, 16)
    main(["validate", *common, "--trainer.limit_val_batches", "1"])
    out = main(["forecast", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(tmp_path / "fc.nc"),
                "--inits", "2000-01-10T00:2000-01-10T12:12", "--lead-hours", "12", "--members", "2", "--steps", "2",
                "--sampler", "dpmpp_2m", "--no-progress"])
    res = main(["evaluate", "--forecast", out, "--truth", str(data), "--out", str(tmp_path / "ev"), "--no-report",
                "--member-curve", "1,2", "--threshold", "2m_temperature=280", "--threshold", "2m_temperature=290.5"])
    assert {r["lead_hours"] for r in res["scores"]} == {6, 12}
    assert all([c["members"] for c in r["members_curve"]] == [1, 2] for r in res["scores"])
    assert all([b["threshold"] for b in r["brier"]] == [280.0, 290.5] for r in res["scores"] if r["variable"] == "2m_temperature")
    assert json.loads((tmp_path / "ev" / "scores.json").read_text())["grid"] == "8x16"
    # spread calibration: a calibrated copy of the store scores like evaluate --calibration on the raw one
    from apps.weather.calibration import SpreadCalibration, fit_spread_scales

    cpath = fit_spread_scales(res["scores"]).save(tmp_path / "calib.json")
    cal_store = main(["calibrate", "--forecast", out, "--calibration", str(cpath), "--out", str(tmp_path / "fc_cal.zarr")])
    via_copy = main(["evaluate", "--forecast", cal_store, "--truth", str(data), "--out", str(tmp_path / "ev_c"), "--no-report"])
    via_flag = main(["evaluate", "--forecast", out, "--truth", str(data), "--out", str(tmp_path / "ev_f"), "--no-report",
                     "--calibration", str(cpath)])
    for r0, r1, r2 in zip(res["scores"], via_copy["scores"], via_flag["scores"]):
        assert r1["rmse"] == pytest.approx(r0["rmse"], rel=1e-5) and r1["ssr"] == pytest.approx(r2["ssr"], rel=1e-4)
        assert r2["ssr"] == pytest.approx(1.0, rel=1e-6) or SpreadCalibration.load(cpath).factor(r0["variable"], r0["lead_hours"]) in (0.25, 4.0)
    short = SpreadCalibration({"2m_temperature": {6: 0.5}}).save(tmp_path / "short.json")
    with pytest.raises(ValueError, match="fc.nc: calibration has no channel|fc.nc: calibration for"):
        main(["calibrate", "--forecast", out, "--calibration", str(short), "--out", str(tmp_path / "none.zarr")])
    assert not (tmp_path / "none.zarr").exists()
    fc2 = main(["forecast", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(tmp_path / "fc2.zarr"),
                "--inits", "2000-01-10T00", "--lead-hours", "12", "--members", "2", "--steps", "2", "--sampler", "dpmpp_2m",
                "--no-progress", "--calibration", str(cpath)])
    assert (tmp_path / "fc2_calibrated.zarr").is_dir() and fc2.endswith("fc2.zarr")
    # several checkpoints: one multi-model ensemble, each net's hash in the provenance
    fc3 = main(["forecast", "--checkpoint", str(ckpt), str(ckpt), "--data", str(data), "--out", str(tmp_path / "fc3.zarr"),
                "--inits", "2000-01-10T00", "--lead-hours", "12", "--members", "2", "--steps", "2", "--no-progress"])
    assert len(xr.open_zarr(fc3, consolidated=False).attrs["model_sha256"].split(",")) == 2
    # as a console script runs it (sys.exit(main())): success exits 0, bad input exits 2 with a one-line error
    import subprocess
    import sys

    def console(*argv):
        code = "import sys; from apps.weather.cli import main; sys.argv[0] = 'dualsci-weather'; sys.exit(main())"
        return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=600)

    ok = console("evaluate", "--forecast", out, "--truth", str(data), "--out", str(tmp_path / "ev_cli"), "--no-report")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "ev_cli" / "scores.json").exists()
    bad = console("evaluate", "--forecast", str(tmp_path / "missing.zarr"), "--truth", str(data), "--out", str(tmp_path / "ev_bad"))
    assert bad.returncode != 0 and "missing.zarr" in bad.stderr and not (tmp_path / "ev_bad").exists()
    # checkpoint, forecast and output problems are one line too (exit 2), nothing written
    truncated = tmp_path / "trunc.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:4000])
    fc_args = ["--data", str(data), "--inits", "2000-01-10T00", "--lead-hours", "12", "--members", "2", "--steps", "2", "--no-progress"]
    (tmp_path / "bad.json").write_text("{")
    raw_bytes = (tmp_path / "fc.nc").read_bytes()
    for argv, problem in (
        (["forecast", "--checkpoint", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "f1.zarr"), *fc_args], "none.ckpt: checkpoint not found"),
        (["forecast", "--checkpoint", str(truncated), "--out", str(tmp_path / "f2.zarr"), *fc_args], "trunc.ckpt.*cannot read the checkpoint"),
        (["forecast", "--checkpoint", str(ckpt), str(truncated), "--out", str(tmp_path / "f4.zarr"), *fc_args],
         "trunc.ckpt.*cannot read the checkpoint"),
        (["forecast", "--checkpoint", str(ckpt), "--out", out, *fc_args], "output already exists"),
        (["evaluate", "--forecast", str(data), "--truth", str(data), "--out", str(tmp_path / "ev3")], "syn.zarr.*not a forecast store"),
        # a calibration file that does not load (was a CalibrationError traceback, exit 1), an existing output (the
        # raw forecast itself was overwritten)
        (["calibrate", "--forecast", out, "--calibration", str(tmp_path / "bad.json"), "--out", str(tmp_path / "c1.zarr")],
         "bad.json: cannot read calibration JSON"),
        (["calibrate", "--forecast", out, "--calibration", str(cpath), "--out", out], "fc.nc: output already exists"),
    ):
        res = console(*argv)
        assert res.returncode == 2 and re.search(problem, res.stderr) and "Traceback" not in res.stderr, (argv, res.stderr[-800:])
    assert not any((tmp_path / n).exists() for n in ("f1.zarr", "f2.zarr", "f4.zarr", "f1.zarr.partial", "f2.zarr.partial",
                                                  "f4.zarr.partial", "ev3", "c1.zarr"))
    assert (tmp_path / "fc.nc").read_bytes() == raw_bytes
    # fit on a NaN state: the statistics are computed in prepare_data too, so no empty version folder either
    nan = xr.open_zarr(data, consolidated=False).load()
    nan["temperature"][5, 0, 2, 3] = float("nan")
    nan.to_netcdf(tmp_path / "nan.nc")
    with pytest.raises(ValueError, match=r"nan\.nc \[temperature/500\]: 1 NaN"):
        main(["fit", "--config", str(CONFIG_DIR / "demo.yaml"), "--data.init_args.path", str(tmp_path / "nan.nc"),
              "--data.init_args.train_period", "2000-01-01:2000-01-08", "--trainer.max_steps", "2", "--trainer.callbacks", "[]",
              "--trainer.default_root_dir", str(tmp_path / "fitnan")])
    assert not (tmp_path / "fitnan").exists()
    # fit on a missing file: the data is opened in prepare_data, before the logger makes lightning_logs/version_0
    res = console("fit", "--config", str(CONFIG_DIR / "t2m_uk.yaml"), "--data.init_args.path", str(tmp_path / "none.nc"),
                  "--trainer.max_steps", "2", "--trainer.default_root_dir", str(tmp_path / "fitbad"))
    assert res.returncode == 2 and "none.nc" in res.stderr and not (tmp_path / "fitbad").exists(), res.stderr[-800:]


def test_benchmark_scripts_end_bad_input_with_one_line(tmp_path, load_benchmark):
    """The weather benchmarks run through `script_main`: a missing checkpoint or data file is one `error:` line
    naming it (nfe, memory and precision printed tracebacks; memory's came from its child process)."""
    from apps.weather.cli import script_main

    ckpt, data, out = str(tmp_path / "nope.ckpt"), str(tmp_path / "nope.nc"), str(tmp_path / "o.json")
    for name, argv, named in (
        ("weather_nfe", ["--checkpoint", ckpt, "--data", data, "--out", out], "nope.ckpt: checkpoint not found"),
        ("weather_memory", ["--checkpoint", ckpt, "--data", data, "--init", "2000-01-01T00", "--out", out], "nope.ckpt: checkpoint not found"),
        ("weather_precision", ["--data", data, "--out", out], "nope.nc: no such file"),
        ("weather_t2m_baselines", ["--data", data, "--train", "2000-01-01:2000-01-05", "--test", "2000-01-07:2000-01-09", "--out", out],
         "nope.nc: no such file"),
    ):
        mod = load_benchmark(name)
        with pytest.raises(SystemExit) as exit_info:
            script_main(lambda: mod.main(argv))  # noqa: B023 - called at once
        msg = str(exit_info.value.code)
        assert msg.startswith("error: ") and named in msg and "\n" not in msg, (name, msg)
    assert not (tmp_path / "o.json").exists()


def test_bad_arguments_are_usage_errors(tmp_path, capsys):
    """Arguments checked before anything runs (exit 2, one line): --members 0 wrote an empty store (exit 0), --steps 0
    left OUT.partial behind after a traceback, --lead-hours 0, --inits garbage, an unknown region, a malformed
    LAT,LON or period and synth --days 0 were tracebacks."""
    from apps.weather.sampling import ForecastOptions, forecast

    fc = ["forecast", "--checkpoint", str(tmp_path / "m.ckpt"), "--data", str(tmp_path / "d.zarr"), "--out", str(tmp_path / "o.zarr")]
    ok = ["--inits", "2000-01-10T00", "--lead-hours", "12"]
    for argv, problem in (
        (fc + ok + ["--members", "0"], "--members: must be >= 1, got 0"),
        (fc + ok + ["--steps", "0"], "--steps: must be >= 1, got 0"),
        (fc + ["--inits", "2000-01-10T00", "--lead-hours", "0"], "--lead-hours: must be >= 1, got 0"),
        (fc + ["--inits", "garbage", "--lead-hours", "12"], "--inits 'garbage'"),
        (["evaluate", "--forecast", "f.zarr", "--truth", "t.zarr", "--out", str(tmp_path / "ev"), "--regions", "global,mars"],
         "--regions: unknown ['mars']"),
        (["evaluate", "--forecast", "f.zarr", "--truth", "t.zarr", "--out", str(tmp_path / "ev"), "--track-start", "abc"], "'abc' is not LAT,LON"),
        (["track", "--forecast", "f.zarr", "--start", "95,3", "--out", str(tmp_path / "t.json")], "latitude 95 is outside"),
        (["evaluate", "--forecast", "f.zarr", "--truth", "t.zarr", "--out", str(tmp_path / "ev"), "--climatology-period", "x"], "'START:END'"),
        (["evaluate", "--forecast", "f.zarr", "--truth", "t.zarr", "--out", str(tmp_path / "ev"), "--member-curve", "1,0"], "sizes must be >= 1"),
        (["evaluate", "--forecast", "f.zarr", "--truth", "t.zarr", "--out", str(tmp_path / "ev"), "--member-curve", "all"], "expected 'auto'"),
        (["evaluate", "--forecast", "f.zarr", "--truth", "t.zarr", "--out", str(tmp_path / "ev"), "--threshold", "t2m:280"], "expected CHANNEL=U"),
        (["evaluate", "--forecast", "f.zarr", "--truth", "t.zarr", "--out", str(tmp_path / "ev"), "--threshold", "t2m=nan"], "expected CHANNEL=U"),
        (["evaluate", "--forecast", "f.zarr", "--truth", "t.zarr", "--out", str(tmp_path / "ev"), "--plume-at", "95,0"], "latitude 95 is outside"),
        (["encode", "--checkpoint", "a.ckpt", "--data", "d.zarr", "--out", str(tmp_path / "l.zarr"), "--period", "x"], "'START:END'"),
        (["synth", "--out", str(tmp_path / "s.zarr"), "--days", "0"], "--days: must be >= 1, got 0"),  # was an IndexError
        (["synth", "--out", str(tmp_path / "s.zarr"), "--start", "soon"], "--start 'soon' is not an ISO date"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and problem in capsys.readouterr().err, argv
    with pytest.raises(ValueError, match="members=2 and steps=0 must be >= 1"):  # the API checks too, before writing
        forecast(tmp_path / "m.ckpt", tmp_path / "d.zarr", tmp_path / "o.zarr", ForecastOptions(["2000-01-10T00"], 12, members=2, steps=0))
    assert list(tmp_path.iterdir()) == []
