"""Diagnostic: does a net trained on random crops (``train_crop``) give less spread on the full grid than on a
crop of the training size? A 2 m temperature checkpoint of ``weather_t2m_uk.py``; same inits (the 00/12 UTC
windows of ``--test``, at most 64), same noise seeds; spread and ensemble-mean RMSE of the first block
(6/12/18/24 h) on the centre crop's cells, from full-grid sampling and from sampling on the crop alone.

``python benchmarks/weather_crop_spread.py --checkpoint CKPT --data FILE --train START:END --test START:END
--out X.json [--crop HxW] [--members 10]``  (``--train``: the period the checkpoint was fitted on, to rebuild
its normalisation; the checkpoint's own tendency scales are checked against it).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.weather.datamodule import WeatherDataModule  # noqa: E402
from apps.weather.objective import batch_window  # noqa: E402
from apps.weather.sampling import load_checkpoint  # noqa: E402
from dualsci.io import write_json_atomic  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--checkpoint", "--data", "--train", "--test", "--out"):
        p.add_argument(name, required=True)
    p.add_argument("--crop", default=None, help="HxW (default: the checkpoint's own train_crop)")
    p.add_argument("--members", type=int, default=10, help="members (>= 2)")
    p.add_argument("--sampler-steps", type=int, default=10)
    a = p.parse_args(argv)
    if a.members < 2:
        p.error(f"--members must be >= 2 (a spread), got {a.members}")
    net, objective, meta = load_checkpoint(a.checkpoint)
    if a.crop is None:
        if objective.train_crop is None:
            p.error(f"{a.checkpoint} was trained without train_crop: give --crop HxW")
        a.crop = "x".join(map(str, objective.train_crop))
    try:
        ch, cw = (int(v) for v in a.crop.lower().split("x"))
    except ValueError:
        p.error(f"--crop: expected HxW, got {a.crop!r}")
    big_h, big_w = net.grid
    if not (0 < ch <= big_h and 0 < cw <= big_w) or ch % net.patch or cw % net.patch:
        p.error(f"--crop {a.crop}: sides must be multiples of the patch {net.patch} inside the {big_h}x{big_w} grid")
    blob = torch.load(a.checkpoint, map_location="cpu", weights_only=True)
    hp = blob["datamodule_hyper_parameters"]
    dm = WeatherDataModule(a.data, variables=["2m_temperature"], train_period=a.train, val_period=a.test, frames=net.frames,
                           step_hours=net.step_hours, batch_size=64, crop_multiple=net.patch, prior=hp["prior"], history=net.history)
    dm.setup("fit")
    if not np.allclose(np.asarray(meta["delta_scale"]), dm.delta_scale, rtol=1e-5):
        raise SystemExit(f"{a.checkpoint}: --train {a.train} does not rebuild the checkpoint's tendency scales")
    batch = next(iter(dm.val_dataloader()))
    i, j = (big_h - ch) // 2, (big_w - cw) // 2
    net.train()  # the mode that accepts a crop; the net has no dropout, so the full-grid output is the eval one

    def centre(t):  # (..., H, W) -> the crop's cells
        return t[..., i:i + ch, j:j + cw]

    cropped = batch_window(batch, i, j, (ch, cw))
    full_runs, crop_runs = [], []
    with torch.no_grad():
        for m in range(a.members):
            torch.manual_seed(1000 + m)
            full_runs.append(centre(objective.sample(net, batch, steps=a.sampler_steps)))
            torch.manual_seed(1000 + m)
            crop_runs.append(objective.sample(net, cropped, steps=a.sampler_steps))
    std = float(dm.stats.std[0])
    truth = centre(batch["y"])
    out = {"checkpoint": a.checkpoint, "crop": [ch, cw], "offset": [i, j], "grid": [int(big_h), int(big_w)],
           "inits": int(batch["x0"].shape[0]), "members": a.members, "leads": {}}
    for name, runs in (("full_grid", full_runs), ("crop_only", crop_runs)):
        ens = torch.stack(runs)  # (M, B, k, C, h, w)
        # plain means over inits and cells (the same cells for both: a like-for-like comparison, not WB2 scores)
        spread = ens.var(0, unbiased=True).mean((0, 2, 3, 4)).sqrt() * std  # (k,)
        rmse = ((ens.mean(0) - truth) ** 2).mean((0, 2, 3, 4)).sqrt() * std
        for f in range(ens.shape[2]):
            lead = str((f + 1) * net.step_hours)
            out["leads"].setdefault(lead, {})[name] = {"spread": float(spread[f]), "ens_mean_rmse": float(rmse[f])}
    out["command"] = "python benchmarks/weather_crop_spread.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json_atomic(a.out, out)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    from apps.weather.cli import script_main

    script_main(main)  # bad input: one line naming file, variable and problem
