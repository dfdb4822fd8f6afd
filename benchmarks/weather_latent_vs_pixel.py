"""Latent vs pixel forecasting at an equal training wall-time budget (WB2 scores, same inits and sampler).

``python benchmarks/weather_latent_vs_pixel.py --minutes M --out X.json [--data SYN.zarr] [--quick]``

On the embedded synthetic WB2-schema dataset (written with ``dualsci-weather synth`` unless ``--data``
names one; ``--n-lat/--n-lon/--days`` size it), through the app's CLI like ``apps.weather.demo``:

* **pixel path**: ``dualsci-weather fit --config demo.yaml`` on the pixel zarr for ``M`` minutes of
  training (Lightning ``max_time``);
* **latent path**: ``fit --config autoencoder.yaml`` for ``--ae-fraction`` × M minutes (default 0.25,
  fixed before any run), ``encode`` the whole file, then ``fit --config demo.yaml`` on the latent zarr for
  the remaining (1 − fraction) × M minutes. Encoding is not training and is timed separately
  (``encode_seconds``).

Both forecasters are the demo's transformer (same width and depths) on the **same token grid**: the pixel
model patches the H×W grid by ``--patch`` (4), the latent model patches the (H/f)×(W/f) latent grid by
``patch / f`` (f = the autoencoder's factor, 4 → patch 1). Constant learning rate (the demo's), no
validation during training (the budget goes to training steps), the training period ``--train``.

Both paths then ``forecast`` the same inits (00/12 UTC in ``--test``, every lead with truth in the file;
held out after the training period) with the same members, sampler, levels and seed (the latent one with
``--autoencoder``, decoded to pixel space), and ``evaluate`` scores both against the pixel truth
(climatology fitted on the training period). Reported per channel and lead (global region): RMSE, CRPS,
SSR, spread, MAE for both paths; persistence and climatology RMSE; the latent/pixel RMSE and CRPS ratios;
the autoencoder's reconstruction RMSE per channel (decode(encode(x)) vs x on every hour from the first
init to the last verified time, area-weighted, the same time mean as WB2's RMSE) beside the field's std;
training steps reached, training/encode/forecast/evaluate wall seconds and load averages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from apps.weather.cli import CONFIG_DIR, period_arg  # noqa: E402
from apps.weather.cli import main as cli  # noqa: E402
from apps.weather.data import WeatherDataError, channel_levels, channel_names, load_block, match_grid, open_weather, period_end_hour, verifiable_inits  # noqa: E402
from apps.weather.dataset import NormStats, fill_masked, time_blocks  # noqa: E402
from apps.weather.metrics import cell_area_weights  # noqa: E402
from dualsci.argtypes import nonnegative_int, positive_int  # noqa: E402
from dualsci.io import write_json_atomic  # noqa: E402
from dualsci.training import max_time_arg  # noqa: E402

SCORE_KEYS = ("rmse", "crps", "ssr", "spread", "mae", "bias", "acc")
BASELINE_KEYS = ("persistence_rmse", "climatology_rmse")


def _fit(config: str, data: Path, work: Path, minutes: float, max_steps: int, train: str, seed: int, overrides: list[str]) -> dict:
    """``dualsci-weather fit`` for ``minutes`` of training (or ``max_steps``); the final weights saved to ``work/model.ckpt``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fitted = cli([
        "fit", "--config", str(CONFIG_DIR / config), "--seed_everything", str(seed),
        "--data.init_args.path", str(data), "--data.init_args.train_period", train, "--data.init_args.val_period", "null",
        "--trainer.max_steps", str(max_steps), "--trainer.max_time", max_time_arg(minutes * 60), "--trainer.limit_val_batches", "0",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(work), "--trainer.callbacks.init_args.dirpath", str(work / "checkpoints"),
    ] + overrides)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    ckpt = work / "model.ckpt"
    fitted.trainer.save_checkpoint(ckpt, weights_only=False)  # the final weights, whatever the checkpoint callback kept
    return {"checkpoint": ckpt, "budget_minutes": minutes, "fit_seconds": seconds, "fit_cpu_seconds": cpu,
            "steps": int(fitted.trainer.global_step)}


