"""Claim: CRPS with 10 network calls per block is within 2 % of CRPS with 39 (LaDCast's Heun-20).

``python benchmarks/weather_nfe.py --checkpoint CKPT --data DATA --inits SPEC --out X.json [--quick]``

Same run, same checkpoint, same inits, members and seeds: Heun with 20 Karras levels (39 calls per
block) against each ≤ 10-call candidate of the core's samplers (``--candidates``, default
DPM-Solver++(2M) with 10 levels = 10 calls, Heun with 5 levels = 9 calls, Euler with 10 levels = 10
calls; all on the objective's Karras grid unless a candidate names its own: ``SAMPLER:LEVELS:SIGMA_MAX:RHO``).
Choose a grid on inits that are not the test inits (e.g. the demo's validation month, ``--inits``), then
score it on the test inits. Reports CRPS per (variable, lead) for every run, each
candidate's relative difference to the reference, and the wall time of each rollout. Without
``--checkpoint`` a small model is first trained on the embedded synthetic data (the demo recipe,
``--train-steps`` steps).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from apps.weather.evaluate import evaluate  # noqa: E402
from apps.weather.sampling import ForecastOptions, forecast, parse_inits  # noqa: E402
from dualsci.diffusion import SAMPLERS  # noqa: E402
from dualsci.io import write_json_atomic  # noqa: E402


# Network calls per block for N levels of the Karras grid (core samplers; Heun's step to σ = 0 is Euler).
NFE = {name: (lambda n: n) for name in SAMPLERS} | {"heun": lambda n: 2 * n - 1}


def _train_default(tmp: Path, steps: int) -> tuple[Path, Path]:
    from apps.weather.cli import CONFIG_DIR, main as cli

    data = tmp / "synthetic.zarr"
    cli(["synth", "--out", str(data)])
    fitted = cli(["fit", "--config", str(CONFIG_DIR / "demo.yaml"), "--data.init_args.path", str(data),
                  "--trainer.max_steps", str(steps), "--trainer.logger", "false", "--trainer.limit_val_batches", "0",
                  "--trainer.default_root_dir", str(tmp / "fit"), "--trainer.callbacks.init_args.dirpath", str(tmp / "ck")])
    ckpt = tmp / "model.ckpt"
    fitted.trainer.save_checkpoint(ckpt, weights_only=False)
    return ckpt, data


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint")
    p.add_argument("--data")
    p.add_argument("--inits", default="2001-11-01T00:2001-11-05T12:12")
    p.add_argument("--lead-hours", type=int, default=48)
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--quick", action="store_true", help="fewer inits (first 4)")
    p.add_argument("--candidates", default="dpmpp_2m:10,heun:5,euler:10",
                   help="SAMPLER:LEVELS[:SIGMA_MAX:RHO],... (each <= 10 calls; grid default: the objective's)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    candidates = []
    for spec in a.candidates.split(","):
        parts = spec.split(":")
        sampler, levels = parts[0], parts[1] if len(parts) > 1 else ""
        try:
            grid = (float(parts[2]), float(parts[3])) if len(parts) == 4 else None
        except ValueError:
            grid = None
        if sampler not in NFE or not levels.isdigit() or len(parts) not in (2, 4) or (len(parts) == 4 and grid is None):
            raise SystemExit(f"--candidates: {spec!r} must be SAMPLER:LEVELS or SAMPLER:LEVELS:SIGMA_MAX:RHO with SAMPLER one of {sorted(NFE)}")
        nfe = NFE[sampler](int(levels))
        tag = "" if grid is None else f"_smax{grid[0]:g}_rho{grid[1]:g}"
        candidates.append((f"{sampler}{levels}_nfe{nfe}{tag}", sampler, int(levels), nfe, grid))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt, data = (Path(a.checkpoint), Path(a.data)) if a.checkpoint else _train_default(tmp, a.train_steps)
        inits = [str(t) for t in parse_inits(a.inits)][: 4 if a.quick else None]
        runs = {}
        for name, sampler, steps, nfe, grid in [("heun20_nfe39", "heun", 20, 39, None)] + candidates:
            smax, rho = grid if grid is not None else (None, None)
            opts = ForecastOptions(inits=inits, lead_hours=a.lead_hours, members=a.members, sampler=sampler, steps=steps, seed=0,
                                   sigma_max=smax, rho=rho)
            t0 = time.perf_counter()
            fc = forecast(ckpt, data, tmp / f"{name}.zarr", opts, progress=False)
            secs = time.perf_counter() - t0
            res = evaluate(fc, data, tmp / f"ev_{name}", report=False)
            runs[name] = {"seconds": secs, "nfe_per_block": nfe, "sigma_max": smax, "rho": rho, "crps": {f"{r['variable']}@{r['lead_hours']}h": r["crps"] for r in res["scores"] if r["region"] == "global"}}
    ref = runs["heun20_nfe39"]["crps"]
    per = {}
    for name, *_ in candidates:
        rel = {k: runs[name]["crps"][k] / ref[k] - 1.0 for k in ref}
        absrel = np.abs(list(rel.values()))
        per[name] = {
            "relative_crps_difference": rel,
            "max_abs_relative_difference": float(absrel.max()),
            "median_relative_difference": float(np.median(list(rel.values()))),
            "within_2pct": f"{int((absrel <= 0.02).sum())}/{len(absrel)}",
            "target_within_2pct": bool((absrel <= 0.02).all()),
        }
    best = min(per, key=lambda n: per[n]["max_abs_relative_difference"])
    out = {
        "runs": runs,
        "candidates": per,
        "best_candidate": best,
        "max_abs_relative_difference": per[best]["max_abs_relative_difference"],
        "target_within_2pct": per[best]["target_within_2pct"],
        "n_inits": len(inits),
        "members": a.members,
        "command": "python benchmarks/weather_nfe.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:])),
    }
    write_json_atomic(a.out, out)
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))
    return out


if __name__ == "__main__":
    from apps.weather.cli import script_main

    script_main(main)  # bad input: one line naming file, variable and problem
