"""The evaluation report: scores against lead, rank histograms, mean/spread maps, stamps, spaghetti."""

from __future__ import annotations

import html
import warnings
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from dualsci.io import atomic_write  # noqa: E402


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path.name


def _field(ds: xr.Dataset, ch: str) -> xr.DataArray:
    v, _, lv = ch.partition("/")
    return ds[v].sel(level=float(lv)) if lv else ds[v]


def _resolution_text(result: dict) -> str:
    """`` (1.5°×1.5°, valid 2020-01-01T06 .. 2020-12-31T12)`` from an evaluation result (empty when absent)."""
    res, period = result.get("resolution_deg"), result.get("verification_period")
    if not res or None in res or not period:
        return ""
    return html.escape(f" ({res[0]:g}°×{res[1]:g}°, valid {period[0]} .. {period[1]})")


def _clim_text(c: dict) -> str:
    if c.get("kind") == "wb2_file":
        return f"climatology from the WB2 file {html.escape(c['source'])}"
    return f"climatology harmonics {c['harmonics']} over {html.escape(' .. '.join(c['period']))}"


def _cyclone_section(cy: dict, figs: Path) -> str:
    """Track map (observed vs members vs ensemble-mean field over strike probability) and error table."""
    from apps.weather.track_plot import draw_tracks

    name = draw_tracks(cy, figs / "tracks.png").name
    rows = ""
    if "mean_field_error_km" in cy:
        along = np.asarray(cy["member_along_km"], float)
        cross = np.asarray(cy["member_cross_km"], float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns where every member lost the track
            m_tot = np.nanmean(np.asarray(cy["member_error_km"], float), axis=0)
            m_at, m_xt = np.nanmean(along, axis=0), np.nanmean(cross, axis=0)
        for t, v in enumerate(cy["valid_time"]):
            rows += (
                f"<tr><td>{html.escape(v)}</td><td>{cy['mean_field_error_km'][t]:.0f}</td><td>{cy['mean_field_along_km'][t]:+.0f}</td>"
                f"<td>{cy['mean_field_cross_km'][t]:+.0f}</td><td>{m_tot[t]:.0f}</td><td>{m_at[t]:+.0f}</td><td>{m_xt[t]:+.0f}</td></tr>"
            )
        rows = (
            "<table><tr><th>valid</th><th>mean-field error km</th><th>along</th><th>cross</th><th>member-mean error</th>"
            "<th>along</th><th>cross</th></tr>" + rows + "</table><p>along &gt; 0: ahead of the observed centre; "
            "cross &gt; 0: right of its motion (great-circle km).</p>"
        )
    return f"<h2>Cyclone tracks (first init)</h2><img src='figs/{name}'>{rows}"


def _members_curve_section(rows: list[dict], channels: Sequence[str], figs: Path) -> str:
    """RMSE and CRPS (standard and fair) of the first k members against k, one line per lead."""
    fig, axes = plt.subplots(len(channels), 2, figsize=(9, 2.6 * len(channels)), squeeze=False)
    for i, ch in enumerate(channels):
        rs = sorted((r for r in rows if r["variable"] == ch), key=lambda r: r["lead_hours"])
        for n, r in enumerate(rs):
            c = r["members_curve"]
            k = [p["members"] for p in c]
            colour = plt.cm.viridis(n / max(len(rs) - 1, 1))
            axes[i, 0].plot(k, [p["rmse"] for p in c], "o-", color=colour, label=f"+{r['lead_hours']} h")
            axes[i, 1].plot(k, [p["crps_standard"] for p in c], "o-", color=colour)
            axes[i, 1].plot(k, [p["crps"] for p in c], "x:", color=colour)
        axes[i, 0].set_title(f"{ch}: ensemble-mean RMSE", fontsize=9)
        axes[i, 1].set_title(f"{ch}: CRPS (o standard, x fair)", fontsize=9)
        axes[i, 0].legend(fontsize=6)
        sizes = [p["members"] for p in rs[0]["members_curve"]] if rs else []
        for ax in axes[i]:
            ax.set_xscale("log")
            ax.set_xticks(sizes, [str(k) for k in sizes])  # plain member counts, not powers of ten
            ax.minorticks_off()
            ax.set_xlabel("members")
    return (f"<h2>Skill against ensemble size (first k members)</h2><img src='figs/{_save(fig, figs / 'members_curve.png')}'>"
            "<p>The fair CRPS and the unbiased SSR estimate the infinite ensemble at every size, so their lines should "
            "stay flat; the ensemble-mean RMSE and the standard CRPS show what more members buy.</p>")


def nearest_cell(lat: np.ndarray, lon: np.ndarray, where: Sequence[float] | None) -> tuple[int, int]:
    """Indices of the grid cell nearest (great circle) to ``where`` = (lat, lon); the grid's centre when None."""
    if where is None:
        return len(lat) // 2, len(lon) // 2
    from apps.weather.metrics import great_circle_km

    la, lo = np.meshgrid(lat, lon, indexing="ij")
    d = great_circle_km(la, lo, float(where[0]), float(where[1]))
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    return int(i), int(j)


def _plume_section(fc: xr.Dataset, mdim: str, truth: xr.Dataset, ch: str, where: Sequence[float] | None, figs: Path) -> str:
    """Every member (ensemble dim ``mdim``) of the first init against lead at one grid point, with the mean and the truth."""
    lat, lon = fc.latitude.values, fc.longitude.values
    i, j = nearest_cell(lat, lon, where)
    first = fc.isel(time=0, latitude=i, longitude=j)
    members = np.asarray(_field(first, ch).transpose(mdim, ...).values)
    lead = fc.prediction_timedelta.values / np.timedelta64(1, "h")
    valid = fc.time.values[0] + fc.prediction_timedelta.values
    known = np.isin(valid, truth.time.values)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(lead, members.T, color="tab:blue", lw=0.6, alpha=0.5)
    ax.plot(lead, members.mean(0), color="tab:blue", lw=2, label="ensemble mean")
    if known.any():
        y = np.asarray(_field(truth.sel(time=valid[known]).isel(latitude=i, longitude=j), ch).values)
        ax.plot(lead[known], y, "k--", lw=1.5, label="truth")
    ax.set_xlabel("lead (h)")
    ax.set_title(f"{ch} at {lat[i]:.2f}°, {lon[j]:.2f}° (first init {str(fc.time.values[0])[:16]})", fontsize=9)
    ax.legend(fontsize=7)
    return f"<h2>Ensemble plume ({html.escape(ch)})</h2><img src='figs/{_save(fig, figs / 'plume.png')}'>"


def _exceedance_section(thresholds: dict, step: xr.Dataset, truth: xr.Dataset, valid, lat, lon, figs: Path) -> str:
    """Probability that the first thresholded channel exceeds each threshold (up to 4), first init, longest lead;
    the truth's exceedance outlined in black."""
    ch, us = next(iter(thresholds.items()))
    us = list(us)[:4]
    ens = np.asarray(_field(step, ch).values)
    known = valid is not None and valid in truth.time.values
    y = np.asarray(_field(truth.sel(time=valid), ch).values) if known else None
    fig, axes = plt.subplots(1, len(us), figsize=(4.3 * len(us), 3.2), squeeze=False)
    for ax, u in zip(axes[0], us):
        im = ax.pcolormesh(lon, lat, np.mean(ens > u, axis=0), shading="auto", vmin=0, vmax=1, cmap="magma")
        if y is not None and (y > u).any() and not (y > u).all():
            ax.contour(lon, lat, (y > u).astype(float), levels=[0.5], colors="k", linewidths=0.8)
        ax.set_title(f"P({ch} > {u:g})", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    return (f"<h2>Exceedance probability, first init, valid {html.escape(str(valid))}</h2>"
            f"<img src='figs/{_save(fig, figs / 'exceedance.png')}'><p>Black line: where the truth exceeds the threshold.</p>")


def _spectra_section(spectra: list[dict], band: Sequence[float], channels: Sequence[str], figs: Path) -> str:
    """Band-mean zonal spectra per channel (up to 4): truth, members and ensemble mean at the first and last lead."""
    shown = [c for c in channels if any(s["variable"] == c for s in spectra)][:4]
    if not shown:
        return ""
    fig, axes = plt.subplots(1, len(shown), figsize=(4.2 * len(shown), 3.4), squeeze=False)
    for ax, ch in zip(axes[0], shown):
        rows = sorted((s for s in spectra if s["variable"] == ch), key=lambda s: s["lead_hours"])
        picked = [rows[0], rows[-1]] if len(rows) > 1 else rows
        for s, style in zip(picked, ("--", "-")):
            wl = np.asarray(s["wavelength_km"], dtype=float)[1:]  # the zonal mean (infinite wavelength) left out
            lead = f"+{s['lead_hours']}h"
            ax.loglog(wl, np.asarray(s["truth"], dtype=float)[1:], "k" + style, lw=1, label=f"truth {lead}")
            ax.loglog(wl, np.asarray(s["members"], dtype=float)[1:], "C0" + style, label=f"members {lead}")
            ax.loglog(wl, np.asarray(s["ensemble_mean"], dtype=float)[1:], "C3" + style, label=f"ens. mean {lead}")
        ax.invert_xaxis()  # large scales left, small scales right, as WB2 draws them
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 3.0)))  # labels at 1 and 3 per decade: the default's overlap
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("zonal wavelength (km)")
        ax.set_title(ch, fontsize=9)
        ax.legend(fontsize=6)
    band_text = f"{band[0]:g}..{band[1]:g}"
    return (f"<h2>Zonal energy spectra (|latitude| {html.escape(band_text)})</h2><img src='figs/{_save(fig, figs / 'spectra.png')}'>"
            "<p>Members should follow the truth at every wavelength; the ensemble mean loses small-scale power as the "
            "members diverge (WB2 ZonalEnergySpectrum, averaged over inits and the band's rows).</p>")