def _forecast_and_score(ckpt: Path, data: Path, truth: Path, work: Path, inits: list[str], a, train: str,
                        autoencoder: Path | None = None) -> dict:
    t0 = time.perf_counter()
    fc = cli(["forecast", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(work / "forecast.zarr"),
              "--inits", ",".join(inits), "--lead-hours", str(a.lead_hours), "--members", str(a.members),
              "--sampler", a.sampler, "--steps", str(a.sampler_steps), "--seed", str(a.seed),
              "--batch-members", str(a.members), "--no-progress"]
             + (["--autoencoder", str(autoencoder)] if autoencoder is not None else []))
    forecast_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = cli(["evaluate", "--forecast", fc, "--truth", str(truth), "--out", str(work / "eval"), "--regions", "global",
               "--climatology-period", train, "--no-report"])
    rows = [r for r in res["scores"] if r["region"] == "global"]
    return {"forecast_seconds": forecast_seconds, "evaluate_seconds": time.perf_counter() - t0, "inits": res["inits"],
            "skipped_pairs": res["skipped_pairs"], "climatology": res["climatology"], "rows": rows}


def _table(rows: list[dict], keys: tuple[str, ...]) -> dict:
    """``{channel: {lead: {key: value}}}`` from ``evaluate``'s rows."""
    out: dict = {}
    for r in rows:
        out.setdefault(r["variable"], {})[str(r["lead_hours"])] = {k: float(r[k]) for k in keys}
    return out


