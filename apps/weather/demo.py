"""End-to-end weather demo: synthetic data -> fit -> ensemble forecast -> evaluate -> report.html.

``python -m apps.weather.demo --out DIR`` (what ``make demo`` runs for this app). Everything runs on the
embedded synthetic WB2-schema dataset, through the same commands a user types
(``dualsci-weather synth | fit | forecast | evaluate``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from apps.weather.cli import CONFIG_DIR, main as cli


def run(out: Path, steps: int = 300, members: int = 8, inits: str = "2001-11-01T00:2001-11-03T00:12", quick: bool = False) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    t0 = time.perf_counter()
    data = out / "synthetic.zarr"
    if not data.exists():
        cli(["synth", "--out", str(data)])
    timings["synth_s"] = time.perf_counter() - t0
    fit_dir = out / "fit"
    shutil.rmtree(fit_dir, ignore_errors=True)
    t = time.perf_counter()
    fitted = cli([
        "fit", "--config", str(CONFIG_DIR / "demo.yaml"),
        "--data.init_args.path", str(data),
        "--trainer.max_steps", str(steps),
        "--trainer.default_root_dir", str(fit_dir),
        "--trainer.callbacks.init_args.dirpath", str(fit_dir / "checkpoints"),
        "--trainer.logger", "false",
    ] + (["--trainer.limit_val_batches", "0"] if quick else []))
    timings["fit_s"] = time.perf_counter() - t
    ckpt = out / "forecaster.ckpt"
    fitted.trainer.save_checkpoint(ckpt, weights_only=False)  # the final weights, whatever the checkpoint callback kept
    fc = out / "forecast.zarr"
    shutil.rmtree(fc, ignore_errors=True)
    shutil.rmtree(out / "forecast.zarr.partial", ignore_errors=True)
    t = time.perf_counter()
    cli([
        "forecast", "--checkpoint", str(ckpt), "--data", str(data), "--out", str(fc), "--inits", inits,
        "--lead-hours", "48", "--members", str(members), "--sampler", "heun", "--steps", "6" if quick else "10",
        "--batch-members", str(members), "--no-progress",
    ])
    timings["forecast_s"] = time.perf_counter() - t
    t = time.perf_counter()
    # + skill against ensemble size, the Brier score of 2 m temperature above 20 °C (about 40 % of the synthetic cells)
    # and the zonal energy spectra over mid-latitudes
    cli(["evaluate", "--forecast", str(fc), "--truth", str(data), "--out", str(out), "--regions", "global,tropics,northern-hemisphere",
         "--member-curve", "auto", "--threshold", "2m_temperature=293.15", "--spectra", "30:60"])
    timings["evaluate_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(json.dumps(timings, indent=2))
    return out / "report.html"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m apps.weather.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/demo/weather")
    p.add_argument("--steps", type=int, default=300, help="training steps")
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--quick", action="store_true", help="tiny run for tests")
    a = p.parse_args(argv)
    report = run(Path(a.out), a.steps, a.members, quick=a.quick)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
