"""Clinical statistics over a segmentation run: agreement (incl. ICC), patient bootstrap, strata.

Definitions (numpy only, written here; stated in every output):
- **Agreement** of paired values (method vs reference): MAE, bias = mean(pred − ref), Bland–Altman
  limits ``bias ± 1.96·SD(diff)`` (SD with n − 1), Pearson r, and the intraclass correlation in two
  Shrout & Fleiss (1979) forms, from the two-way ANOVA of the ``(n subjects, k = 2 raters)`` table:

  - **ICC(2,1)** (two-way random effects, absolute agreement, single rater) — the headline figure:
    ``(MSR − MSE) / (MSR + (k−1)·MSE + k·(MSC − MSE)/n)``; a constant bias lowers it.
  - **ICC(3,1)** (two-way mixed, consistency, single rater): ``(MSR − MSE) / (MSR + (k−1)·MSE)``;
    blind to a constant bias.

  with ``MSR = k·Σ_i (x̄_i· − x̄)² / (n−1)`` (subjects), ``MSC = n·Σ_j (x̄_·j − x̄)² / (k−1)`` (raters),
  ``MSE = (SST − SSR − SSC) / ((n−1)(k−1))``.
- **Bootstrap** 5–95 % intervals: 10,000 resamples (default) of *patients* with replacement (all
  images of a drawn patient come along), seeded; percentile intervals of per-image mean Dice, pooled
  Dice ``2ΣI/Σ(|P|+|G|)`` and EF MAE.
- **Strata**: all images, ED, ES, and CAMUS ImageQuality Good / Medium / Poor (per view, from
  ``Info_<view>.cfg``; for a patient's biplane EF the worse of its two views).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Literal, Sequence

import numpy as np

ICC_FORMS = ("2,1", "3,1")
QUALITY_ORDER = ("Good", "Medium", "Poor")


def icc(ratings: np.ndarray, form: Literal["2,1", "3,1"] = "2,1") -> float:
    """Shrout & Fleiss ICC of ``ratings: (n subjects, k raters)``; NaN when undefined (n < 2 or no spread)."""
    if form not in ICC_FORMS:
        raise ValueError(f"form must be one of {ICC_FORMS}, got {form!r}")
    x = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"ratings must be (n subjects, k >= 2 raters), got shape {x.shape}")
    n, k = x.shape
    if n < 2:
        return math.nan
    grand = x.mean()
    ssr = k * ((x.mean(1) - grand) ** 2).sum()
    ssc = n * ((x.mean(0) - grand) ** 2).sum()
    sse = ((x - grand) ** 2).sum() - ssr - ssc
    msr, msc, mse = ssr / (n - 1), ssc / (k - 1), sse / ((n - 1) * (k - 1))
    den = msr + (k - 1) * mse + (k * (msc - mse) / n if form == "2,1" else 0.0)
    return float((msr - mse) / den) if den > 0 else math.nan


def agreement(pred: Sequence[float], ref: Sequence[float]) -> dict[str, float]:
    """MAE, bias, Bland–Altman limits, Pearson r, ICC(2,1) and ICC(3,1) of paired values (NaN pairs dropped)."""
    p, r = np.asarray(pred, float), np.asarray(ref, float)
    ok = np.isfinite(p) & np.isfinite(r)
    p, r = p[ok], r[ok]
    if len(p) == 0:
        return {"n": 0}
    from apps.echo.metrics import agreement as basic  # MAE, bias, limits, Pearson r

    pair = np.stack([p, r], axis=1)
    return {**basic(p, r), "icc_2_1": icc(pair, "2,1"), "icc_3_1": icc(pair, "3,1")}


def bootstrap_by_patient(per_image: list[dict], per_patient_ef: list[dict], n_boot: int = 10_000, seed: int = 0,
                         q: tuple[float, float] = (5.0, 95.0)) -> dict[str, dict]:
    """Percentile intervals from resampling patients with replacement.

    Args:
        per_image: rows with ``patient``, ``dice`` and (for pooled Dice) ``inter_px``, ``pred_px``, ``gt_px``.
        per_patient_ef: rows with ``patient`` and ``abs_err`` (one EF error per patient).

    Returns ``{"dice_mean" | "dice_pooled" | "ef_mae": {"value", "low", "high", "n_patients"}}`` (keys
    present when there is data); every statistic uses the same patient draws.
    """
    rows = [r for r in per_image if r.get("dice") is not None and np.isfinite(r["dice"])]
    efs = [e for e in per_patient_ef if e.get("abs_err") is not None and np.isfinite(e["abs_err"])]
    patients = sorted({r["patient"] for r in rows} | {e["patient"] for e in efs})
    if not patients:
        return {}
    index = {p: i for i, p in enumerate(patients)}
    P = len(patients)
    agg = defaultdict(lambda: np.zeros(P))
    for r in rows:
        i = index[r["patient"]]
        agg["dice_sum"][i] += r["dice"]
        agg["n_img"][i] += 1
        if r.get("inter_px") is not None:
            agg["inter"][i] += r["inter_px"]
            agg["size"][i] += r["pred_px"] + r["gt_px"]
            agg["n_pooled"][i] += 1
    for e in efs:
        agg["ef_err"][index[e["patient"]]] += e["abs_err"]
        agg["n_ef"][index[e["patient"]]] += 1
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(P, np.full(P, 1.0 / P), size=n_boot).astype(np.float64)  # (n_boot, P)
    out: dict[str, dict] = {}

    def ratio(num: np.ndarray, den: np.ndarray, scale: float = 1.0) -> dict | None:
        if den.sum() == 0:
            return None
        d = counts @ den
        boot = scale * (counts @ num)[d > 0] / d[d > 0]  # draws with no such data are skipped
        lo, hi = np.percentile(boot, q)
        return {"value": float(scale * num.sum() / den.sum()), "low": float(lo), "high": float(hi),
                "n_patients": int((den > 0).sum()), "resamples": int(len(boot))}

    for key, num, den, scale in (("dice_mean", agg["dice_sum"], agg["n_img"], 1.0),
                                 ("dice_pooled", agg["inter"], agg["size"], 2.0),
                                 ("ef_mae", agg["ef_err"], agg["n_ef"], 1.0)):
        res = ratio(num, den, scale)
        if res is not None:
            out[key] = res
    return out


def worse_quality(qualities: Sequence[str | None]) -> str | None:
    """The worse of CAMUS ImageQuality labels (Poor < Medium < Good); None if none is known."""
    known = [q for q in qualities if q in QUALITY_ORDER]
    return max(known, key=QUALITY_ORDER.index) if known else None


def strata(per_image: list[dict], per_patient: list[dict], n_boot: int = 10_000, seed: int = 0) -> list[dict]:
    """One row per stratum (all, ED, ES, quality Good/Medium/Poor) with n, Dice mean ± SD, pooled Dice,
    HD95 mean, the patient-bootstrap 5–95 % intervals, and for quality strata the EF MAE of the patients
    whose worse view has that quality. ``per_patient`` rows: ``patient``, ``image_quality``, ``abs_err``."""
    groups: list[tuple[str, list[dict], list[dict]]] = [("all", per_image, per_patient)]
    for phase in ("ED", "ES"):
        groups.append((f"phase={phase}", [r for r in per_image if r.get("role") == phase], []))
    for qual in QUALITY_ORDER:
        groups.append((f"quality={qual}", [r for r in per_image if r.get("image_quality") == qual],
                       [p for p in per_patient if p.get("image_quality") == qual]))
    table = []
    for name, imgs, pats in groups:
        dices = np.array([r["dice"] for r in imgs if r.get("dice") is not None and np.isfinite(r["dice"])])
        if len(dices) == 0 and not pats:
            continue
        hd = np.array([r["hd95_mm"] for r in imgs if r.get("hd95_mm") is not None and np.isfinite(r["hd95_mm"])])
        boot = bootstrap_by_patient(imgs, pats, n_boot=n_boot, seed=seed)
        scored = {r["patient"] for r in imgs if r.get("dice") is not None and np.isfinite(r["dice"])}
        row = {"stratum": name, "n_images": int(len(dices)), "n_patients": len(scored | {p["patient"] for p in pats}),
               "dice_mean": float(dices.mean()) if len(dices) else math.nan,
               "dice_sd": float(dices.std(ddof=1)) if len(dices) > 1 else math.nan,
               "hd95_mean_mm": float(hd.mean()) if len(hd) else math.nan}
        for key in ("dice_mean", "dice_pooled", "ef_mae"):
            if key in boot:
                row[key] = boot[key]["value"]
                row[f"{key}_p5"], row[f"{key}_p95"] = boot[key]["low"], boot[key]["high"]
        if pats:
            row["n_ef"] = sum(1 for p in pats if p.get("abs_err") is not None and np.isfinite(p["abs_err"]))
        table.append(row)
    return table


def pct_error(pred: float | None, ref: float | None) -> float:
    """``100·(pred − ref)/ref``; NaN when either is missing or ref ≤ 0."""
    if pred is None or ref is None or not np.isfinite(pred) or not np.isfinite(ref) or ref <= 0:
        return math.nan
    return float(100.0 * (pred - ref) / ref)


def clinical_summary(records: list[dict], patients: list[dict], n_boot: int = 10_000, seed: int = 0) -> dict:
    """Everything above for one run: ``{"agreement", "bootstrap", "strata", "volumes", "definitions"}``.

    ``records``: per-case records (``per_frame`` rows with Dice etc., ``patient``, ``image_quality``);
    ``patients``: biplane rows (``ef``, ``ef_reference``, ``edv``/``esv`` and their references).
    """
    per_image = [{"patient": r.get("patient", r["name"]), "image_quality": r.get("image_quality"), **row}
                 for r in records for row in r["per_frame"]]
    per_patient = []
    for p in patients:
        ref = p.get("ef_reference")
        err = abs(p["ef"] - ref) if p.get("ef") is not None and ref is not None and np.isfinite(ref) else math.nan
        per_patient.append({"patient": p["patient"], "image_quality": p.get("image_quality"), "abs_err": err})
    paired = [(p.get("ef"), p.get("ef_reference")) for p in patients]
    ef_agree = agreement([a if a is not None else math.nan for a, _ in paired],
                         [b if b is not None else math.nan for _, b in paired]) if paired else {"n": 0}
    vol = {}
    for key in ("edv", "esv"):
        errs = np.array([p.get(f"{key}_pct_error", math.nan) for p in patients], float)
        errs = errs[np.isfinite(errs)]
        if len(errs):
            vol[key] = {"n": int(len(errs)), "mean_pct_error": float(errs.mean()),
                        "mean_abs_pct_error": float(np.abs(errs).mean())}
    return {"agreement_ef": ef_agree,
            "bootstrap": bootstrap_by_patient(per_image, per_patient, n_boot=n_boot, seed=seed),
            "strata": strata(per_image, per_patient, n_boot=n_boot, seed=seed),
            "volumes": vol,
            "definitions": {
                "icc": "ICC(2,1) two-way random, absolute agreement, single rater; ICC(3,1) two-way mixed, "
                       "consistency, single rater (Shrout & Fleiss 1979); EF method vs reference EF",
                "bland_altman": "bias ± 1.96·SD(pred − ref), SD with n − 1",
                "bootstrap": f"{n_boot} resamples of patients with replacement, seed {seed}, 5–95 % percentiles",
                "dice_pooled": "2·ΣI / Σ(|P| + |G|) over images (native pixels)",
                "quality_strata": "CAMUS ImageQuality of the image's view; patient EF: the worse of 2CH/4CH",
                "volume_pct_error": "100·(V_pred − V_ref)/V_ref; V_ref = cfg LVedv/LVesv (CAMUS 2019) else biplane "
                                    "Simpson of the reference masks (same code)"}}
