"""End-to-end demo: phantoms -> fit -> generate a small dataset -> evaluate -> ``OUT/report.html``.

    python -m apps.medseg.demo --out outputs/demo/medseg

Everything runs on the embedded CT phantom (no download): 6 training phantoms for the generator and
the downstream UNets, 2 separate held-out phantoms for evaluation. CPU-sized (32 px slices, a
1-M-parameter JCA transformer, up to 1,000 steps within a 200-s training budget, EMA weights): the point
is the pipeline, not image quality. The budget keeps the whole demo within ~5 min on a slow 2-core
machine; a fast one reaches the 1,000 steps (the number done is logged and stored in the summary).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from apps.medseg.cli import CONFIG_DIR
from apps.medseg.evaluate import load_slices, run_evaluation
from apps.medseg.phantom import write_phantom_msd
from dualsci.io import output_dir_problem, write_json_atomic
from dualsci.training import max_time_arg

LABELS = ["liver", "spleen", "kidney_left", "kidney_right", "stomach", "liver_lesion"]
PROMPTS = ["CT abdomen with liver, spleen and stomach",
           "CT abdomen with liver, kidney left and kidney right",
           "CT abdomen with liver and liver lesion, pathology lesion"]


def run(out: Path, fit_steps: int = 1000, size: int = 32, n_per_prompt: int = 8, eval_steps: int = 80,
        seeds: int = 3, log=print, fit_seconds: int = 200) -> dict:
    """The whole demo; returns the summary (also written to ``out/summary.json``).

    ``fit_steps`` generator steps at most, stopped after ``fit_seconds`` of training (Lightning ``max_time``).
    """
    from apps.medseg.cli import main as cli_main
    from apps.medseg.generate import generate
    from apps.medseg.report import write_report

    out = Path(out)
    problem = output_dir_problem(out)  # a file, or a path under one: was a NotADirectoryError traceback
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    marker = out / ".medseg-demo"
    if out.exists() and any(out.iterdir()):
        if not marker.exists():
            raise SystemExit(f"{out}: folder is not empty and was not written by this demo; choose another --out")
        log(f"demo: replacing the previous demo output in {out}")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text("written by python -m apps.medseg.demo; the next demo run replaces this folder\n")
    timings: dict[str, float] = {}
    t = time.time()
    train_dir = write_phantom_msd(out / "phantom_train", n_cases=6, modality="CT", seed=0)
    test_dir = write_phantom_msd(out / "phantom_test", n_cases=2, modality="CT", seed=1)
    timings["phantoms"] = time.time() - t
    log(f"demo: phantoms written ({timings['phantoms']:.0f} s)")

    t = time.time()
    ckpt_dir = out / "fit" / "checkpoints"
    cli_main(["fit", "--config", str(CONFIG_DIR / "demo.yaml"), "--trainer.max_steps", str(fit_steps),
              "--trainer.default_root_dir", str(out / "fit"), "--trainer.callbacks.init_args.dirpath", str(ckpt_dir),
              "--model.init_args.net.init_args.image_size", str(size), "--data.init_args.size", str(size),
              "--data.init_args.root", str(train_dir), "--trainer.max_time", max_time_arg(fit_seconds)])
    timings["fit"] = time.time() - t
    steps_done = int(torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)["global_step"])
    log(f"demo: fit {steps_done}/{fit_steps} steps ({timings['fit']:.0f} s)")

    t = time.time()
    gen = generate(ckpt_dir / "last.ckpt", PROMPTS, out / "generated", n=n_per_prompt, steps=20, cfg=(2.0, 2.0),
                   batch=8, spacing=(5.0, 5.0, 6.0), progress=False)
    timings["generate"] = time.time() - t
    rate = gen["pairs_per_second"]  # None when every pair was already there (a resumed run)
    log(f"demo: generated {gen['pairs']} pairs" + (f" ({rate:.2f} pairs/s)" if rate is not None else " (all resumed)"))

    t = time.time()
    names = LABELS[:5]  # the lesion is too rare in 6 phantoms for a per-class downstream score
    real_train, labels, _ = load_slices(train_dir, names, size)
    real_test, _, _ = load_slices(test_dir, names, size)
    synth, _, _ = load_slices(out / "generated", names, size, min_foreground=0)
    res = run_evaluation(real_train, real_test, synth, labels.names, seeds=list(range(seeds)), ratios=[1.0, 2.0],
                         few=6, steps=eval_steps, spacing=5.0 * 64 / size, log=log, ref_steps=4 * eval_steps)
    timings["evaluate"] = time.time() - t
    res["timings_seconds"] = timings
    res["fit_steps_done"] = steps_done
    res["pairs_per_second"] = gen["pairs_per_second"]
    write_json_atomic(out / "evaluation.json", res)
    write_report(out, res, real_train, synth, labels.names, gen_dir=out / "generated",
                 extra={"generation pairs/s (20 Euler steps, CFG 2)": gen["pairs_per_second"],
                        "timings (s)": json.dumps({k: round(v) for k, v in timings.items()}),
                        "generator steps (EMA weights)": f"{steps_done} of {fit_steps} (budget {fit_seconds} s)",
                        "torch threads": torch.get_num_threads()})
    log(f"demo: wrote {out / 'report.html'} (total {sum(timings.values()):.0f} s)")
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m apps.medseg.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/demo/medseg")
    ap.add_argument("--fit-steps", type=int, default=1000)
    ap.add_argument("--fit-seconds", type=int, default=200, help="training time budget of the generator")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    return run(Path(a.out), fit_steps=a.fit_steps, fit_seconds=a.fit_seconds)


if __name__ == "__main__":
    main()
