"""End-to-end echo demo: phantom data → fit → segment → ``DIR/report.html``.

    python -m apps.echo.demo --out outputs/demo/echo

1. writes a synthetic CAMUS-2023-layout dataset (beating-heart phantom with known EF) and one
   EchoNet-layout video;
2. trains the dual-noise model with ``dualsci-echo fit`` (configs/demo.yaml, time-capped);
3. segments the official-rule test patients (2CH/4CH × ED/ES, biplane EF with ensemble intervals), one
   half sequence (ED/ES detection) and the EchoNet video with ``dualsci-echo segment``;
4. writes ``report.html`` (summary, training curve, EF table, per-case overlays and GIFs).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np


def _training_curve(metrics_csv: Path, out_png: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(metrics_csv)))
    keys = ["train/loss", "train/gaussian", "train/bernoulli", "train/calibration"]
    fig, ax = plt.subplots(figsize=(6, 3))
    last = {}
    for k in keys:
        pts = [(int(r["step"]), float(r[k])) for r in rows if r.get(k)]
        if pts:
            ax.plot(*zip(*pts), label=k.split("/")[1])
            last[k] = pts[-1][1]
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    steps = max((int(r["step"]) for r in rows), default=0)
    return {"steps": steps, **last}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m apps.echo.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/demo/echo")
    p.add_argument("--patients", type=int, default=40)
    p.add_argument("--max-time", default="00:00:01:50", help="training time cap (DD:HH:MM:SS); 110 s keeps the demo near 3 min on a loaded 2-core box")
    p.add_argument("--max-steps", type=int, default=600)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--test-patients", type=int, default=3)
    args = p.parse_args(argv)
    if not Path(args.out).is_dir():  # a file, or a path under one: was a NotADirectoryError traceback
        from apps.echo.pipeline import InputError, check_out

        try:
            check_out(args.out)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    from apps.echo import camus
    from apps.echo.cli import configure_threads, main as cli_main, run_segment
    from apps.echo.report import write_report
    from apps.echo.writers import write_camus_2023, write_echonet

    t_all = time.perf_counter()
    threads = configure_threads()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data" / "CAMUS_public"
    t = time.perf_counter()
    if not data.exists():
        write_camus_2023(data, args.patients, seed=0, shape=(160, 128))
    video_root = out / "data" / "EchoNet-Dynamic"
    if not video_root.exists():
        write_echonet(video_root, n_videos=1, seed=0)
    t_data = time.perf_counter() - t

    t = time.perf_counter()
    train_dir = out / "train"
    cli_main(["fit", "--data.init_args.root", str(data), "--trainer.default_root_dir", str(train_dir),
              "--trainer.max_time", args.max_time, "--trainer.max_steps", str(args.max_steps)])
    t_fit = time.perf_counter() - t
    ckpts = sorted(train_dir.glob("lightning_logs/version_*/checkpoints/*.ckpt"), key=lambda q: q.stat().st_mtime)
    if not ckpts:
        raise SystemExit(f"{train_dir}: training wrote no checkpoint")
    ckpt = next((c for c in reversed(ckpts) if c.name == "last.ckpt"), ckpts[-1])  # end-of-fit state
    curve = _training_curve(ckpt.parent.parent / "metrics.csv", out / "training_curve.png")

    split = camus.official_split(data)
    files = []
    for pid in split["testing"][: args.test_patients]:
        for view in ("2CH", "4CH"):
            for phase in ("ED", "ES"):
                files.append(data / "database_nifti" / pid / f"{pid}_{view}_{phase}.nii.gz")
    first = split["testing"][0]
    files.append(data / "database_nifti" / first / f"{first}_4CH_half_sequence.nii.gz")
    files += sorted((video_root / "Videos").glob("*.avi"))

    t = time.perf_counter()
    res = run_segment(files, ckpt, out / "segment", steps=args.steps, members=args.members, overwrite=True)
    t_seg = time.perf_counter() - t

    truth = {r["patient"]: float(r["EF"]) for r in csv.DictReader(open(data / "phantom_truth.csv"))}
    errs = [abs(p["ef"] - truth[p["patient"]]) for p in res["patients"] if np.isfinite(p.get("ef", math.nan))]
    n_images = sum(len(r["per_frame"]) for r in res["records"])
    summary = {
        "training steps": curve.get("steps"), "training seconds": t_fit, "threads": threads,
        "data generation seconds": t_data, "segmentation seconds": t_seg,
        "segmented frames": n_images, "seconds per frame (K members, both chains)": t_seg / max(n_images, 1),
        "mean Dice (test images, fused, post-processed)": res["summary"]["mean_dice"],
        "EF MAE vs phantom truth (biplane, points)": float(np.mean(errs)) if errs else None,
        "ensemble": f"K = {args.members}, {args.steps} steps per chain, fusion mean",
        "total seconds": time.perf_counter() - t_all,
    }
    extra = ("<h2>Training</h2><p>Synthetic CAMUS-2023-layout phantom, dual-noise objective "
             "(Gaussian ε + Bernoulli x0 + VLB + calibration), CPU, time-capped.</p>"
             "<img src='training_curve.png'>")
    write_report(out, res["records"], res["patients"], summary, title="dualsci echo demo (synthetic data)",
                 prefix="segment/", extra_html=extra, clinical=res["clinical"])
    for k, v in summary.items():
        print(f"{k}: {v}")
    print(f"wrote {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