@torch.no_grad()
def reconstruction_rmse(autoencoder: Path, data: Path, period: tuple[str, str]) -> dict:
    """Per channel: RMSE of decode(encode(x)) against x over ``period`` (area-weighted mean per time, then the
    time mean, then the root: WB2's RMSE), and the field's std about its own mean there (same weights)."""
    from apps.weather.autoencoder import load_autoencoder

    net, meta = load_autoencoder(autoencoder)
    stats = NormStats.from_dict(meta["stats"])
    channels = stats.channels
    ds = open_weather(data, variables=sorted({c.partition("/")[0] for c in channels}), levels=channel_levels(channels), period=period)
    ds = match_grid(ds, meta["lat"], meta["lon"], str(data))
    w = cell_area_weights(np.asarray(meta["lat"]))[:, None]  # (H, 1), mean 1
    statics = torch.from_numpy(stats.statics(ds))[None]
    area = lambda v: np.nanmean(v * w, axis=(-2, -1))  # noqa: E731 - (T, C) area means (masked cells left out)
    sq_err, s1, s2, n = 0.0, 0.0, 0.0, 0
    for sl in time_blocks(ds.sizes["time"], 168):
        x = load_block(ds, channels, sl).astype(np.float64)  # (T, C, H, W) physical
        x_n, _ = fill_masked(stats.normalise(x))
        z = torch.from_numpy(x_n)
        rec = stats.denormalise(net.decode(net.encode(z, statics.expand(z.shape[0], -1, -1, -1))).numpy()).astype(np.float64)
        sq_err = sq_err + area((rec - x) ** 2).sum(0)
        s1, s2, n = s1 + area(x).sum(0), s2 + area(x**2).sum(0), n + x.shape[0]
    rmse = np.sqrt(sq_err / n)
    std = np.sqrt(np.maximum(s2 / n - (s1 / n) ** 2, 0.0))
    return {"reconstruction_rmse": dict(zip(channels, map(float, rmse))), "field_std": dict(zip(channels, map(float, std))),
            "reconstruction_rmse_over_std": dict(zip(channels, map(float, rmse / std))), "n_times": n,
            "period": [str(ds.time.values[0])[:13], str(ds.time.values[-1])[:13]]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=None, help="synthetic WB2-schema zarr (default: written with `dualsci-weather synth`)")
    p.add_argument("--n-lat", type=positive_int, default=16)
    p.add_argument("--n-lon", type=positive_int, default=32)
    p.add_argument("--days", type=positive_int, default=731)
    p.add_argument("--train", type=period_arg, default="2000-01-01:2001-09-30", help="training period START:END (inclusive)")
    p.add_argument("--test", type=period_arg, default="2001-11-01:2001-11-30", help="init period START:END (after --train)")
    p.add_argument("--minutes", type=float, default=8.0, help="training wall-time budget of each path")
    p.add_argument("--ae-fraction", type=float, default=0.25, help="share of the latent path's budget for the autoencoder")
    p.add_argument("--max-steps", type=positive_int, default=10**7, help="step cap of every fit (the budget normally stops it)")
    p.add_argument("--patch", type=positive_int, default=4, help="pixel patch; the latent model uses patch / the AE factor")
    p.add_argument("--dim", type=positive_int, default=64)
    p.add_argument("--num-heads", type=positive_int, default=4)
    p.add_argument("--depth-dual", type=positive_int, default=2)
    p.add_argument("--depth-single", type=nonnegative_int, default=1)
    p.add_argument("--ae-width", type=positive_int, default=32)
    p.add_argument("--ae-latent", type=positive_int, default=8, help="latent channels")
    p.add_argument("--ae-down", type=positive_int, default=2, help="downsampling levels (factor 2**n per axis)")
    p.add_argument("--lead-hours", type=positive_int, default=48)
    p.add_argument("--members", type=positive_int, default=10)
    p.add_argument("--sampler", default="heun")
    p.add_argument("--sampler-steps", type=positive_int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--workdir", default=None, help="keep checkpoints and forecasts here (default: a temporary folder)")
    p.add_argument("--quick", action="store_true", help="tiny run for the test (8x16 grid, 12 days, few steps)")
    a = p.parse_args(argv)
    if a.quick:
        a.n_lat, a.n_lon, a.days, a.train, a.test = 8, 16, 12, ("2000-01-01", "2000-01-08"), ("2000-01-09", "2000-01-10")
        a.dim, a.num_heads, a.depth_dual, a.depth_single, a.ae_width = 16, 2, 1, 0, 8
        a.members, a.sampler_steps, a.minutes = 3, 2, min(a.minutes, 0.5)
        a.max_steps = min(a.max_steps, 100)
    if not 0.0 < a.ae_fraction < 1.0 or not a.minutes > 0:
        p.error("--ae-fraction must be in (0, 1) and --minutes > 0")
    factor = 2**a.ae_down
    if a.patch % factor:
        p.error(f"--patch {a.patch} must be a multiple of the autoencoder's factor {factor} (same token grid for both paths)")
    train, test = a.train, a.test
    if None in train or None in test:
        p.error("--train and --test need both START and END")
    if np.datetime64(test[0], "h") <= period_end_hour(train[1]):
        p.error(f"--test {test[0]}:{test[1]} must start after the training period {train[0]}:{train[1]}")
    if a.threads:
        torch.set_num_threads(a.threads)
    load_start = os.getloadavg()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.workdir) if a.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = Path(a.data) if a.data else work / "synthetic.zarr"
        t0 = time.perf_counter()
        if not data.exists():
            cli(["synth", "--out", str(data), "--n-lat", str(a.n_lat), "--n-lon", str(a.n_lon), "--days", str(a.days),
                 "--seed", str(a.seed)])
        synth_seconds = time.perf_counter() - t0
        probe = open_weather(data)
        h, w = probe.sizes["latitude"], probe.sizes["longitude"]
        n_channels = len(channel_names(probe))
        if h % a.patch or w % a.patch:
            raise WeatherDataError(str(data), f"grid {h}x{w} is not divisible by --patch {a.patch}", "latitude/longitude")
        leads = list(range(6, a.lead_hours + 1, 6))
        inits = [str(t) for t in verifiable_inits(probe.time.values, np.datetime64(test[0], "h"), period_end_hour(test[1]), leads)]
        if not inits:
            raise WeatherDataError(str(data), f"no 00/12 UTC init in {test[0]}:{test[1]} with truth at +{a.lead_hours} h", "time")
        net = ["--model.init_args.net.init_args.dim", str(a.dim), "--model.init_args.net.init_args.num_heads", str(a.num_heads),
               "--model.init_args.net.init_args.depth_dual", str(a.depth_dual),
               "--model.init_args.net.init_args.depth_single", str(a.depth_single)]
        train_spec = f"{train[0]}:{train[1]}"
        fit = lambda cfg, src, sub, minutes, extra: _fit(cfg, src, work / sub, minutes, a.max_steps, train_spec, a.seed, extra)  # noqa: E731

        # (a) pixel path: the whole budget to the forecaster
        pix_fit = fit("demo.yaml", data, "pixel_fit", a.minutes, net + [
            "--model.init_args.net.init_args.n_channels", str(n_channels), "--model.init_args.net.init_args.grid", f"[{h},{w}]",
            "--model.init_args.net.init_args.patch", str(a.patch)])
        pix = _forecast_and_score(pix_fit.pop("checkpoint"), data, data, work / "pixel", inits, a, train_spec)

        # (b) latent path: autoencoder, encode, forecaster on the latent zarr (the rest of the budget)
        ae_fit = fit("autoencoder.yaml", data, "ae_fit", a.ae_fraction * a.minutes, [
            "--model.init_args.net.init_args.n_channels", str(n_channels), "--model.init_args.net.init_args.width", str(a.ae_width),
            "--model.init_args.net.init_args.latent_channels", str(a.ae_latent), "--model.init_args.net.init_args.n_down", str(a.ae_down)])
        ae_ckpt = ae_fit.pop("checkpoint")
        t0 = time.perf_counter()
        latent = Path(cli(["encode", "--checkpoint", str(ae_ckpt), "--data", str(data), "--out", str(work / "latent.zarr")]))
        encode_seconds = time.perf_counter() - t0
        lat_fit = fit("demo.yaml", latent, "latent_fit", (1.0 - a.ae_fraction) * a.minutes, net + [
            "--model.init_args.net.init_args.n_channels", str(a.ae_latent), "--model.init_args.net.init_args.n_statics", "0",
            "--model.init_args.net.init_args.grid", f"[{h // factor},{w // factor}]",
            "--model.init_args.net.init_args.patch", str(a.patch // factor)])
        lat = _forecast_and_score(lat_fit.pop("checkpoint"), latent, data, work / "latent", inits, a, train_spec, autoencoder=ae_ckpt)
        last_valid = str(np.datetime64(inits[-1], "h") + np.timedelta64(a.lead_hours, "h"))
        recon = reconstruction_rmse(ae_ckpt, data, (inits[0], last_valid))

    pix_scores, lat_scores = _table(pix["rows"], SCORE_KEYS), _table(lat["rows"], SCORE_KEYS)
    baselines = _table(pix["rows"], BASELINE_KEYS)
    # both evaluations read the same truth and fit the same climatology: their baselines must agree
    same_baselines = baselines == _table(lat["rows"], BASELINE_KEYS)
    ratios = {ch: {ld: {"rmse_latent_over_pixel": lat_scores[ch][ld]["rmse"] / v["rmse"],
                        "crps_latent_over_pixel": lat_scores[ch][ld]["crps"] / v["crps"]}
                   for ld, v in per.items()} for ch, per in pix_scores.items()}
    cases = [(ch, ld) for ch in pix_scores for ld in pix_scores[ch]]
    out = {
        "date_utc": date,
        "command": "python benchmarks/weather_latent_vs_pixel.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:])),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_1_5_15_at_start": list(load_start), "load_average_1_5_15_at_end": list(os.getloadavg())},
        "settings": {"grid": [h, w], "channels": n_channels, "train_period": train_spec, "test_period": f"{test[0]}:{test[1]}",
                     "minutes_per_path": a.minutes, "ae_fraction": a.ae_fraction, "max_steps": a.max_steps,
                     "patch_pixel": a.patch, "patch_latent": a.patch // factor, "ae_factor": factor, "ae_latent_channels": a.ae_latent,
                     "ae_width": a.ae_width, "dim": a.dim, "num_heads": a.num_heads, "depth_dual": a.depth_dual,
                     "depth_single": a.depth_single, "members": a.members, "sampler": a.sampler, "sampler_levels": a.sampler_steps,
                     "lead_hours": a.lead_hours, "seed": a.seed,
                     "data": str(a.data) if a.data else f"synth --n-lat {a.n_lat} --n-lon {a.n_lon} --days {a.days} --seed {a.seed}"},
        "inits": inits,
        "leads": leads,
        "channels": sorted(pix_scores),
        "pixel": {"train": pix_fit, "forecast_seconds": pix["forecast_seconds"], "evaluate_seconds": pix["evaluate_seconds"],
                  "inits_scored": pix["inits"], "skipped_pairs": pix["skipped_pairs"], "scores": pix_scores},
        "latent": {"autoencoder_train": ae_fit, "forecaster_train": lat_fit, "encode_seconds": encode_seconds,
                   "train_seconds": ae_fit["fit_seconds"] + lat_fit["fit_seconds"],
                   "forecast_seconds": lat["forecast_seconds"], "evaluate_seconds": lat["evaluate_seconds"],
                   "inits_scored": lat["inits"], "skipped_pairs": lat["skipped_pairs"], "scores": lat_scores,
                   "autoencoder_reconstruction": recon},
        "baselines": baselines,
        "baselines_identical_in_both_evaluations": same_baselines,
        "climatology": pix["climatology"],
        "ratios": ratios,
        "summary": {
            "cases": len(cases),
            "latent_lower_rmse": sum(ratios[c][ld]["rmse_latent_over_pixel"] < 1 for c, ld in cases),
            "latent_lower_crps": sum(ratios[c][ld]["crps_latent_over_pixel"] < 1 for c, ld in cases),
            "median_rmse_ratio": float(np.median([ratios[c][ld]["rmse_latent_over_pixel"] for c, ld in cases])),
            "median_crps_ratio": float(np.median([ratios[c][ld]["crps_latent_over_pixel"] for c, ld in cases])),
        },
        "synth_seconds": synth_seconds,
        "total_seconds": time.perf_counter() - t_all,
    }
    write_json_atomic(a.out, out)
    print(json.dumps({k: out[k] for k in ("date_utc", "summary", "machine")} | {
        "steps": {"pixel": pix_fit["steps"], "autoencoder": ae_fit["steps"], "latent": lat_fit["steps"]}}, indent=2))
    return out


if __name__ == "__main__":
    from apps.weather.cli import script_main

    script_main(main)  # bad input: one line naming file, variable and problem