def baseline_skill(row: dict) -> float:
    """RMSE skill against the better of persistence and climatology: ``1 − RMSE / min(persistence, climatology)``.

    Positive: the forecast beats both baselines; NaN when neither baseline was scored.
    """
    baselines = [b for b in (row["persistence_rmse"], row["climatology_rmse"]) if np.isfinite(b) and b > 0]
    return float(1.0 - row["rmse"] / min(baselines)) if baselines else float("nan")


def _skill_colour(skill: float) -> str:
    """Green for positive skill, red for negative, white near 0 and for NaN; full colour at ±30 %."""
    if not np.isfinite(skill):
        return "#ffffff"
    a = min(abs(skill) / 0.3, 1.0)
    light = int(round(255 - 120 * a))
    return f"#{light:02x}ff{light:02x}" if skill > 0 else f"#ff{light:02x}{light:02x}"


def scorecard(rows: list[dict]) -> str:
    """HTML scorecard: RMSE skill against the better baseline per region, channel (rows) and lead (columns)."""
    leads = sorted({r["lead_hours"] for r in rows})
    head = "".join(f"<th>+{lead} h</th>" for lead in leads)
    blocks = []
    for region in dict.fromkeys(r["region"] for r in rows):
        cells = {(r["variable"], r["lead_hours"]): baseline_skill(r) for r in rows if r["region"] == region}
        body = ""
        for ch in dict.fromkeys(v for v, _ in cells):
            skills = [cells.get((ch, lead), float("nan")) for lead in leads]
            tds = "".join(f"<td style='background:{_skill_colour(v)}'>{f'{100 * v:+.0f} %' if np.isfinite(v) else '–'}</td>"
                          for v in skills)
            body += f"<tr><td>{html.escape(ch)}</td>{tds}</tr>"
        blocks.append(f"<h3>{html.escape(region)}</h3><table><tr><th>channel</th>{head}</tr>{body}</table>")
    return ("<h2>Scorecard: RMSE skill against the better of persistence and climatology</h2>"
            "<p>1 − RMSE / min(persistence, climatology); green: better than both baselines.</p>" + "".join(blocks))


