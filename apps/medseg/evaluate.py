"""``dualsci-medseg evaluate``: does a synthetic dataset help a real segmentation task, and is it faithful?

Protocol (all on 2-D slices at one size):
1. downstream: a MONAI UNet trained on ``few`` real slices (real-only), on the same slices plus
   ``r·few`` synthetic pairs for every ratio r (real + synthetic), and on synthetic pairs only;
   Dice and HD95 on held-out real slices; every setting over ≥ 3 seeds (the seed draws the real
   subset, the synthetic subset and the initialisation), mean ± sd;
2. alignment: a reference UNet trained on all real training slices segments the synthetic images;
   Dice against the synthetic masks. The reference is trained properly (Dice + CE, random affine and
   intensity augmentation, ``ref_steps`` steps, a wider UNet) and its own Dice on the real training
   slices and on the held-out real slices is reported: the held-out Dice is the ceiling of the
   alignment figure (a reference that cannot segment real slices cannot judge synthetic ones);
3. quality: Fréchet distance in the reference UNet's bottleneck feature space (synthetic vs held-out
   real, with the real-train vs held-out baseline for scale), per-label intensity/texture statistics;
4. memorisation: nearest-neighbour distances of synthetic images to the real training slices against
   the held-out-to-training baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from apps.medseg.data import SliceDataset, load_case
from apps.medseg.labels import LabelDict
from apps.medseg.layouts import LayoutError, read_dataset
from apps.medseg.metrics import (SegData, dice_hd95, frechet_distance, intensity_stats, memorisation, predict,
                                 train_segmenter, unet_features)
from apps.medseg.prompts import PromptVocab
from dualsci.io import output_dir_problem, write_json_atomic

#: UNet channels of the reference segmenter (the downstream UNets keep the small default).
REF_CHANNELS = (16, 32, 64, 128)


def find_dataset_root(path: str | Path) -> Path:
    """A layout root: ``path`` itself, or the first ``msd/*`` / ``nnunet/*`` folder of a generate output."""
    path = Path(path)
    if (path / "dataset.json").exists():
        return path
    for sub in ("msd", "nnunet"):
        found = sorted((path / sub).glob("*/dataset.json")) if (path / sub).exists() else []
        if found:
            return found[0].parent
    raise LayoutError(f"{path}: no dataset.json here nor under msd/*/ or nnunet/*/")


def load_slices(root: str | Path, names: Sequence[str], size: int, z_range=(0.0, 1.0),
                min_foreground: int = 1) -> tuple[SegData, LabelDict, list]:
    """Axial slices of a dataset, labels selected by ``names`` (ids 1..len(names)).

    ``min_foreground=0`` keeps slices with an empty mask (use it for generated datasets).
    """
    vols = _volumes(root, names)
    ds = SliceDataset(vols, PromptVocab(labels=tuple(names)), size=size, z_range=z_range,
                      min_foreground=min_foreground)
    return to_segdata(ds), vols[0].labels, vols


def _volumes(root: str | Path, names: Sequence[str]) -> list:
    idx = read_dataset(find_dataset_root(root))
    sel, lut = idx.labels.select(list(names))
    return [load_case(c.image, c.label, idx.labels, lut, sel, idx.modality) for c in idx.cases]


def to_segdata(ds: SliceDataset) -> SegData:
    return SegData(torch.stack([it.image for it in ds.items]), torch.stack([it.mask for it in ds.items]))


def split_real(vols: list, vocab: PromptVocab, size: int, held_out: float = 0.3) -> tuple[SegData, SegData]:
    """Training / held-out real slices: by case when there are several cases, else by z-range (top part held out)."""
    if len(vols) > 1:
        n_test = max(1, int(round(held_out * len(vols))))
        tr = SliceDataset(vols[:-n_test], vocab, size=size)
        te = SliceDataset(vols[-n_test:], vocab, size=size)
    else:
        tr = SliceDataset(vols, vocab, size=size, z_range=(0.0, 1.0 - held_out))
        te = SliceDataset(vols, vocab, size=size, z_range=(1.0 - held_out, 1.0))
    return to_segdata(tr), to_segdata(te)


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(np.nanmean(arr)), "sd": float(np.nanstd(arr, ddof=1)) if len(arr) > 1 else 0.0,
            "per_seed": [float(v) for v in arr]}


