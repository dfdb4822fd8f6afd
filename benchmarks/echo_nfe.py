"""Echo: one trained dual-noise model sampled with 1000 (anchor's setting, ancestral), 50, 20 and 10 steps.

Claim checked (issue 4): ≤ 20 steps within 0.5 Dice points of 1000 steps; on the synthetic CAMUS-layout
phantom LV Dice ≥ 0.90 and EF MAE ≤ 5 points after ≤ 30 min training on 2 cores; one image with K = 5
segmented in ≤ 10 s at 128².

    python benchmarks/echo_nfe.py --out outputs/bench/echo_nfe.json --quick    # ~10 min
    python benchmarks/echo_nfe.py --out outputs/bench/echo_nfe.json            # 25 min training + eval

Protocol: phantom data in the CAMUS 2023 layout, official-rule split by patient; train on the training
patients (2CH+4CH, ED+ES) for a fixed wall-clock budget; evaluate on the testing patients. Step sweep:
K = 1 member per chain, fused (Gaussian + Bernoulli + calibration, mean rule), post-processed, on the same
images for every step count (1000 steps: ancestral Gaussian + ancestral Bernoulli; ≤ 50: DDIM Gaussian +
skip-step Bernoulli); 1000 steps run on the first ``n_1000`` images only and the other step counts are also
reported on that subset. Ablation at 20 steps, K = 5: Gaussian only, Bernoulli only, dual (G + B), fused
(G + B + cal), cal only. EF: biplane Simpson (20 disks) from the fused K = 5 masks vs the phantom's exact EF.
Timings are wall-clock on this machine (shared: see ``load_average``) and say nothing about other machines.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--workdir", default=None, help="data/checkpoint folder (default: next to --out)")
    p.add_argument("--train-minutes", type=float, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--patients", type=int, default=None)
    p.add_argument("--n-1000", type=int, default=None, help="images sampled with 1000 steps (slow)")
    p.add_argument("--eval-patients", type=int, default=None, help="test patients evaluated (4 images each)")
    p.add_argument("--gaussian-param", choices=("eps", "v", "x0"), default="eps",
                   help="what the Gaussian head predicts (default eps = Echo-DND; the echo configs use v)")
    args = p.parse_args(argv)
    if args.n_1000 is not None and args.n_1000 < 1:  # 0 used to mean 2 silently
        p.error(f"--n-1000 must be >= 1 (the 1000-step reference images), got {args.n_1000}")

    import lightning.pytorch as pl

    from apps.echo import camus, metrics
    from apps.echo.cli import configure_threads
    from apps.echo.data import EchoDataModule
    from apps.echo.model import EchoDNDNet
    from apps.echo.objective import EchoDNDObjective
    from apps.echo.sampling import segment_batch
    from apps.echo.transforms import to_model, to_native
    from apps.echo.writers import write_camus_2023
    from dualsci.io import write_json_atomic
    from dualsci.training import DiffusionModule

    quick = args.quick
    size = args.image_size or (64 if quick else 128)
    n_patients = args.patients or (30 if quick else 100)
    minutes = args.train_minutes if args.train_minutes is not None else (3.0 if quick else 25.0)
    n_eval_patients = args.eval_patients or (2 if quick else 6)
    n_1000 = args.n_1000 or 2
    threads = configure_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    work = Path(args.workdir or Path(args.out).with_suffix("")).resolve()
    data = work / f"camus2023_n{n_patients}"
    if not data.exists():
        write_camus_2023(data, n_patients, seed=123, shape=(192, 156))

    torch.manual_seed(0)
    widths = (16, 24, 32, 48) if quick else (24, 32, 48, 64)
    net = EchoDNDNet(widths=widths, emb_dim=128, patch=2, stem=16)
    objective = EchoDNDObjective(gaussian_param=args.gaussian_param)
    tag = "" if args.gaussian_param == "eps" else f"_{args.gaussian_param}"  # eps keeps session-1 checkpoint names
    ckpt = work / f"net_{size}_{widths[0]}_{minutes:g}min{tag}.pt"
    train_info = {}
    if ckpt.exists():
        net.load_state_dict(torch.load(ckpt, weights_only=True))
        train_info = json.loads(ckpt.with_suffix(".json").read_text())
    else:
        dm = EchoDataModule(source="camus", root=str(data), image_size=size, batch_size=12 if quick else 8)
        module = DiffusionModule(net, objective, optimizer=functools.partial(torch.optim.AdamW, lr=2e-3, weight_decay=0.0))
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_time={"minutes": minutes}, max_steps=100_000,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             limit_val_batches=0, enable_model_summary=False)
        t = time.perf_counter()
        trainer.fit(module, dm)
        train_info = {"train_seconds": time.perf_counter() - t, "train_steps": int(trainer.global_step),
                      "batch_size": dm.batch_size, "train_images": len(dm.sets["training"])}
        torch.save(net.state_dict(), ckpt)
        ckpt.with_suffix(".json").write_text(json.dumps(train_info))
    net.eval()

    test = camus.official_split(data)["testing"][:n_eval_patients]
    cases = [s for s in camus.scan(data) if s.patient in test]
    loaded = [(s, *camus.load_sample(s)) for s in cases]
    images = torch.stack([to_model(img, size) for _, img, _, _ in loaded])

    def evaluate(idx, steps, members, sampler="ddim", weights=(1.0, 1.0, 1.0)):
        dices, hds, masks, secs = [], [], [], []
        for i in idx:
            s, img, lab, spacing = loaded[i]
            t = time.perf_counter()
            out = segment_batch(net, images[i:i + 1], steps=steps, members=members, weights=weights,
                                gaussian_sampler=sampler, seed=i, objective=objective, post=False)
            fused = to_native(out["fused"][0], img.shape)
            from apps.echo.sampling import postprocess

            mask = postprocess(fused >= 0.5, radius=max(1, round(max(img.shape) / 128)))
            secs.append(time.perf_counter() - t)
            m = metrics.segmentation_metrics(mask, lab == 1, spacing)
            dices.append(m["dice"])
            hds.append(m["hd95_mm"])
            masks.append(mask)
        return {"dice": float(np.mean(dices)), "hd95_mm": float(np.nanmean(hds)), "seconds_per_image": float(np.mean(secs)),
                "n_images": len(idx)}, masks

    all_idx = list(range(len(loaded)))
    sub = all_idx[:n_1000]
    sweep, sweep_sub = {}, {}
    for steps in (10, 20, 50):
        sweep[str(steps)], _ = evaluate(all_idx, steps, 1)
        sweep_sub[str(steps)], _ = evaluate(sub, steps, 1)
        print(f"steps {steps}: {sweep[str(steps)]}", flush=True)
    sweep_sub["1000"], _ = evaluate(sub, 1000, 1, sampler="ancestral")
    sweep["1000"] = sweep_sub["1000"]
    print(f"steps 1000 (ancestral, {n_1000} images): {sweep['1000']}", flush=True)

    ablation = {}
    for name, w in (("gaussian_only", (1, 0, 0)), ("bernoulli_only", (0, 1, 0)), ("dual", (1, 1, 0)),
                    ("fused", (1, 1, 1)), ("cal_only", (0, 0, 1))):
        ablation[name], masks = evaluate(all_idx, 20, 5, weights=w)
        if name == "fused":
            fused_masks = masks
            seconds_k5 = ablation[name]["seconds_per_image"]
        print(f"ablation {name}: {ablation[name]}", flush=True)

    by = {(s.patient, s.view, s.phase): m for (s, *_), m in zip(loaded, fused_masks)}
    gt = {(s.patient, s.view, s.phase): lab == 1 for s, _, lab, _ in loaded}
    spc = {(s.patient, s.view): sp for s, _, _, sp in loaded}
    import csv

    truth = {r["patient"]: float(r["EF"]) for r in csv.DictReader(open(data / "phantom_truth.csv"))}
    ef_rows = []
    for pid in test:
        k = lambda v, ph: (pid, v, ph)  # noqa: E731
        try:
            pred = metrics.biplane_simpson(by[k("2CH", "ED")], by[k("2CH", "ES")], by[k("4CH", "ED")], by[k("4CH", "ES")],
                                           spc[pid, "2CH"], spc[pid, "4CH"])["ef"]
        except ValueError:
            pred = math.nan
        ref = metrics.biplane_simpson(gt[k("2CH", "ED")], gt[k("2CH", "ES")], gt[k("4CH", "ED")], gt[k("4CH", "ES")],
                                      spc[pid, "2CH"], spc[pid, "4CH"])["ef"]
        ef_rows.append({"patient": pid, "ef_pred": pred, "ef_from_gt_masks": ref, "ef_true": truth[pid]})
    errs = [abs(r["ef_pred"] - r["ef_true"]) for r in ef_rows if np.isfinite(r["ef_pred"])]

    result = {
        "dice_by_steps": {k: sweep[k]["dice"] for k in ("1000", "50", "20", "10")},
        "seconds_per_image_by_steps": {k: sweep[k]["seconds_per_image"] for k in ("1000", "50", "20", "10")},
        "hd95_mm_by_steps": {k: sweep[k]["hd95_mm"] for k in ("1000", "50", "20", "10")},
        "dice_by_steps_on_1000_subset": {k: sweep_sub[k]["dice"] for k in ("1000", "50", "20", "10")},
        "dice_gaussian_only": ablation["gaussian_only"]["dice"],
        "dice_bernoulli_only": ablation["bernoulli_only"]["dice"],
        "dice_dual": ablation["dual"]["dice"],
        "dice_fused_with_cal": ablation["fused"]["dice"],
        "dice_cal_only": ablation["cal_only"]["dice"],
        "hd95_mm_fused": ablation["fused"]["hd95_mm"],
        "seconds_per_image_k5_20steps": seconds_k5,
        "ef_mae": float(np.mean(errs)) if errs else None,
        "ef_mae_gt_masks_vs_truth": float(np.mean([abs(r["ef_from_gt_masks"] - r["ef_true"]) for r in ef_rows])),
        "ef_rows": ef_rows,
        "sweep_detail": sweep, "ablation_detail": ablation,
        "config": {"quick": quick, "gaussian_param": args.gaussian_param, "image_size": size, "widths": list(widths), "patients": n_patients,
                   "eval_patients": len(test), "eval_images": len(loaded), "n_1000": n_1000, "train_minutes": minutes,
                   **train_info},
        "machine": {"threads": threads, "load_average_1min_at_start": load, "cpu_count": os.cpu_count(),
                    "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/echo_nfe.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    write_json_atomic(args.out, result)
    for k in ("dice_by_steps", "seconds_per_image_by_steps", "dice_gaussian_only", "dice_bernoulli_only", "dice_dual",
              "dice_fused_with_cal", "seconds_per_image_k5_20steps", "ef_mae"):
        print(f"{k}: {result[k]}")
    print(f"command: {result['command']}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
