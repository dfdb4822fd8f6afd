"""Claim: peak memory of a 40-lead rollout is ≤ 1.15× that of a 4-lead rollout (flat in leads).

``python benchmarks/weather_memory.py --checkpoint CKPT --data DATA --init T --out X.json``

Each rollout runs in a fresh child process; the child reports its peak RSS (``ru_maxrss``) after
loading everything (baseline) and after the rollout. Reported: the ratio of peaks, and the ratio of
the increments above the baseline (the part the rollout itself adds). Leads are counted in model
steps (frames): 4 leads = 1 block, 40 leads = 10 blocks.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, torch
sys.path.insert(0, {root!r})
from apps.weather.sampling import ForecastOptions, forecast, load_checkpoint
net, obj, meta = load_checkpoint({ckpt!r})
step = int(meta["step_hours"])
import apps.weather.data, xarray  # warm imports before the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
opts = ForecastOptions(inits=[{init!r}], lead_hours={leads} * step, members={members}, steps={steps}, batch_members={members})
forecast({ckpt!r}, {data!r}, {out!r}, opts, progress=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"baseline_kib": base, "peak_kib": peak}}))
"""


def measure(ckpt: str, data: str, init: str, leads: int, members: int, steps: int, out: str) -> dict:
    code = CHILD.format(root=str(ROOT), ckpt=ckpt, data=data, init=init, leads=leads, members=members, steps=steps, out=out)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if res.returncode:  # the child's error (e.g. a WeatherDataError naming the file) as one line, not two tracebacks
        lines = res.stderr.strip().splitlines()
        raise SystemExit(f"error: {lines[-1] if lines else f'forecast exited with status {res.returncode}'}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--init", required=True)
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--steps", type=int, default=4, help="sampler levels (memory does not depend on it)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        short = measure(a.checkpoint, a.data, a.init, 4, a.members, a.steps, str(Path(tmp) / "s.zarr"))
        long = measure(a.checkpoint, a.data, a.init, 40, a.members, a.steps, str(Path(tmp) / "l.zarr"))
    inc_s = max(short["peak_kib"] - short["baseline_kib"], 1)
    inc_l = max(long["peak_kib"] - long["baseline_kib"], 1)
    out = {
        "lead_4": short,
        "lead_40": long,
        "peak_ratio": long["peak_kib"] / short["peak_kib"],
        "increment_ratio": inc_l / inc_s,
        "target_peak_ratio_le_1.15": long["peak_kib"] / short["peak_kib"] <= 1.15,
        "members": a.members,
        "command": "python benchmarks/weather_memory.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:])),
    }
    from dualsci.io import write_json_atomic

    write_json_atomic(a.out, out)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    from apps.weather.cli import script_main

    script_main(main)  # bad input: one line naming file, variable and problem
