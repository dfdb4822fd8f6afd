"""``dualsci-weather``: LightningCLI ``fit | validate | test | predict`` plus the app verbs.

Verbs: ``synth`` (write the embedded synthetic WB2-schema zarr), ``encode`` (autoencoder -> latent
zarr), ``forecast`` (ensemble rollouts to zarr/NetCDF), ``evaluate`` (WB2 scores, CSV/JSON, report),
``track`` (cyclone tracks, track errors, strike probability), ``calibrate`` (spread-calibrated copy of a
forecast store, ``apps.weather.calibration``), ``decode`` (a latent-only store written decoded,
``apps.weather.latent_store``), ``check`` (a forecast store against the schema evaluate reads, ``--fix``;
``apps.weather.forecast_schema``), ``compare`` (one evaluated forecast against another, bootstrap intervals,
``apps.weather.compare``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

from dualsci.argtypes import positive_int

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _lat_lon(text: str) -> tuple[float, float]:
    """argparse type: ``LAT,LON`` in degrees."""
    try:
        lat, lon = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LAT,LON (e.g. 15,30)") from None
    if not -90.0 <= lat <= 90.0:
        raise argparse.ArgumentTypeError(f"latitude {lat:g} is outside [-90, 90]")
    return lat, lon


def period_arg(text: str) -> tuple[str | None, str | None]:
    """argparse type: an inclusive ``START:END`` period (``apps.weather.data.split_period``)."""
    from apps.weather.data import split_period

    try:
        return split_period(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def synth_main(argv: list[str]) -> int:
    """Write the embedded synthetic WeatherBench2-schema zarr."""
    from apps.weather.synthetic import main

    return main(argv)


def forecast_main(argv: list[str]) -> str | dict:
    """Ensemble forecast from a checkpoint (or several: a multi-model ensemble): resumable, CF/WB2-schema zarr or NetCDF."""
    from apps.weather.sampling import ForecastOptions, forecast, parse_inits

    p = argparse.ArgumentParser(prog="dualsci-weather forecast", description=forecast_main.__doc__)
    p.add_argument("--checkpoint", required=True, nargs="+",
                   help="forecaster checkpoint; several = a multi-model ensemble (e.g. one per training seed), "
                        "the members split among them in contiguous runs")
    p.add_argument("--data", required=True, help="dataset with the initial conditions (and statics)")
    p.add_argument("--out", required=True, help="output .zarr folder or .nc file")
    p.add_argument("--inits", required=True, help="list 'T1,T2' or range 'START:END:STEP_HOURS' (any hour)")
    p.add_argument("--lead-hours", type=positive_int, required=True)
    p.add_argument("--members", type=positive_int, default=10)
    p.add_argument("--sampler", default="heun", choices=["heun", "dpmpp_2m", "dpmpp_3m", "euler", "euler_ancestral"])
    p.add_argument("--steps", type=positive_int, default=10, help="Karras levels per block (Heun: 2N-1 network calls)")
    p.add_argument("--sigma-max", type=float, default=None, help="top level of the Karras sampling grid (default: the objective's)")
    p.add_argument("--rho", type=float, default=None, help="Karras rho of the sampling grid (default: the objective's)")
    p.add_argument("--churn", type=float, default=0.0, help="EDM S_churn")
    p.add_argument("--s-tmin", type=float, default=0.0, help="churn only at levels sigma >= S_tmin (EDM)")
    p.add_argument("--s-tmax", type=float, default=None, help="churn only at levels sigma <= S_tmax (EDM; default no bound)")
    p.add_argument("--s-noise", type=float, default=1.0, help="scale of the churn noise (EDM S_noise; > 1 widens the draws)")
    p.add_argument("--ic-noise", type=float, default=0.0, help="std of IC perturbation in normalised units")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-members", type=positive_int, default=10)
    p.add_argument("--autoencoder", default=None, help="decode a latent forecaster's blocks with this checkpoint")
    p.add_argument("--store", choices=["decoded", "latent"], default="decoded",
                   help="with --autoencoder: write decoded fields, or the latents only (a fraction of the bytes; "
                        "evaluate decodes them lazily, `decode` writes the decoded store)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--calibration", default=None, help="spread calibration JSON: also write a calibrated copy")
    p.add_argument("--calibrated-out", default=None, help="where the calibrated copy goes (default OUT with '_calibrated')")
    p.add_argument("--dry-run", action="store_true",
                   help="check the inputs, print the work, the output size and a time estimate from one timed block; write nothing")
    a = p.parse_args(argv)
    if a.calibrated_out and not a.calibration:
        p.error("--calibrated-out needs --calibration")
    if a.store == "latent" and not a.autoencoder:
        p.error("--store latent needs the --autoencoder that decodes the latents")
    if a.store == "latent" and a.calibration:
        p.error("--calibration scales decoded members: use --store decoded, or `decode` the latent store and `calibrate` it")
    if a.store == "latent" and a.out.endswith((".nc", ".nc4")):
        p.error("--store latent writes a zarr folder (decode it to NetCDF with `dualsci-weather decode`)")
    calib = None
    if a.calibration:
        from apps.weather.calibration import SpreadCalibration

        calib = SpreadCalibration.load(a.calibration)  # a bad file fails before the (long) rollout
        raw = Path(a.out)
        dst = a.calibrated_out or str(raw.with_name(raw.stem + "_calibrated" + raw.suffix))
        if Path(dst).exists():  # ... and so does an existing calibrated output
            raise FileExistsError(f"{dst}: output already exists (refusing to overwrite)")
    try:
        inits = parse_inits(a.inits)
    except ValueError as exc:
        p.error(f"--inits {a.inits!r}: {exc}")
    if not inits:
        p.error(f"--inits {a.inits!r} names no time")
    fmt = "netcdf" if a.out.endswith((".nc", ".nc4")) else "zarr"
    try:  # options are checked at construction (churn settings among them): a bad one is a usage error
        opts = ForecastOptions(
            inits=[str(t) for t in inits], lead_hours=a.lead_hours, members=a.members, sampler=a.sampler,
            steps=a.steps, churn=a.churn, s_tmin=a.s_tmin, s_tmax=a.s_tmax, s_noise=a.s_noise, ic_noise=a.ic_noise,
            seed=a.seed, batch_members=a.batch_members, format=fmt, sigma_max=a.sigma_max, rho=a.rho, store=a.store,
        )
    except ValueError as exc:
        p.error(str(exc))
    if a.dry_run:
        from apps.weather.plan import describe_plan, plan_forecast

        plan = plan_forecast(a.checkpoint, a.data, opts, autoencoder=a.autoencoder)
        print(describe_plan(plan, a.out))
        if Path(a.out).exists():
            print(f"note: {a.out} exists; the forecast would refuse to overwrite it")
        return plan
    out = forecast(a.checkpoint, a.data, a.out, opts, progress=not a.no_progress, autoencoder=a.autoencoder)
    print(f"wrote {out}")
    if calib is not None:
        from apps.weather.calibration import calibrate_store

        print(f"wrote {calibrate_store(out, dst, calib)}")
    return str(out)


def calibrate_main(argv: list[str]) -> str:
    """Write a spread-calibrated copy of a finished forecast store (apps.weather.calibration)."""
    from apps.weather.calibration import calibrate_store

    p = argparse.ArgumentParser(prog="dualsci-weather calibrate", description=calibrate_main.__doc__)
    p.add_argument("--forecast", required=True)
    p.add_argument("--calibration", required=True, help="spread calibration JSON")
    p.add_argument("--out", required=True, help="output .zarr folder or .nc file (must not exist)")
    a = p.parse_args(argv)
    out = calibrate_store(a.forecast, a.out, a.calibration)
    print(f"wrote {out}")
    return str(out)


def _member_curve(text: str) -> str | list[int]:
    """``auto`` or comma-separated ensemble sizes ≥ 1 (argparse type of ``--member-curve``)."""
    if text == "auto":
        return text
    try:
        sizes = [int(k) for k in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or sizes like 1,2,5,10, got {text!r}") from None
    if any(k < 1 for k in sizes):
        raise argparse.ArgumentTypeError(f"ensemble sizes must be >= 1, got {text!r}")
    return sizes


def _threshold(text: str) -> tuple[str, list[float]]:
    """``CHANNEL=U[,U...]`` (argparse type of ``--threshold``)."""
    channel, sep, values = text.partition("=")
    try:
        us = [float(u) for u in values.split(",")]
    except ValueError:
        us = []
    if not (sep and channel and us) or not all(math.isfinite(u) for u in us):
        raise argparse.ArgumentTypeError(f"expected CHANNEL=U[,U...] with finite numbers, got {text!r}")
    return channel, us


def _lat_band(text: str) -> tuple[float, float]:
    """``LO:HI`` absolute latitudes, 0 <= LO <= HI <= 90 (argparse type of ``--spectra``)."""
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO:HI absolute latitudes like 30:60, got {text!r}") from None
    if not 0.0 <= lo <= hi <= 90.0:
        raise argparse.ArgumentTypeError(f"the band {text!r} must satisfy 0 <= LO <= HI <= 90")
    return lo, hi


def _merge_thresholds(pairs: list[tuple[str, list[float]]]) -> dict[str, list[float]]:
    merged: dict[str, list[float]] = {}
    for channel, us in pairs:
        merged.setdefault(channel, []).extend(us)
    return merged


def evaluate_main(argv: list[str]) -> dict:
    """Score a forecast against truth (WB2 definitions): scores.json, scores.csv, report.html."""
    from apps.weather.evaluate import evaluate

    p = argparse.ArgumentParser(prog="dualsci-weather evaluate", description=evaluate_main.__doc__)
    p.add_argument("--forecast", required=True)
    p.add_argument("--truth", required=True)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--regions", default="global", help="comma-separated WB2 region names")
    p.add_argument("--climatology-period", type=period_arg, default=None, help="START:END of truth for the climatology")
    p.add_argument("--climatology", default=None, help="WB2 climatology file (dayofyear, hour) for ACC and the baseline")
    p.add_argument("--calibration", default=None, help="spread calibration JSON (apps.weather.calibration) applied to the members")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--track-start", type=_lat_lon, default=None, help="LAT,LON: also track a cyclone in the first init (report map)")
    p.add_argument("--member-curve", type=_member_curve, default=None, metavar="auto|K,K,...",
                   help="also score the first K members for each size K (skill against ensemble size): "
                        "members_curve.csv and a report figure; auto = 1, 2, 5, 10, 20, 50, ... and all members")
    p.add_argument("--plume-at", type=_lat_lon, default=None, metavar="LAT,LON",
                   help="grid point of the report's ensemble plume (nearest cell; default the grid's centre)")
    p.add_argument("--threshold", type=_threshold, action="append", default=[], metavar="CHANNEL=U[,U...]",
                   help="Brier score of CHANNEL > U (its units, e.g. 2m_temperature=273.15; level channels as "
                        "temperature/850); repeat for more channels: brier.csv and an exceedance map")
    p.add_argument("--autoencoder", default=None,
                   help="a latent-only forecast store (forecast --store latent) is decoded lazily with this checkpoint "
                        "(default: the one the store records; its sha256 must match)")
    p.add_argument("--spectra", type=_lat_band, nargs="?", const=(30.0, 60.0), default=None, metavar="LO:HI",
                   help="zonal energy spectra (WB2 definition) of truth, ensemble mean and members, averaged over "
                        "|latitude| LO..HI (default 30:60): spectra.csv and a report figure; needs a global grid")
    a = p.parse_args(argv)
    from apps.weather.metrics import REGIONS

    unknown = [r for r in a.regions.split(",") if r not in REGIONS]
    if unknown:
        p.error(f"--regions: unknown {unknown}; allowed: {sorted(REGIONS)}")
    period = a.climatology_period
    start = a.track_start
    res = evaluate(
        a.forecast, a.truth, a.out, regions=a.regions.split(","), climatology_period=period, report=not a.no_report,
        track_start=start, climatology=a.climatology, calibration=a.calibration, member_curve=a.member_curve,
        thresholds=_merge_thresholds(a.threshold), plume_at=a.plume_at, spectra_band=a.spectra, autoencoder=a.autoencoder,
    )
    print(f"wrote {a.out}/scores.json ({len(res['scores'])} rows)")
    return res


def encode_main(argv: list[str]) -> str:
    """Encode a dataset with a trained autoencoder into a latent zarr (forecaster input)."""
    from apps.weather.autoencoder import encode_dataset

    p = argparse.ArgumentParser(prog="dualsci-weather encode", description=encode_main.__doc__)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--period", type=period_arg, default=None, help="START:END")
    a = p.parse_args(argv)
    period = a.period
    out = encode_dataset(a.checkpoint, a.data, a.out, period)
    print(f"wrote {out}")
    return str(out)


def decode_main(argv: list[str]) -> str:
    """Write the decoded forecast of a latent-only store (forecast --store latent) as a zarr folder or NetCDF file."""
    from apps.weather.latent_store import decode_store

    p = argparse.ArgumentParser(prog="dualsci-weather decode", description=decode_main.__doc__)
    p.add_argument("--forecast", required=True, help="the latent-only store")
    p.add_argument("--out", required=True, help="output .zarr folder or .nc file (must not exist)")
    p.add_argument("--autoencoder", default=None, help="its autoencoder (default: the one the store records)")
    a = p.parse_args(argv)
    out = decode_store(a.forecast, a.out, a.autoencoder)
    print(f"wrote {out}")
    return str(out)


def check_main(argv: list[str]) -> int:
    """Check a forecast store against the WB2 forecast schema evaluate reads (renamings noted, problems listed);
    --fix OUT writes it normalised with CF metadata. Exit status 1 when it cannot be scored as it is."""
    from apps.weather.forecast_schema import check_forecast, fix_forecast

    p = argparse.ArgumentParser(prog="dualsci-weather check", description=check_main.__doc__)
    p.add_argument("--forecast", required=True, help="zarr folder or NetCDF file")
    p.add_argument("--no-scan", action="store_true", help="skip reading the fields (the NaN count)")
    p.add_argument("--json", default=None, help="also write the report to this JSON file")
    p.add_argument("--fix", default=None, metavar="OUT", help="write the store normalised to OUT (.zarr or .nc)")
    a = p.parse_args(argv)
    report = check_forecast(a.forecast, scan=not a.no_scan)
    s = report["summary"]
    print(f"{report['source']}: {'ok' if report['ok'] else 'NOT scorable as it is'}")
    if s:
        print(f"  {len(s['variables'])} variable(s) {s['variables']}; {s['members']} member(s) (dim {s['ensemble_dim']}); "
              f"{s['inits']} init(s) from {s['first_init']}; leads {s['leads_hours']} h; grid {s['grid']}; levels {s['levels']}")
    for kind in ("notes", "warnings", "errors"):
        for line in report[kind]:
            print(f"  {kind[:-1]}: {line}")
    if a.json:
        from dualsci.io import write_json_atomic

        write_json_atomic(a.json, report)
    if a.fix and report["ok"]:
        print(f"wrote {fix_forecast(a.forecast, a.fix)}")
    return 0 if report["ok"] else 1


def compare_main(argv: list[str]) -> dict:
    """Skill of one evaluated forecast against another on the cases both scored, with paired bootstrap intervals
    over init days: comparison.json, comparison.csv, scorecard.html."""
    from apps.weather.compare import compare

    p = argparse.ArgumentParser(prog="dualsci-weather compare", description=compare_main.__doc__)
    p.add_argument("--forecast", required=True, help="evaluate output folder of the forecast")
    p.add_argument("--baseline", required=True, help="evaluate output folder of the baseline forecast")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--boot", type=positive_int, default=1000, help="bootstrap draws (>= 10)")
    p.add_argument("--level", type=float, default=0.95, help="interval coverage")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.boot < 10 or not 0.5 < a.level < 1.0:
        p.error("--boot must be >= 10 and --level in (0.5, 1)")
    res = compare(a.forecast, a.baseline, a.out, n_boot=a.boot, level=a.level, seed=a.seed)
    better = sum(r["significant"] and r["rmse_skill"] > 0 for r in res["rows"])
    worse = sum(r["significant"] and r["rmse_skill"] < 0 for r in res["rows"])
    print(f"wrote {a.out}/scorecard.html: {len(res['rows'])} case(s), {better} significantly better, {worse} significantly worse")
    return res


def track_main(argv: list[str]) -> dict:
    """Track a cyclone (MSLP minimum) per member and on the ensemble mean; errors and strike probability."""
    from apps.weather.cyclone import track_forecast
    from dualsci.io import write_json_atomic

    p = argparse.ArgumentParser(prog="dualsci-weather track", description=track_main.__doc__)
    p.add_argument("--forecast", required=True)
    p.add_argument("--start", type=_lat_lon, required=True, help="LAT,LON of the cyclone near the first lead")
    p.add_argument("--init-index", type=int, default=0)
    p.add_argument("--truth", default=None)
    p.add_argument("--radius-km", type=float, default=300.0)
    p.add_argument("--out", required=True, help="output .json (the map goes next to it as .png)")
    a = p.parse_args(argv)
    lat, lon = a.start
    res = track_forecast(a.forecast, (lat, lon), a.init_index, a.truth, a.radius_km)
    write_json_atomic(a.out, res)
    from apps.weather.track_plot import draw_tracks

    png = draw_tracks(res, Path(a.out).with_suffix(".png"))
    print(f"wrote {a.out} and {png}")
    return res


def script_main(run) -> None:
    """Run a benchmark script's ``main``: bad input (a weather data or calibration error, an existing output)
    ends with one ``error:`` line naming the file and the problem (exit 1), not a traceback."""
    import sys

    from apps.weather.calibration import CalibrationError
    from apps.weather.data import WeatherDataError

    try:
        run()
    except (WeatherDataError, CalibrationError, FileExistsError) as exc:
        sys.exit(f"error: {exc}")


VERBS = {"synth": synth_main, "encode": encode_main, "forecast": forecast_main, "evaluate": evaluate_main, "track": track_main,
         "calibrate": calibrate_main, "decode": decode_main, "check": check_main, "compare": compare_main}


def main(args: Sequence[str] | None = None):
    """Entry point of ``dualsci-weather``."""
    from apps.weather.calibration import CalibrationError
    from apps.weather.data import WeatherDataError
    from apps.weather.datamodule import WeatherDataModule
    from dualsci.training import DiffusionModule, build_cli, console_main

    # bad input (the message names file, variable and problem), a calibration file that does not apply, or an
    # output that exists
    return console_main(lambda: build_cli(DiffusionModule, WeatherDataModule, extra_subcommands=VERBS, args=args,
                                          prog="dualsci-weather"), args, (WeatherDataError, CalibrationError, FileExistsError))


if __name__ == "__main__":
    main()