def run_evaluation(real_train: SegData, real_test: SegData, synth: SegData, names: Sequence[str],
                   seeds: Sequence[int] = (0, 1, 2), ratios: Sequence[float] = (0.5, 1.0, 2.0), few: int = 8,
                   steps: int = 200, spacing: float = 1.0, log=print, ref_steps: int = 600,
                   ref_channels: Sequence[int] = REF_CHANNELS) -> dict:
    """The whole protocol on in-memory slices; returns the result dict (see module docstring).

    ``steps``: training steps of every downstream UNet; ``ref_steps`` / ``ref_channels``: the reference
    segmenter of the alignment and feature metrics (trained with augmentation).
    """
    K = len(names)
    t0 = time.time()
    res: dict = {"n_real_train": len(real_train), "n_real_test": len(real_test), "n_synthetic": len(synth),
                 "few": few, "seeds": list(seeds), "ratios": list(ratios), "steps": steps, "labels": list(names),
                 "reference": {"steps": ref_steps, "channels": list(ref_channels), "augmentation": True,
                               "loss": "Dice + CE"}}
    # Reference segmenter (all real training slices): alignment, features.
    ref = train_segmenter(real_train, K, steps=ref_steps, seed=1000, channels=ref_channels, augmentation=True)
    res["reference_real_train"] = dice_hd95(predict(ref, real_train.images), real_train.masks, K, spacing)
    res["reference_real_test"] = dice_hd95(predict(ref, real_test.images), real_test.masks, K, spacing)
    align = dice_hd95(predict(ref, synth.images), synth.masks, K, spacing)
    res["alignment"] = align
    f_tr, f_te, f_sy = (unet_features(ref, d.images) for d in (real_train, real_test, synth))
    res["frechet"] = {"synthetic_vs_real_test": frechet_distance(f_sy, f_te),
                      "real_train_vs_real_test": frechet_distance(f_tr, f_te)}
    res["intensity"] = {"real": intensity_stats(real_train, names), "synthetic": intensity_stats(synth, names)}
    res["memorisation"] = memorisation(synth.images, real_train.images, real_test.images)
    log(f"evaluate: alignment Dice {align['dice']:.3f}; reference UNet Dice on real training slices "
        f"{res['reference_real_train']['dice']:.3f}, on held-out real slices {res['reference_real_test']['dice']:.3f} "
        f"(the ceiling of the alignment Dice) ({time.time() - t0:.0f} s)")
    # Downstream.
    settings = ["real_only"] + [f"real_plus_synthetic_x{r:g}" for r in ratios] + ["synthetic_only"]
    per: dict[str, dict[str, list]] = {s: {"dice": [], "hd95": []} for s in settings}
    few = min(few, len(real_train))
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        real = real_train.subset(torch.randperm(len(real_train), generator=g)[:few])
        perm_syn = torch.randperm(len(synth), generator=g)
        for s in settings:
            if s == "real_only":
                data = real
            elif s == "synthetic_only":
                data = synth.subset(perm_syn[: max(few, int(round(max(ratios) * few)))])
            else:
                r = float(s.split("_x")[1])
                data = SegData.cat([real, synth.subset(perm_syn[: int(round(r * few))])])
            net = train_segmenter(data, K, steps=steps, seed=seed)
            m = dice_hd95(predict(net, real_test.images), real_test.masks, K, spacing)
            per[s]["dice"].append(m["dice"])
            per[s]["hd95"].append(m["hd95"])
        log(f"evaluate: seed {seed}: " + ", ".join(f"{s} {per[s]['dice'][-1]:.3f}" for s in settings)
            + f" ({time.time() - t0:.0f} s)")
    res["downstream"] = {s: {"dice": _mean_sd(v["dice"]), "hd95": _mean_sd(v["hd95"])} for s, v in per.items()}
    head = f"real_plus_synthetic_x{1.0 if 1.0 in ratios else ratios[0]:g}"
    ro, rs = res["downstream"]["real_only"]["dice"], res["downstream"][head]["dice"]
    res["headline_setting"] = head
    res["downstream_gain_dice"] = rs["mean"] - ro["mean"]
    res["spreads_overlap"] = bool(rs["mean"] - rs["sd"] <= ro["mean"] + ro["sd"])
    res["seconds"] = time.time() - t0
    return res


class EvaluateError(ValueError):
    """Refused evaluate request (an output folder that holds an evaluation or other data)."""


