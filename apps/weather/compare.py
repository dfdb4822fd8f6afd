"""A forecast against a baseline forecast on the same cases, with paired bootstrap intervals: WB2-style scorecards.

Why: "is model A better than model B" (a new net against the last one, latent against pixel, calibrated against raw)
is the question a forecaster asks after two evaluations, and a difference of a few percent over a few weeks of
inits is often noise. :func:`compare` reads the ``per_init.csv`` of two ``evaluate`` output folders, keeps the
(channel, lead, region, init) cases both scored, and reports per (channel, lead, region):

* RMSE skill ``1 − RMSE_A / RMSE_B`` (RMSE = √ of the mean of the per-init area-mean MSE, as in ``scores.json``)
  and, for ensembles, CRPS skill ``1 − CRPS_A / CRPS_B`` (fair CRPS, init-mean);
* a paired bootstrap interval for each: whole init days are resampled with replacement, the same days for A and B
  (pairing removes the weather both forecasts share) and for every key, so neighbouring inits, which share
  weather, move together (a block bootstrap with blocks of one calendar day of inits). ``significant`` means the
  interval excludes 0.

Outputs: ``comparison.json``, ``comparison.csv`` and ``scorecard.html`` (per region, channel × lead, green where A
is better, red where worse, bold where significant).
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import pandas as pd

from apps.weather.data import WeatherDataError
from dualsci.io import atomic_write, write_json_atomic

KEYS = ["variable", "lead_hours", "region"]


def _per_init(folder: str | os.PathLike) -> pd.DataFrame:
    path = Path(folder) / "per_init.csv"
    if not path.is_file():
        raise WeatherDataError(str(folder), "no per_init.csv: not an evaluate output folder, or one written before "
                                            "per-init scores existed (evaluate the forecast again)")
    table = pd.read_csv(path)
    missing = sorted({"init", "mse", "crps", *KEYS} - set(table.columns))
    if missing:
        raise WeatherDataError(str(path), f"columns {missing} missing")
    return table


def _skill(a: np.ndarray, b: np.ndarray, root: bool) -> np.ndarray:
    """1 − A/B along the last axis after the mean over inits (√ first for MSE)."""
    ma, mb = a.mean(-1), b.mean(-1)
    if root:
        ma, mb = np.sqrt(ma), np.sqrt(mb)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - ma / mb


def compare(forecast_dir: str | os.PathLike, baseline_dir: str | os.PathLike, out_dir: str | os.PathLike,
            n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Skill of the forecast evaluated in ``forecast_dir`` against the one in ``baseline_dir`` (module docstring).

    Args:
        forecast_dir, baseline_dir: ``evaluate`` output folders (their ``per_init.csv``).
        out_dir: where ``comparison.json``, ``comparison.csv`` and ``scorecard.html`` go.
        n_boot: bootstrap resamples; level: the intervals' coverage; seed: the resampling's seed.

    Returns:
        The JSON-able result: ``rows`` (one per channel, lead and region) and what was matched.
    """
    if n_boot < 10 or not 0.5 < level < 1.0:
        raise ValueError(f"n_boot={n_boot} must be >= 10 and level={level} in (0.5, 1)")
    a, b = _per_init(forecast_dir), _per_init(baseline_dir)
    joined = a.merge(b, on=[*KEYS, "init"], suffixes=("", "_baseline"))
    if joined.empty:
        raise WeatherDataError(str(forecast_dir), f"no (channel, lead, region, init) case in common with {baseline_dir}")
    inits = sorted(joined["init"].unique())
    days = sorted({i[:10] for i in inits})
    day_index = {d: k for k, d in enumerate(days)}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(days), size=(n_boot, len(days)))  # the same day draws for every key
    tail = (1.0 - level) / 2.0
    rows = []
    for key, group in joined.groupby(KEYS, sort=True):
        group = group.sort_values("init")
        day_of = np.array([day_index[i[:10]] for i in group["init"]])
        # per bootstrap draw, how often each init is taken: its day's count in the draw
        counts = np.stack([np.bincount(d, minlength=len(days))[day_of] for d in draws])  # (n_boot, n_inits)
        row = dict(zip(KEYS, (key[0], int(key[1]), key[2])), n_inits=len(group), n_days=len(set(day_of)))
        for name, root in (("rmse", True), ("crps", False)):
            col = "mse" if root else "crps"
            va, vb = group[col].to_numpy(float), group[f"{col}_baseline"].to_numpy(float)
            if not (np.isfinite(va).all() and np.isfinite(vb).all()):
                row.update({name: float("nan"), f"{name}_baseline": float("nan"), f"{name}_skill": float("nan"),
                            f"{name}_skill_low": float("nan"), f"{name}_skill_high": float("nan")})
                continue
            skill = float(_skill(va, vb, root))
            weights = counts / counts.sum(1, keepdims=True)
            ma, mb = weights @ va, weights @ vb  # the resampled init-means
            boot = 1.0 - (np.sqrt(ma / mb) if root else ma / mb)
            low, high = np.quantile(boot[np.isfinite(boot)], [tail, 1.0 - tail])
            row.update({name: float(np.sqrt(va.mean()) if root else va.mean()),
                        f"{name}_baseline": float(np.sqrt(vb.mean()) if root else vb.mean()),
                        f"{name}_skill": skill, f"{name}_skill_low": float(low), f"{name}_skill_high": float(high)})
        row["significant"] = bool(np.isfinite(row["rmse_skill_low"]) and (row["rmse_skill_low"] > 0 or row["rmse_skill_high"] < 0))
        rows.append(row)
    result = {
        "forecast": str(forecast_dir), "baseline": str(baseline_dir),
        "cases_forecast": len(a), "cases_baseline": len(b), "cases_matched": len(joined),
        "inits": len(inits), "init_days": len(days), "n_boot": n_boot, "level": level, "seed": seed,
        "bootstrap": "paired, whole init days resampled with replacement, the same draws for every key",
        "rows": rows,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "comparison.json", result)
    with atomic_write(out / "comparison.csv", "w", newline="") as f:
        pd.DataFrame(rows).to_csv(f, index=False)
    with atomic_write(out / "scorecard.html", "w", encoding="utf-8") as f:
        f.write(scorecard_page(result))
    return result


