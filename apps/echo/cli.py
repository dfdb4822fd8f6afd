"""``dualsci-echo``: LightningCLI ``fit | validate | test | predict`` plus the app verbs ``segment`` and ``synth``.

    dualsci-echo fit                                   # configs/demo.yaml: phantom data, CPU-sized
    dualsci-echo fit --config apps/echo/configs/camus.yaml --data.init_args.root /data/CAMUS_public
    dualsci-echo segment FILES... --ckpt last.ckpt --out results/
    dualsci-echo synth --out phantom/ --layout camus2023 --patients 50
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def segment_parser() -> argparse.ArgumentParser:
    from apps.echo.sampling import FUSIONS

    p = argparse.ArgumentParser(prog="dualsci-echo segment", description=segment_main.__doc__)
    p.add_argument("files", nargs="+", help=".mhd / .nii.gz images or sequences, .avi/.mp4 videos, .png/.jpg")
    p.add_argument("--ckpt", required=True, help="checkpoint written by `dualsci-echo fit`")
    p.add_argument("--out", required=True, help="output folder (created atomically)")
    p.add_argument("--steps", type=int, default=20, help="sampler steps per chain (default 20)")
    p.add_argument("--members", type=int, default=5, help="ensemble size K (default 5)")
    p.add_argument("--fusion", choices=FUSIONS, default="mean")
    p.add_argument("--weights", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("W_GAUSS", "W_BERN", "W_CAL"),
                   help="mean-fusion weights of the Gaussian chain, Bernoulli chain and calibration head (default 1 1 1)")
    p.add_argument("--seed", type=int, default=0, help="ensemble seed (member k uses (seed, k)) and bootstrap seed")
    p.add_argument("--bootstrap", type=int, default=10_000, help="patient resamples for the 5-95%% intervals")
    p.add_argument("--overwrite", action="store_true")
    return p


def run_segment(files, ckpt, out, steps=20, members=5, fusion="mean", seed=0, overwrite=False,
                weights=(1.0, 1.0, 1.0), n_boot: int = 10_000) -> dict:
    """Segment ``files`` into ``out`` (atomic); returns ``{"records", "patients", "summary", "clinical"}``
    (``clinical``: :func:`apps.echo.stats.clinical_summary`, bootstrap with ``n_boot`` patient resamples).

    Raises ``InputError`` before writing anything when an input or the checkpoint is bad.
    """
    from apps.echo.pipeline import (biplane_from_cases, check_out, check_unique_names, load_model, read_input,
                                    segment_input)
    from apps.echo.report import write_case, write_report, write_tables
    from dualsci.io import atomic_dir

    configure_threads()
    check_out(out, overwrite)  # before the work: the folder is only made at the end
    items = [read_input(f) for f in files]  # read everything first: nothing is written on bad input
    check_unique_names(items)
    net, objective, config = load_model(ckpt)
    size = int(config["data"]["init_args"].get("image_size", 128))
    t0 = time.perf_counter()
    results = []
    for item in items:
        t = time.perf_counter()
        res = segment_input(net, objective, item, size, steps, members, fusion, seed, weights)
        res["record"]["seconds"] = time.perf_counter() - t
        res["item"] = item
        results.append(res)
        print(f"{item.name}: {len(res['record']['frame_indices'])} frame(s) in {res['record']['seconds']:.1f} s")
    patients = biplane_from_cases(results)
    records = [r["record"] for r in results]
    dices = [row["dice"] for r in records for row in r["per_frame"] if row.get("dice") is not None]
    summary = {"inputs": len(items), "checkpoint": str(ckpt), "steps": steps, "members": members, "fusion": fusion,
               "fusion weights (G, B, cal)": " ".join(f"{w:g}" for w in weights),
               "image_size": size, "seconds_total": time.perf_counter() - t0,
               "mean_dice": sum(dices) / len(dices) if dices else None}
    from apps.echo.stats import clinical_summary

    clinical = clinical_summary(records, patients, n_boot=n_boot, seed=seed)
    a = clinical["agreement_ef"]
    if a.get("n"):
        summary.update({"EF MAE vs cfg EF (biplane)": a["mae"], "EF bias": a["bias"],
                        "EF Bland-Altman limits": f"{a['loa_low']:.1f} .. {a['loa_high']:.1f}",
                        "EF ICC(2,1)": a["icc_2_1"], "EF pairs": a["n"]})
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for r in results:
            write_case(tmp, r)
        write_tables(tmp, records, patients, clinical)
        write_report(tmp, records, patients, summary, title="dualsci echo: LV segmentation", clinical=clinical)
    return {"records": records, "patients": patients, "summary": summary, "results": results, "clinical": clinical}


def segment_main(argv: Sequence[str]) -> int:
    """Segment images, sequences or videos: NIfTI maps, overlays, per-case CSV/JSON, EF, report.html."""
    from apps.echo.pipeline import InputError

    args = segment_parser().parse_args(list(argv))
    try:
        if args.bootstrap < 1:
            raise ValueError(f"--bootstrap must be >= 1, got {args.bootstrap}")
        run_segment(args.files, args.ckpt, args.out, args.steps, args.members, args.fusion, args.seed, args.overwrite,
                    tuple(args.weights), n_boot=args.bootstrap)
    except (InputError, FileExistsError, ValueError) as err:
        print(f"dualsci-echo segment: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/report.html, cases.csv, cases.json")
    return 0


def configure_threads() -> int:
    """Intra-op threads: ``$DUALSCI_ECHO_THREADS`` if set; else 1 when the machine is oversubscribed
    (1-minute load ≥ cores: measured here, 2 threads were 5–15× slower than 1 on a busy 2-core box),
    else the core count (at most 2 unless ``OMP_NUM_THREADS`` says otherwise)."""
    import os

    import torch

    env = os.environ.get("DUALSCI_ECHO_THREADS")
    cores = os.cpu_count() or 1
    if env:
        n = int(env)
    elif hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores:
        n = 1
    else:
        n = int(os.environ.get("OMP_NUM_THREADS", min(2, cores)))
    torch.set_num_threads(max(1, n))
    os.environ.setdefault("OMP_NUM_THREADS", str(n))  # keeps Lightning from resetting the count
    return n


def synth_main(argv: Sequence[str]) -> int:
    """Write phantom data in a real layout: camus2019, camus2023 or echonet."""
    from apps.echo.pipeline import InputError, check_out
    from apps.echo.writers import write_camus_2019, write_camus_2023, write_echonet

    p = argparse.ArgumentParser(prog="dualsci-echo synth", description=synth_main.__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--layout", choices=("camus2019", "camus2023", "echonet"), default="camus2023")
    p.add_argument("--patients", type=int, default=20, help="patients (CAMUS) or videos (EchoNet)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=208)
    args = p.parse_args(list(argv))
    try:
        # --patients 0 wrote an empty dataset, --height 0 ended in a ZeroDivisionError traceback
        if args.patients < 1 or min(args.height, args.width) < 16:
            raise InputError(f"--patients must be >= 1 and --height/--width >= 16 px, got {args.patients}, "
                             f"{args.height}, {args.width}")
        if not Path(args.out).is_dir():  # an existing folder is refused by the writer (no overwrite here)
            check_out(args.out)
        if args.layout == "camus2019":
            write_camus_2019(args.out, args.patients, args.seed, (args.height, args.width))
        elif args.layout == "camus2023":
            write_camus_2023(args.out, args.patients, args.seed, (args.height, args.width))
        else:
            write_echonet(args.out, args.patients, args.seed)
    except (FileExistsError, InputError) as err:
        print(f"dualsci-echo synth: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.layout} phantom data to {args.out}")
    return 0


def main(args: Sequence[str] | None = None):
    """Entry point of ``dualsci-echo``; as a console script a bad dataset prints one line and exits 2."""
    from apps.echo.camus import CamusError
    from apps.echo.data import EchoDataModule
    from apps.echo.echonet import EchoNetError
    from apps.echo.pipeline import InputError
    from dualsci.training import DiffusionModule, build_cli, console_main

    configure_threads()
    result = console_main(lambda: build_cli(DiffusionModule, EchoDataModule, args=args,
                                            default_config_files=[CONFIG_DIR / "demo.yaml"], prog="dualsci-echo",
                                            extra_subcommands={"segment": segment_main, "synth": synth_main}),
                          args, (CamusError, EchoNetError, InputError))
    if isinstance(result, int) and result != 0:
        sys.exit(result)  # a failed verb exits non-zero whoever called it (as before)
    return result


if __name__ == "__main__":
    main()
