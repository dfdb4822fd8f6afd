"""Latent-only forecast storage against the decoded store: bytes on disk, forecast, evaluate and decode time.

``python benchmarks/weather_latent_store.py --out X.json [--n-lat 32 --n-lon 64 --members 10 --inits 4] [--quick]``

On the embedded synthetic WB2-schema data (``dualsci-weather synth``): a spherical autoencoder and a latent
forecaster are trained briefly (``--fit-steps`` each; skill is not what is measured here, the shapes are),
then one forecast is written twice with the same options and seeds: ``--store decoded`` (physical fields)
and ``--store latent`` (the latents only). Measured in one run, one after the other:

* bytes on disk of each store (zarr, default compression) and their ratio;
* forecast wall seconds of each (the latent store skips decoding);
* ``evaluate`` wall seconds of each (the latent store is decoded lazily while it is scored; no report);
* ``decode`` wall seconds (the latent store written out decoded);
* equality: the lazily decoded view, the ``decode``d store and the decoded store hold the same values
  (``max_abs_difference``), and both evaluations give the same scores (``scores_identical``).
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
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

from apps.weather.cli import main as cli  # noqa: E402
from apps.weather.data import channel_names, open_weather  # noqa: E402
from apps.weather.latent_store import open_decoded  # noqa: E402
from dualsci.argtypes import positive_int  # noqa: E402
from dualsci.io import write_json_atomic  # noqa: E402
from weather_latent_vs_pixel import _fit  # noqa: E402


def store_bytes(path: Path) -> int:
    """Bytes of every file under a store folder (or of one file)."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _timed(args: list[str]):
    t0 = time.perf_counter()
    out = cli(args)
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--n-lat", type=positive_int, default=32)
    p.add_argument("--n-lon", type=positive_int, default=64)
    p.add_argument("--days", type=positive_int, default=20)
    p.add_argument("--fit-steps", type=positive_int, default=50, help="training steps of the autoencoder and of the forecaster")
    p.add_argument("--members", type=positive_int, default=10)
    p.add_argument("--inits", type=positive_int, default=4, help="00/12 UTC inits from day 15")
    p.add_argument("--lead-hours", type=positive_int, default=48)
    p.add_argument("--sampler-steps", type=positive_int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=positive_int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--quick", action="store_true", help="tiny run for the test (8x16 grid, few steps)")
    a = p.parse_args(argv)
    if a.quick:
        a.n_lat, a.n_lon, a.days, a.fit_steps, a.members, a.inits, a.lead_hours, a.sampler_steps = 8, 16, 17, 2, 3, 2, 24, 2
    if a.threads:
        torch.set_num_threads(a.threads)
    load_start = os.getloadavg()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    train = "2000-01-01:2000-01-14"
    inits = [str(np.datetime64("2000-01-15T00") + np.timedelta64(12 * i, "h")) for i in range(a.inits)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "synthetic.zarr"
        cli(["synth", "--out", str(data), "--n-lat", str(a.n_lat), "--n-lon", str(a.n_lon), "--days", str(a.days), "--seed", str(a.seed)])
        probe = open_weather(data)
        n_channels = len(channel_names(probe))
        ae = _fit("autoencoder.yaml", data, work / "ae_fit", 60.0, a.fit_steps, train, a.seed, [
            "--model.init_args.net.init_args.n_channels", str(n_channels)])["checkpoint"]
        latent = work / "latent.zarr"
        cli(["encode", "--checkpoint", str(ae), "--data", str(data), "--out", str(latent)])
        ae_meta = torch.load(ae, weights_only=True)["weather"]["net"]
        factor, n_latent = 2 ** int(ae_meta["n_down"]), int(ae_meta["latent_channels"])
        grid = f"[{a.n_lat // factor},{a.n_lon // factor}]"
        fc_ckpt = _fit("demo.yaml", latent, work / "fc_fit", 60.0, a.fit_steps, train, a.seed, [
            "--model.init_args.net.init_args.n_channels", str(n_latent), "--model.init_args.net.init_args.n_statics", "0",
            "--model.init_args.net.init_args.grid", grid, "--model.init_args.net.init_args.patch", "1"])["checkpoint"]
        common = ["--checkpoint", str(fc_ckpt), "--data", str(latent), "--autoencoder", str(ae), "--inits", ",".join(inits),
                  "--lead-hours", str(a.lead_hours), "--members", str(a.members), "--steps", str(a.sampler_steps),
                  "--seed", str(a.seed), "--batch-members", str(a.members), "--no-progress"]
        decoded, t_fc_decoded = _timed(["forecast", *common, "--out", str(work / "decoded.zarr")])
        latent_fc, t_fc_latent = _timed(["forecast", *common, "--out", str(work / "latent_fc.zarr"), "--store", "latent"])
        ev = ["--truth", str(data), "--regions", "global", "--climatology-period", train, "--no-report"]
        res_decoded, t_ev_decoded = _timed(["evaluate", "--forecast", decoded, "--out", str(work / "ev_decoded"), *ev])
        res_latent, t_ev_latent = _timed(["evaluate", "--forecast", latent_fc, "--out", str(work / "ev_latent"), *ev])
        written, t_decode = _timed(["decode", "--forecast", latent_fc, "--out", str(work / "decoded_again.zarr")])
        ref = xr.open_zarr(decoded, consolidated=False)
        view, again = open_decoded(latent_fc), xr.open_zarr(written, consolidated=False)
        max_diff = max(float(np.nanmax(np.abs(other[v].values - ref[v].values))) for other in (view, again) for v in ref.data_vars)
        bytes_decoded, bytes_latent = store_bytes(Path(decoded)), store_bytes(Path(latent_fc))
        shape = {"decoded": {str(v): [int(x) for x in ref[v].shape] for v in sorted(ref.data_vars)},
                 "latent_000": [int(x) for x in xr.open_zarr(latent_fc, consolidated=False)["latent_000"].shape]}
    out = {
        "date_utc": date,
        "command": "python benchmarks/weather_latent_store.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:])),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_1_5_15_at_start": list(load_start), "load_average_1_5_15_at_end": list(os.getloadavg())},
        "settings": {"grid": [a.n_lat, a.n_lon], "channels": n_channels, "latent_channels": n_latent, "ae_factor": factor,
                     "members": a.members, "inits": inits, "lead_hours": a.lead_hours, "sampler_levels": a.sampler_steps,
                     "fit_steps": a.fit_steps, "seed": a.seed},
        "shapes": shape,
        "bytes": {"decoded_store": bytes_decoded, "latent_store": bytes_latent, "decoded_over_latent": bytes_decoded / bytes_latent},
        "seconds": {"forecast_decoded": t_fc_decoded, "forecast_latent": t_fc_latent, "evaluate_decoded": t_ev_decoded,
                    "evaluate_latent_lazy": t_ev_latent, "decode": t_decode},
        "ratios": {"forecast_latent_over_decoded": t_fc_latent / t_fc_decoded, "evaluate_lazy_over_decoded": t_ev_latent / t_ev_decoded},
        "max_abs_difference": max_diff,
        # through JSON: NaN scores (undefined ones) compare equal as text, not as floats
        "scores_identical": json.dumps(res_decoded["scores"], sort_keys=True) == json.dumps(res_latent["scores"], sort_keys=True),
    }
    write_json_atomic(a.out, out)
    print(f"{out['command']}\n  bytes decoded {bytes_decoded:,} / latent {bytes_latent:,} = {out['bytes']['decoded_over_latent']:.1f}x"
          f"\n  forecast {t_fc_decoded:.1f} s decoded, {t_fc_latent:.1f} s latent; evaluate {t_ev_decoded:.1f} s decoded, "
          f"{t_ev_latent:.1f} s lazy; decode {t_decode:.1f} s\n  max |difference| {max_diff:g}; scores identical: {out['scores_identical']}")
    return out


if __name__ == "__main__":
    from apps.weather.cli import script_main

    script_main(main)  # bad input: one line naming file, variable and problem
