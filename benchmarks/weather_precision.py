"""Claim: which training precision is faster for the t2m forecaster on this CPU (fp32 vs bf16 autocast).

``python benchmarks/weather_precision.py --data FILE --out X.json [--quick] [--threads 1]``

One optimizer step (loss, backward, AdamW) of ``WeatherForecaster`` on a real batch of the t2m
benchmark (16 windows of 4 × 6 h frames, 32×48 grid, patch 4, diurnal prior), for a few widths, in
fp32 and under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (what Lightning's ``bf16-mixed`` does),
measured in the same process one after the other. bf16 is only timed where
``dualsci.training.bf16_supported()`` is True; on CPUs without AVX-512-bf16/AMX it is emulated and
many times slower, so the benchmark then reports fp32 only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.weather.datamodule import WeatherDataModule  # noqa: E402
from apps.weather.model import WeatherForecaster  # noqa: E402
from apps.weather.objective import WeatherEDMObjective  # noqa: E402
from dualsci.io import write_json_atomic  # noqa: E402
from dualsci.training import bf16_supported  # noqa: E402

# (dim, depth_dual, depth_single): the benchmark's size first, then wider ones
SIZES = ((64, 2, 1), (128, 3, 1), (192, 4, 2))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="hourly t2m file of the t2m benchmark's schema")
    p.add_argument("--train", default=None, help="START:END of the batch's period (default: whole file)")
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="the benchmark's size only, fewer repeats")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    dm = WeatherDataModule(a.data, variables=["2m_temperature"], train_period=a.train, frames=4, step_hours=6,
                           batch_size=16, crop_multiple=4, prior="diurnal")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    h, w = len(dm.train_set.windows.lat), len(dm.train_set.windows.lon)
    obj = WeatherEDMObjective()
    precisions = ["fp32"] + (["bf16"] if bf16_supported() else [])
    repeats = min(5, a.repeats) if a.quick else a.repeats
    rows = []
    for dim, dd, ds in SIZES[:1] if a.quick else SIZES:
        for prec in precisions:
            torch.manual_seed(0)
            net = WeatherForecaster(n_channels=1, n_statics=len(dm.stats.static_names), grid=(h, w), frames=4, step_hours=6,
                                    patch=4, dim=dim, num_heads=4, depth_dual=dd, depth_single=ds, rope="grid")
            opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

            def step() -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16"):
                    loss = obj.loss(net, batch)["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()

            for _ in range(3):  # warm-up (allocator, oneDNN kernels)
                step()
            t0 = time.perf_counter()
            for _ in range(repeats):
                step()
            ms = (time.perf_counter() - t0) / repeats * 1000
            rows.append({"dim": dim, "depth_dual": dd, "depth_single": ds, "precision": prec, "ms_per_step": ms,
                         "params": sum(q.numel() for q in net.parameters())})
            print(json.dumps(rows[-1]), flush=True)
    out = {
        "rows": rows,
        "bf16_supported": bf16_supported(),
        "threads": torch.get_num_threads(),
        "load_average_1_5_15": list(os.getloadavg()),
        "command": "python benchmarks/weather_precision.py " + " ".join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:])),
    }
    write_json_atomic(a.out, out)
    return out


if __name__ == "__main__":
    from apps.weather.cli import script_main

    script_main(main)  # bad input: one line naming file, variable and problem