def scorecard_page(result: dict) -> str:
    """The HTML scorecard of a comparison: RMSE skill (and its interval) per region, channel and lead."""
    from apps.weather.report import _skill_colour

    rows = result["rows"]
    leads = sorted({r["lead_hours"] for r in rows})
    head = "".join(f"<th>+{lead} h</th>" for lead in leads)
    blocks = []
    for region in dict.fromkeys(r["region"] for r in rows):
        cells = {(r["variable"], r["lead_hours"]): r for r in rows if r["region"] == region}
        body = ""
        for ch in dict.fromkeys(v for v, _ in cells):
            tds = ""
            for lead in leads:
                r = cells.get((ch, lead))
                if r is None or not np.isfinite(r["rmse_skill"]):
                    tds += "<td>–</td>"
                    continue
                text = f"{100 * r['rmse_skill']:+.1f} %<br><small>[{100 * r['rmse_skill_low']:+.1f}, {100 * r['rmse_skill_high']:+.1f}]</small>"
                text = f"<b>{text}</b>" if r["significant"] else text
                tds += f"<td style='background:{_skill_colour(r['rmse_skill'])}'>{text}</td>"
            body += f"<tr><td>{html.escape(ch)}</td>{tds}</tr>"
        blocks.append(f"<h2>{html.escape(region)}</h2><table><tr><th>channel</th>{head}</tr>{body}</table>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>scorecard</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:3px 8px;text-align:center}</style></head><body>"
        f"<h1>RMSE skill of {html.escape(result['forecast'])} against {html.escape(result['baseline'])}</h1>"
        f"<p>1 − RMSE / RMSE<sub>baseline</sub> on {result['inits']} common inits over {result['init_days']} day(s); "
        f"[{100 * result['level']:.0f} % paired bootstrap interval, whole init days resampled, {result['n_boot']} draws]; "
        "bold: the interval excludes 0.</p>" + "".join(blocks) + "</body></html>\n"
    )