def write_report(out_dir: Path, result: dict, fc: xr.Dataset, truth: xr.Dataset, channels: Sequence[str]) -> Path:
    """Write ``out_dir/report.html`` and its figures under ``out_dir/figs``."""
    figs = out_dir / "figs"
    figs.mkdir(parents=True, exist_ok=True)
    rows = [r for r in result["scores"] if r["region"] == "global"] or result["scores"]
    parts: list[str] = []
    # --- scores against lead
    fig, axes = plt.subplots(len(channels), 3, figsize=(12, 2.6 * len(channels)), squeeze=False)
    for i, ch in enumerate(channels):
        rs = sorted((r for r in rows if r["variable"] == ch), key=lambda r: r["lead_hours"])
        lead = [r["lead_hours"] for r in rs]
        ax = axes[i, 0]
        ax.plot(lead, [r["rmse"] for r in rs], "o-", label="ens. mean")
        ax.plot(lead, [r["persistence_rmse"] for r in rs], "s--", label="persistence")
        ax.plot(lead, [r["climatology_rmse"] for r in rs], "^:", label="climatology")
        ax.set_title(f"{ch}: RMSE")
        ax.legend(fontsize=7)
        axes[i, 1].plot(lead, [r["crps"] for r in rs], "o-", label="CRPS")
        axes[i, 1].plot(lead, [r["mae"] for r in rs], "s--", label="ens.-mean MAE")
        axes[i, 1].set_title(f"{ch}: CRPS")
        axes[i, 1].legend(fontsize=7)
        axes[i, 2].plot(lead, [r["ssr"] for r in rs], "o-")
        axes[i, 2].axhline(1.0, color="k", lw=0.5)
        axes[i, 2].set_title(f"{ch}: spread-skill ratio")
        for ax in axes[i]:
            ax.set_xlabel("lead (h)")
    parts.append(f"<h2>Scores against lead (global, {html.escape(result['grid'])} grid)</h2><img src='figs/{_save(fig, figs / 'scores.png')}'>")
    # --- rank histograms at the longest lead
    fig, axes = plt.subplots(1, len(channels), figsize=(2.6 * len(channels), 2.4), squeeze=False)
    for i, ch in enumerate(channels):
        rs = [r for r in rows if r["variable"] == ch and r["rank_histogram"]]
        if rs:
            r = max(rs, key=lambda r: r["lead_hours"])
            h = np.asarray(r["rank_histogram"])
            axes[0, i].bar(np.arange(len(h)), h)
            axes[0, i].axhline(1 / len(h), color="k", lw=0.5)
            axes[0, i].set_title(f"{ch} +{r['lead_hours']}h", fontsize=8)
    parts.append(f"<h2>Rank histograms</h2><img src='figs/{_save(fig, figs / 'rank_hist.png')}'>")
    if any(r.get("members_curve") for r in rows):
        parts.append(_members_curve_section(rows, channels, figs))
    if result.get("spectra"):
        parts.append(_spectra_section(result["spectra"], result["spectra_band"], channels, figs))
    # --- maps for the first init at the longest lead
    mdim = next((d for d in ("realization", "number") if d in fc.dims), None)
    ch = next((c for c in channels if c.startswith("2m_temperature")), channels[0])
    step = fc.isel(time=0, prediction_timedelta=-1)
    ens = np.asarray(_field(step, ch).values)
    valid = fc.valid_time.values[0, -1] if "valid_time" in fc.coords else None
    lat, lon = fc.latitude.values, fc.longitude.values
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    panels = [("ensemble mean", ens.mean(0) if mdim else ens), ("ensemble spread", ens.std(0, ddof=1) if mdim and ens.shape[0] > 1 else np.zeros_like(ens[0] if mdim else ens))]
    if valid is not None and valid in truth.time.values:
        panels.append(("truth", np.asarray(_field(truth.sel(time=valid), ch).values)))
    for ax, (title, z) in zip(axes, panels):
        im = ax.pcolormesh(lon, lat, z, shading="auto")
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_title(f"{ch} {title}", fontsize=9)
    parts.append(f"<h2>Ensemble mean and spread, first init, valid {html.escape(str(valid))}</h2><img src='figs/{_save(fig, figs / 'maps.png')}'>")
    if mdim:
        n = min(8, ens.shape[0])
        fig, axes = plt.subplots(2, (n + 1) // 2, figsize=(3 * ((n + 1) // 2), 4.4), squeeze=False)
        vmin, vmax = float(ens[:n].min()), float(ens[:n].max())
        for m in range(n):
            ax = axes.flat[m]
            ax.pcolormesh(lon, lat, ens[m], shading="auto", vmin=vmin, vmax=vmax)
            ax.set_title(f"member {m}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        parts.append(f"<h2>Stamp plot ({html.escape(ch)})</h2><img src='figs/{_save(fig, figs / 'stamps.png')}'>")
        zch = next((c for c in channels if c.startswith("geopotential")), ch)
        z = np.asarray(_field(step, zch).values)
        level = float(np.median(z))
        fig, ax = plt.subplots(figsize=(7, 3.4))
        for m in range(z.shape[0]):
            ax.contour(lon, lat, z[m], levels=[level], colors=[plt.cm.tab10(m % 10)], linewidths=0.8)
        ax.set_title(f"spaghetti: {zch} = {level:.0f} per member")
        parts.append(f"<h2>Spaghetti plot</h2><img src='figs/{_save(fig, figs / 'spaghetti.png')}'>")
    if mdim:
        parts.append(_plume_section(fc, mdim, truth, ch, result.get("plume_at"), figs))
    if mdim and result.get("thresholds"):
        parts.append(_exceedance_section(result["thresholds"], step, truth, valid, lat, lon, figs))
    if result.get("cyclone"):
        parts.append(_cyclone_section(result["cyclone"], figs))
    parts.append(scorecard(result["scores"]))
    table = "".join(
        f"<tr><td>{html.escape(r['variable'])}</td><td>{r['lead_hours']}</td><td>{r['rmse']:.4g}</td><td>{r['persistence_rmse']:.4g}</td>"
        f"<td>{r['climatology_rmse']:.4g}</td><td>{r['crps']:.4g}</td><td>{r['ssr']:.3g}</td><td>{r['acc']:.3g}</td></tr>"
        for r in rows
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>weather evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px}</style></head><body>"
        f"<h1>Weather forecast evaluation</h1><p>forecast {html.escape(result['forecast'])}; truth {html.escape(result['truth'])}; "
        f"grid {html.escape(result['grid'])}{_resolution_text(result)}; {len(result['inits'])} inits; "
        f"{_clim_text(result['climatology'])}. Metrics: WeatherBench2 definitions (cell-area weights, "
        "RMSE after the time mean, fair CRPS, unbiased SSR).</p>"
        + "".join(parts)
        + "<h2>Table (global)</h2><table><tr><th>channel</th><th>lead h</th><th>RMSE</th><th>persistence</th><th>climatology</th>"
        "<th>CRPS</th><th>SSR</th><th>ACC</th></tr>" + table + "</table></body></html>\n"
    )
    path = out_dir / "report.html"
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