def main(argv: list[str] | None = None) -> dict:
    """Evaluate a synthetic dataset against real data (downstream, alignment, quality, memorisation)."""
    from apps.medseg.data import DataError, LabelError

    a = _parser().parse_args(argv)
    try:
        return _run(a)
    except (DataError, LabelError, LayoutError, EvaluateError) as err:  # bad input: one line naming the file, exit 2
        print(f"dualsci-medseg evaluate: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dualsci-medseg evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", required=True, help="real dataset (MSD or nnU-Net v2 raw folder)")
    ap.add_argument("--real-test", default=None,
                    help="held-out real dataset (default: split --real by case, or by z-range for one case)")
    ap.add_argument("--synthetic", required=True, help="generate output folder or a layout root")
    ap.add_argument("--out", required=True, help="output folder (evaluation.json, report.html)")
    ap.add_argument("--labels", default=None, help="comma-separated label names (default: the synthetic dataset's)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--few", type=int, default=8, help="real training slices in the low-data settings")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ratios", default="0.5,1,2", help="synthetic:real ratios")
    ap.add_argument("--steps", type=int, default=200, help="UNet training steps per run")
    ap.add_argument("--ref-steps", type=int, default=600,
                    help="training steps of the reference segmenter (alignment, features; with augmentation)")
    ap.add_argument("--held-out", type=float, default=0.3)
    ap.add_argument("--force", action="store_true", help="replace an existing evaluation in --out")
    return ap


def options_problem(a: argparse.Namespace) -> str | None:
    """What is wrong with the numeric options, or None. Unchecked, ``--seeds 0`` wrote an evaluation
    without any downstream run, ``--steps 0`` scored untrained UNets, ``--ratios -1`` a negative share, and
    ``--ratios abc``, ``--few 0`` or a ``--size`` the UNets cannot halve ended in tracebacks."""
    stride = 2 ** (len(REF_CHANNELS) - 1)  # the reference UNet halves the slice this many times
    for name in ("seeds", "few", "steps", "ref_steps"):
        if getattr(a, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}"
    if a.size < 2 * stride or a.size % stride:
        return f"--size must be a multiple of {stride} and >= {2 * stride} (the UNets halve it), got {a.size}"
    try:
        ratios = [float(r) for r in a.ratios.split(",")]
    except ValueError:
        ratios = []
    if not ratios or not all(np.isfinite(r) and r > 0 for r in ratios):
        return f"--ratios must be comma-separated positive numbers, got {a.ratios!r}"
    if not 0 < a.held_out < 1:
        return f"--held-out must be a fraction between 0 and 1, got {a.held_out}"
    return None


def _run(a: argparse.Namespace) -> dict:
    """Read the datasets (every input error before ``--out`` is created), evaluate, write the report."""
    from apps.medseg.report import write_report

    out = Path(a.out)
    problem = output_dir_problem(out) or options_problem(a)  # before the minutes of training, not at the final mkdir
    if problem:
        raise EvaluateError(problem)
    if (out / "evaluation.json").exists() and not a.force:
        raise EvaluateError(f"{out}: already holds evaluation.json (use --force to replace it)")
    if out.exists() and any(p.name not in ("evaluation.json", "report.html", "figures") for p in out.iterdir()):
        raise EvaluateError(f"{out}: folder holds other data; choose an empty or new folder")
    syn_root = find_dataset_root(a.synthetic)
    syn_labels = read_dataset(syn_root).labels.as_dict()
    names = a.labels.split(",") if a.labels else list(syn_labels.foreground)
    synth, labels, _ = load_slices(syn_root, names, a.size, min_foreground=0)
    vols = _volumes(a.real, names)
    vocab = PromptVocab(labels=tuple(names))
    if a.real_test:
        real_train = to_segdata(SliceDataset(vols, vocab, size=a.size))
        real_test = to_segdata(SliceDataset(_volumes(a.real_test, names), vocab, size=a.size))
    else:
        real_train, real_test = split_real(vols, vocab, a.size, a.held_out)
    spacing = float(np.mean(vols[0].spacing[:2])) * max(vols[0].image.shape[:2]) / a.size
    res = run_evaluation(real_train, real_test, synth, labels.names, seeds=list(range(a.seeds)),
                         ratios=[float(r) for r in a.ratios.split(",")], few=a.few, steps=a.steps, spacing=spacing,
                         ref_steps=a.ref_steps)
    res.update({"real": str(a.real), "synthetic": str(a.synthetic)})
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "evaluation.json", res)  # strict JSON: NaN (a label missing from the held-out slices) -> null
    write_report(out, res, real_train, synth, labels.names, gen_dir=Path(a.synthetic))
    print(f"evaluate: wrote {out / 'evaluation.json'} and {out / 'report.html'}")
    return res


__all__ = ["run_evaluation", "load_slices", "split_real", "find_dataset_root", "main"]
