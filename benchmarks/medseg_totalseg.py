"""Benchmark: paired generation on the real TotalSegmentator CT, alignment and low-data downstream effect.

    python benchmarks/medseg_totalseg.py --image CT.nii.gz --label SEG.nii.gz --labels-json LABELS.json \
        --out outputs/bench/medseg_totalseg.json [--quick]

Protocol: liver, spleen, both kidneys and stomach; axial slices split by z-range into training (lower
70 %) and held-out (upper 30 %) slices. The generator (JCA dual-stream transformer, pixel space,
one-hot masks) trains on the training slices only; pairs are generated from the training slices'
prompts (label sets) through ``dualsci-medseg generate``'s code path (NIfTI layouts + manifest), then
evaluated with ``apps.medseg.evaluate.run_evaluation``: alignment Dice (UNet trained on all real
training slices, applied to the synthetic images) and downstream Dice on the held-out slices for
``few`` real slices alone vs the same slices + synthetic pairs (ratio 1 is the headline), ≥ 3 seeds.
Speed: pairs/s of the default 128² generator (``SPEED_CONFIG``) at 20 Euler steps with CFG on every
step (2 network rows per pair), with 1 and 2 torch threads.

JSON keys: alignment_dice, downstream_dice_real_only / downstream_dice_real_plus_synthetic
({"mean", "sd", "per_seed"}), downstream_gain_dice (Dice units; x100 = points), pairs_per_second
(128², 20 steps), plus the full evaluation, settings, timings and the machine load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.medseg.data import SliceDataset, load_case  # noqa: E402
from apps.medseg.evaluate import REF_CHANNELS, load_slices, run_evaluation, to_segdata  # noqa: E402
from apps.medseg.generate import generate, save_generator  # noqa: E402
from apps.medseg.metrics import SegData, augment, dice_hd95, predict, train_segmenter  # noqa: E402
from apps.medseg.labels import LabelDict  # noqa: E402
from apps.medseg.model import MedSegNet  # noqa: E402
from apps.medseg.objective import PairObjective  # noqa: E402
from apps.medseg.sampling import sample_pairs  # noqa: E402
from dualsci.io import write_json_atomic  # noqa: E402
from dualsci.training import bf16_supported  # noqa: E402

ORGANS = ["liver", "spleen", "kidney_left", "kidney_right", "stomach"]
ORGANS_WITH_BG = ["background", *ORGANS]  # class names of the segmenters (id 0 = background)
PRESETS = {
    "quick": dict(size=64, patch=4, dim=96, depth=3, heads=4, fit_steps=1200, batch=8, lr=1e-3, n_synthetic=24,
                  eval_steps=200, ref_steps=600, few=4, ratios=[1.0, 2.0], seeds=3, ema=0.999, lr_schedule="cosine"),
    # Full: 128 px; 7,000 generator steps is ~25 min at 1 thread on a 2-core AVX-512/AMX Xeon (0.215 s/step
    # measured); the 30-min budget guard stops earlier on a slower or loaded machine.
    "full": dict(size=128, patch=8, dim=96, depth=3, heads=4, fit_steps=7000, batch=8, lr=1e-3, n_synthetic=64,
                 eval_steps=300, ref_steps=1200, few=4, ratios=[0.5, 1.0, 2.0, 4.0], seeds=3, ema=0.999,
                 lr_schedule="cosine"),
}
#: The default 128² generator whose sampling speed is reported (same shape as configs/totalseg_ct.yaml).
SPEED_CONFIG = dict(size=128, patch=8, dim=96, depth=3, heads=4, batch=8)


def _source_labels(path: Path, key: str):
    obj = json.loads(Path(path).read_text())
    if key == "auto":
        nested = all(isinstance(v, dict) for v in obj.values())
        key = ("total" if "total" in obj else next(iter(obj))) if nested else None
    return LabelDict.from_json(path, key=key)


FIT_BUDGET_S = 30 * 60  # the benchmark's rule: generator training <= 30 min on 2 cores


def train_generator(data, net: MedSegNet, objective: PairObjective, steps: int, batch: int, lr: float,
                    seed: int = 0, log=print, budget_s: float = FIT_BUDGET_S, augmentation: bool = False,
                    ema: float | None = None, lr_schedule: str = "constant") -> list[float]:
    """Plain training loop (same objective as ``dualsci-medseg fit``), AdamW with a 50-step warm-up.

    Stops early when ``budget_s`` seconds have passed (a loaded host must not stretch the training
    budget); the number of steps actually done is ``len(returned losses)``. ``augmentation``: the same
    random affine warp (±10°, ±10 % scale, ±6 % shift; no flip, no intensity change) on image and mask of
    every training pair. ``lr_schedule``: ``"constant"`` after the warm-up, or ``"cosine"`` decay to 10 %
    of ``lr`` at ``steps``. ``ema``: decay of an exponential moving average of the weights (with the usual
    warm-up ``min(ema, (1 + n) / (10 + n))``), copied into ``net`` when training ends — the sampler then
    uses the averaged weights, as diffusion models usually do; None = the raw weights."""
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule: unknown {lr_schedule!r}; allowed: ['constant', 'cosine']")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)

    def factor(s: int) -> float:
        warm = min(1.0, (s + 1) / 50)
        if lr_schedule == "constant":
            return warm
        return warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    avg = [p.detach().clone() for p in net.parameters()] if ema else None
    n, losses, t0 = len(data), [], time.time()
    net.train()
    for step in range(steps):
        idx = torch.randint(0, n, (batch,), generator=g).tolist()
        items = [data[i] for i in idx]
        b = {k: torch.stack([it[k] for it in items]) for k in ("image", "mask", "prompt")}
        if augmentation:
            img, msk = augment(b["image"], b["mask"][:, None], g, intensity=0.0)
            b["image"], b["mask"] = img, msk[:, 0]
        loss = objective.loss(net, b)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if avg is not None:
            d = min(ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for a_, p_ in zip(avg, net.parameters()):
                    a_.lerp_(p_.detach(), 1 - d)
        losses.append(float(loss.detach()))
        if time.time() - t0 > budget_s:
            log(f"fit: time budget of {budget_s:.0f} s reached after {step + 1}/{steps} steps")
            break
        if (step + 1) % max(1, steps // 10) == 0:
            log(f"fit: step {step + 1}/{steps} loss {sum(losses[-50:]) / len(losses[-50:]):.4f} ({time.time() - t0:.0f} s)")
    if avg is not None:
        with torch.no_grad():
            for a_, p_ in zip(avg, net.parameters()):
                p_.copy_(a_)
    return losses


def pairs_per_second(size: int, patch: int, dim: int, depth: int, heads: int, steps: int = 20, batch: int = 8,
                     bf16: bool = False, threads: int | None = None, repeats: int = 2) -> float:
    """Sampling throughput (pairs/s) of a model of this shape: 20 Euler steps, CFG 2/2 on every step (two
    network rows per pair), decoded masks; the best of ``repeats`` timed runs after a warm-up (weights
    do not change the cost). ``threads``: torch intra-op threads for the measurement (restored after)."""
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        net = MedSegNet(labels=ORGANS, image_size=size, patch=patch, dim=dim, depth=depth, num_heads=heads).eval()
        obj = PairObjective()
        p = net.vocab.encode_batch([net.vocab.parse("CT liver spleen")] * batch)
        sample_pairs(net, obj, p[:2], [0, 1], steps=2, bf16=bf16)  # warm-up
        best = 0.0
        for _ in range(repeats):
            t = time.time()
            sample_pairs(net, obj, p, list(range(batch)), steps=steps, cfg_scale=(2.0, 2.0), bf16=bf16)
            best = max(best, batch / (time.time() - t))
        return best
    finally:
        torch.set_num_threads(old)


def select_guidance(net: MedSegNet, objective: PairObjective, train: SegData, prompts: list[str], names: list[str],
                    scales: list[float], n: int = 32, ref_steps: int = 600, log=print) -> dict:
    """Choose the CFG scale (same for both streams) without the held-out slices.

    A *checker* segmenter is trained on the real training slices exactly like the evaluation's reference
    but from another seed (2000 instead of 1000), so the choice does not fit the reporting reference's
    quirks; for every scale, ``n`` pairs are generated from the training prompts with seeds 10**6 + i
    (disjoint from the reported pairs' seeds 0..) and scored by the checker's Dice against their own
    masks (alignment). The scale with the best Dice wins (NaN, i.e. no foreground at all, ranks last).
    Nothing here reads a held-out slice.

    Returns:
        ``{"scale": best, "dice_by_scale": {scale: dice}, "n": n, "checker_seed": 2000, "checker_steps": ...}``.
    """
    checker = train_segmenter(train, len(names), steps=ref_steps, seed=2000, channels=REF_CHANNELS, augmentation=True)
    vecs = net.vocab.encode_batch([net.vocab.parse(prompts[i % len(prompts)]) for i in range(n)])
    seeds = [10**6 + i for i in range(n)]
    by_scale = {}
    for w in scales:
        imgs, msks = [], []
        for k in range(0, n, 8):
            img, msk = sample_pairs(net, objective, vecs[k:k + 8], seeds[k:k + 8], steps=20, cfg_scale=(w, w))
            imgs.append(img)
            msks.append(msk)
        imgs, msks = torch.cat(imgs), torch.cat(msks)
        by_scale[w] = dice_hd95(predict(checker, imgs), msks, len(names))["dice"]
        log(f"select guidance: scale {w:g}: checker alignment Dice {by_scale[w]:.3f} ({n} pairs)")
    # NaN (no foreground in any generated mask) ranks last; ties keep the first scale listed
    best = max(by_scale, key=lambda w: -1.0 if math.isnan(by_scale[w]) else by_scale[w])
    return {"scale": best, "dice_by_scale": {f"{w:g}": d for w, d in by_scale.items()}, "n": n,
            "checker_seed": 2000, "checker_steps": ref_steps,
            "rule": "argmax over scales of the checker segmenter's Dice on pairs with seeds 10**6+i; no held-out slice"}


def measure_speed() -> dict:
    """Pairs/s of ``SPEED_CONFIG`` with 1 and 2 threads, fp32 and (where ``bf16_supported()``) bf16 autocast.

    ``pairs_per_second`` is the fp32 figure (max over the thread counts): it holds on any CPU;
    ``pairs_per_second_bf16`` is the same with bf16 autocast (NaN where the CPU has no native bf16)."""
    sc = SPEED_CONFIG
    shape = (sc["size"], sc["patch"], sc["dim"], sc["depth"], sc["heads"])
    load_before = os.getloadavg()
    names = {1: "1_thread", 2: "2_threads"}
    pps = {names[n]: pairs_per_second(*shape, batch=sc["batch"], threads=n) for n in (1, 2)}
    bf = bf16_supported()
    pps_bf = {names[n]: pairs_per_second(*shape, batch=sc["batch"], threads=n, bf16=True) if bf else float("nan")
              for n in (1, 2)}
    return {"pairs_per_second": max(pps.values()), "pairs_per_second_by_threads": pps,
            "pairs_per_second_bf16": max(pps_bf.values()), "pairs_per_second_bf16_by_threads": pps_bf,
            "bf16_supported": bf, "pairs_per_second_loadavg": [load_before, os.getloadavg()],
            "pairs_per_second_setting": (f"{sc['size']}x{sc['size']}, 20 Euler steps, CFG 2/2 every step (2 rows/pair), "
                                         f"batch {sc['batch']}, patch {sc['patch']}, dim {sc['dim']}, depth {sc['depth']}; "
                                         "best of 2 runs; pairs_per_second = fp32, max over 1 and 2 threads; "
                                         "pairs_per_second_bf16 = the same under CPU bf16 autocast")}


def _print_speed(sp: dict) -> None:
    f, b = sp["pairs_per_second_by_threads"], sp["pairs_per_second_bf16_by_threads"]
    print(f"pairs/s at {SPEED_CONFIG['size']}², 20 steps, CFG: fp32 {f['1_thread']:.2f} (1 thread), "
          f"{f['2_threads']:.2f} (2 threads); bf16 {b['1_thread']:.2f} / {b['2_threads']:.2f} (target 1.0); "
          f"load {sp['pairs_per_second_loadavg'][0][0]:.1f} -> {sp['pairs_per_second_loadavg'][1][0]:.1f}")


def speed_only(out_path: str, argv: list[str] | None) -> dict:
    """``--speed-only``: :func:`measure_speed`, written to ``out_path``."""
    out = {**measure_speed(), "speed_config": SPEED_CONFIG,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__},
           "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}
    write_json_atomic(out_path, out)
    _print_speed(out)
    print(f"wrote {out_path}")
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image")
    ap.add_argument("--label")
    ap.add_argument("--labels-json")
    ap.add_argument("--speed-only", action="store_true",
                    help="only measure pairs/s of SPEED_CONFIG (1 and 2 threads); no data needed")
    ap.add_argument("--labels-key", default="auto", help="key of a nested label JSON ('auto': 'total')")
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--fit-steps", type=int, default=None, help="override the preset's generator steps")
    ap.add_argument("--eval-steps", type=int, default=None, help="override the preset's UNet training steps")
    ap.add_argument("--gen-augment", action="store_true", help="affine augmentation of the generator's training pairs")
    ap.add_argument("--ratios", default=None, help="override the preset's synthetic:real ratios, e.g. 1,2,4")
    ap.add_argument("--ref-steps", type=int, default=None, help="override the preset's reference UNet steps")
    ap.add_argument("--work", default=None, help="folder for the generated dataset (default: a temp folder)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads for training, generation and evaluation (default: torch's)")
    ap.add_argument("--ema", type=float, default=None, help="override the preset's EMA decay (0 = raw weights)")
    ap.add_argument("--lr-schedule", choices=["constant", "cosine"], default=None,
                    help="override the preset's generator learning-rate schedule")
    ap.add_argument("--cfg", type=float, default=2.0, help="CFG scale of both streams for the reported pairs")
    ap.add_argument("--select-cfg", default=None,
                    help="comma-separated CFG scales: choose among them on the training slices only (a checker "
                         "segmenter of another seed, pairs of other seeds; see select_guidance); overrides --cfg")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.speed_only:
        return speed_only(a.out, argv)
    if not (a.image and a.label and a.labels_json):
        ap.error("--image, --label and --labels-json are required (unless --speed-only)")
    cfg = dict(PRESETS["quick" if a.quick else "full"])
    if a.ref_steps:
        cfg["ref_steps"] = a.ref_steps
    if a.ratios:
        cfg["ratios"] = [float(r) for r in a.ratios.split(",")]
    cfg["gen_augment"] = bool(a.gen_augment)
    if a.fit_steps:
        cfg["fit_steps"] = a.fit_steps
    if a.eval_steps:
        cfg["eval_steps"] = a.eval_steps
    if a.ema is not None:
        cfg["ema"] = a.ema or None
    if a.lr_schedule:
        cfg["lr_schedule"] = a.lr_schedule
    t_all = time.time()
    timings: dict[str, float] = {}
    src = _source_labels(Path(a.labels_json), a.labels_key)
    sel, lut = src.select(ORGANS)
    vol = load_case(a.image, a.label, src, lut, sel, "CT")
    S = cfg["size"]
    net = MedSegNet(labels=ORGANS, image_size=S, patch=cfg["patch"], dim=cfg["dim"], depth=cfg["depth"],
                    num_heads=cfg["heads"])
    train_ds = SliceDataset([vol], net.vocab, size=S, z_range=(0.0, 0.7))
    test_ds = SliceDataset([vol], net.vocab, size=S, z_range=(0.7, 1.0))
    print(f"data: {len(train_ds)} training slices (z < 70 %), {len(test_ds)} held-out slices, {S} px")
    obj_args = {"prediction": "x0"}
    objective = PairObjective(**obj_args)
    t = time.time()
    losses = train_generator(train_ds, net, objective, cfg["fit_steps"], cfg["batch"], cfg["lr"],
                             augmentation=cfg["gen_augment"], ema=cfg["ema"], lr_schedule=cfg["lr_schedule"])
    timings["fit"] = time.time() - t

    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="medseg_bench_"))
    ckpt = save_generator(work / "generator.pt", net, {"labels": ORGANS, "image_size": S, "patch": cfg["patch"],
                                                      "dim": cfg["dim"], "depth": cfg["depth"], "num_heads": cfg["heads"]}, obj_args)
    prompts = sorted({it.prompt.text() for it in train_ds.items})  # the label sets seen in training
    n_per_prompt = -(-cfg["n_synthetic"] // len(prompts))
    guidance = {"scale": a.cfg, "selected": False}
    if a.select_cfg:
        t = time.time()
        guidance = {**select_guidance(net, objective, to_segdata(train_ds), prompts, ORGANS_WITH_BG,
                                      [float(w) for w in a.select_cfg.split(",")], ref_steps=cfg["ref_steps"]),
                    "selected": True}
        timings["select_cfg"] = time.time() - t
    t = time.time()
    pixel_mm = max(vol.spacing[:2]) * max(vol.image.shape[:2]) / S
    gen = generate(ckpt, prompts, work / "generated", n=n_per_prompt, steps=20, cfg=(guidance["scale"],) * 2, batch=8,
                   spacing=(pixel_mm, pixel_mm, vol.spacing[2]), progress=False)
    timings["generate"] = time.time() - t
    synth, labels, _ = load_slices(work / "generated", ORGANS, S, min_foreground=0)
    t = time.time()
    res = run_evaluation(to_segdata(train_ds), to_segdata(test_ds), synth, labels.names,
                         seeds=list(range(cfg["seeds"])), ratios=cfg["ratios"], few=cfg["few"],
                         steps=cfg["eval_steps"], spacing=pixel_mm, ref_steps=cfg["ref_steps"])
    timings["evaluate"] = time.time() - t
    t = time.time()
    speed = measure_speed()
    timings["speed"] = time.time() - t
    head = res["headline_setting"]
    out = {
        "alignment_dice": res["alignment"]["dice"],
        "downstream_dice_real_only": res["downstream"]["real_only"]["dice"],
        "downstream_dice_real_plus_synthetic": res["downstream"][head]["dice"],
        "downstream_gain_dice": res["downstream_gain_dice"],
        "downstream_gain_dice_points": 100 * res["downstream_gain_dice"],
        "seed_spreads_overlap": res["spreads_overlap"],
        "alignment_reference_dice_real_train": res["reference_real_train"]["dice"],
        "alignment_reference_dice_real_heldout": res["reference_real_test"]["dice"],
        **speed,
        "pairs_per_second_trained_model_incl_writing": gen["pairs_per_second"],
        "targets": {"alignment_dice": 0.8, "downstream_gain_dice": 0.03, "pairs_per_second": 1.0},
        "guidance": guidance,
        "preset": "quick" if a.quick else "full", "settings": cfg, "headline_setting": head,
        "final_train_loss": sum(losses[-50:]) / len(losses[-50:]), "fit_steps_done": len(losses),
        "evaluation": res, "timings_seconds": timings, "total_seconds": time.time() - t_all,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "loadavg_at_end": os.getloadavg(), "torch": torch.__version__},
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "generated_dir": str(work / "generated"),
    }
    write_json_atomic(a.out, out)
    ro, rs = out["downstream_dice_real_only"], out["downstream_dice_real_plus_synthetic"]
    print(f"alignment Dice {out['alignment_dice']:.3f} (target 0.8); reference UNet Dice on real training slices "
          f"{out['alignment_reference_dice_real_train']:.3f}, held-out {out['alignment_reference_dice_real_heldout']:.3f}")
    print(f"downstream Dice real-only {ro['mean']:.3f} ± {ro['sd']:.3f}, real+synthetic ({head}) "
          f"{rs['mean']:.3f} ± {rs['sd']:.3f}, gain {100 * out['downstream_gain_dice']:+.1f} points (target +3)")
    _print_speed(speed)
    print(f"wrote {a.out}; command: {out['command']}")
    return out


if __name__ == "__main__":
    main()
