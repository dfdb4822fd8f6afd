"""Writers of the segmentation outputs: NIfTI maps with spacing, PNG/GIF/MP4 overlays, per-case CSV/JSON, report page.

NIfTI files use the CAMUS 2023 convention (array ``(W, H[, N])``, zooms ``(dx, dy[, 1])`` mm), so
:func:`apps.echo.camus.read_image` reads them back apex-up; videos without spacing get 1 px zooms and
``has_spacing: false`` in the JSON.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

import numpy as np
from scipy import ndimage


def save_nifti(path: Path, arr: np.ndarray, spacing: tuple[float, float]) -> None:
    """``arr: (H, W)`` or ``(N, H, W)`` → NIfTI in the CAMUS 2023 layout."""
    import nibabel as nib

    data = np.ascontiguousarray(arr.T if arr.ndim == 2 else arr.transpose(2, 1, 0))
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    elif data.dtype == np.float64:
        data = data.astype(np.float32)
    img = nib.Nifti1Image(data, np.diag([spacing[1], spacing[0], 1.0, 1.0]))
    img.header.set_zooms((spacing[1], spacing[0], 1.0)[: data.ndim])
    nib.save(img, str(path))


def _contour(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask, bool)
    return m & ~ndimage.binary_erosion(m)


def overlay_rgb(image: np.ndarray, mask: np.ndarray | None, gt: np.ndarray | None = None) -> np.ndarray:
    """Grey ``(H, W)`` uint8 image with the predicted contour in red and the reference in green → ``(H, W, 3)``."""
    rgb = np.repeat(image[..., None], 3, axis=2).astype(np.uint8)
    if gt is not None:
        rgb[_contour(gt)] = (40, 220, 40)
    if mask is not None:
        rgb[_contour(mask)] = (255, 40, 40)
    return rgb


def save_overlay_png(path: Path, image: np.ndarray, mask: np.ndarray, prob: np.ndarray, ent: np.ndarray,
                     gt: np.ndarray | None, title: str) -> None:
    """Three panels side by side: overlay (red prediction, green reference), fused probability (magma),
    predictive entropy (viridis, 0..ln 2), with ``title`` on top. PIL only (matplotlib figures are slow)."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    panels = [overlay_rgb(image, mask, gt),
              (colormaps["magma"](np.clip(prob, 0, 1))[..., :3] * 255).astype(np.uint8),
              (colormaps["viridis"](np.clip(ent / math.log(2), 0, 1))[..., :3] * 255).astype(np.uint8)]
    gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
    body = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    canvas = Image.new("RGB", (body.shape[1], body.shape[0] + 14), "white")
    canvas.paste(Image.fromarray(body), (0, 14))
    ImageDraw.Draw(canvas).text((2, 1), f"{title} | fused P(LV) | entropy", fill=(0, 0, 0))
    canvas.save(path)


def _overlay_frames(frames: np.ndarray, masks: np.ndarray, marks: dict[int, str]) -> list:
    """PIL images: every frame with its (screening) LV contour; ED/ES frames labelled."""
    from PIL import Image, ImageDraw

    pics = []
    for k, (f, m) in enumerate(zip(frames, masks)):
        img = Image.fromarray(overlay_rgb(f, m))
        if k in marks:
            ImageDraw.Draw(img).text((3, 3), marks[k], fill=(255, 255, 0))
        pics.append(img)
    return pics


def save_gif(path: Path, frames: np.ndarray, masks: np.ndarray, marks: dict[int, str], fps: float = 10.0) -> None:
    """Sequence overlay GIF: every frame with its (screening) LV contour; ED/ES frames get a label."""
    pics = _overlay_frames(frames, masks, marks)
    pics[0].save(path, save_all=True, append_images=pics[1:], duration=int(1000 / fps), loop=0)


def ffmpeg_available() -> bool:
    """True when ``imageio-ffmpeg`` (which ships its own ffmpeg binary) is importable and finds it."""
    try:
        import imageio_ffmpeg

        return bool(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return False


def save_mp4(path: Path, frames: np.ndarray, masks: np.ndarray, marks: dict[int, str], fps: float = 25.0) -> tuple[int, int]:
    """Sequence overlay as H.264 MP4 (imageio + imageio-ffmpeg), same pictures as the GIF.

    H.264 in yuv420p needs even sides, so frames are padded (black, bottom/right) to even height and
    width rather than rescaled. Returns the written ``(height, width)``. Raises ``RuntimeError`` when
    ffmpeg is missing (callers fall back to the GIF).
    """
    if not ffmpeg_available():
        raise RuntimeError("imageio-ffmpeg is not installed (pip install imageio-ffmpeg)")
    import imageio.v2 as imageio

    pics = [np.asarray(p) for p in _overlay_frames(frames, masks, marks)]
    h, w = pics[0].shape[:2]
    hh, ww = h + h % 2, w + w % 2
    with imageio.get_writer(str(path), format="FFMPEG", mode="I", fps=float(fps), codec="libx264",
                            pixelformat="yuv420p", macro_block_size=1, ffmpeg_log_level="error") as writer:
        for pic in pics:
            writer.append_data(np.pad(pic, ((0, hh - h), (0, ww - w), (0, 0))))
    return hh, ww


def write_case(out: Path, result: dict) -> None:
    """All files of one input under ``out/<name>/``."""
    item, native, record = result["item"], result["native"], result["record"]
    d = out / item.name
    d.mkdir(parents=True, exist_ok=True)
    frames = record["frame_indices"]
    squeeze = (lambda a: a[0]) if len(frames) == 1 else (lambda a: a)  # noqa: E731
    save_nifti(d / "mask.nii.gz", squeeze(native["mask"]).astype(np.uint8), item.spacing)
    save_nifti(d / "prob.nii.gz", squeeze(native["fused"]).astype(np.float32), item.spacing)
    save_nifti(d / "variance.nii.gz", squeeze(native["variance"]).astype(np.float32), item.spacing)
    save_nifti(d / "entropy.nii.gz", squeeze(native["entropy"]).astype(np.float32), item.spacing)
    pngs = []
    for j, (k, role) in enumerate(zip(frames, record["roles"])):
        gt = None if item.gt is None else item.gt[k] == 1
        # several beats: ED/ES occur more than once, so the frame index keeps the names apart
        name = f"overlay_{role}.png" if record["roles"].count(role) == 1 else f"overlay_{role}_f{k}.png"
        dice = record["per_frame"][j].get("dice")
        title = f"{item.name} {role}" + (f"  Dice {dice:.3f}" if dice is not None else "")
        save_overlay_png(d / name, item.frames[k], native["mask"][j], native["fused"][j], native["entropy"][j], gt, title)
        pngs.append(f"{item.name}/{name}")
    record["overlays"] = pngs
    if "screen" in native:
        marks = {k: f"{role}{j // 2 + 1}" for j, (k, role) in enumerate(zip(frames, record["roles"]))}
        save_gif(d / "sequence.gif", item.frames, native["screen"], marks)
        record["gif"] = f"{item.name}/sequence.gif"
        try:
            size = save_mp4(d / "sequence.mp4", item.frames, native["screen"], marks, fps=item.fps or 25.0)
            record["mp4"] = f"{item.name}/sequence.mp4"
            record["mp4_size"] = list(size)
        except RuntimeError as err:
            print(f"{item.name}: no MP4 overlay ({err}); the GIF overlay is written instead")
            record["mp4"] = None
    with open(d / "result.json", "w") as handle:
        json.dump(_clean(record), handle, indent=2)


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


CSV_FIELDS = ["name", "patient", "view", "image_quality", "role", "frame", "dice", "iou", "hd95_mm", "assd_mm",
              "inter_px", "pred_px", "gt_px", "area_mm2", "area_px", "mean_entropy", "boundary_entropy",
              "beat", "ef_single_plane", "ef_low", "ef_high"]
PATIENT_FIELDS = ["patient", "image_quality", "ef", "ef_low", "ef_high", "ef_reference", "ef_from_gt_masks", "edv", "esv",
                  "edv_reference", "esv_reference", "edv_reference_source", "edv_pct_error", "esv_pct_error"]
AGG_FIELDS = ["section", "name", "n", "value", "p5", "p95", "extra"]


def _aggregate_rows(clinical: dict) -> list[dict]:
    """Flat rows of the clinical summary for ``aggregate.csv``."""
    rows = []
    a = clinical.get("agreement_ef", {})
    for key in ("mae", "bias", "sd_diff", "loa_low", "loa_high", "pearson_r", "icc_2_1", "icc_3_1"):
        if key in a:
            rows.append({"section": "ef_agreement", "name": key, "n": a["n"], "value": a[key]})
    for key, b in clinical.get("bootstrap", {}).items():
        rows.append({"section": "bootstrap", "name": key, "n": b["n_patients"], "value": b["value"], "p5": b["low"],
                     "p95": b["high"], "extra": f"{b['resamples']} patient resamples"})
    for st in clinical.get("strata", []):
        for key in ("dice_mean", "dice_pooled", "ef_mae"):
            if key in st:
                rows.append({"section": f"stratum {st['stratum']}", "name": key,
                             "n": st["n_images"] if key != "ef_mae" else st.get("n_ef"), "value": st[key],
                             "p5": st.get(f"{key}_p5"), "p95": st.get(f"{key}_p95")})
    for key, v in clinical.get("volumes", {}).items():
        rows.append({"section": "volumes", "name": f"{key}_pct_error", "n": v["n"], "value": v["mean_pct_error"],
                     "extra": f"mean |error| {v['mean_abs_pct_error']:.2f} %"})
    return rows


def write_tables(out: Path, records: list[dict], patients: list[dict], clinical: dict | None = None) -> None:
    """``cases.csv`` (one row per segmented frame), ``patients.csv`` (biplane EF and volume errors),
    ``cases.json`` (records + biplane patients), and with ``clinical`` (``apps.echo.stats.clinical_summary``)
    ``aggregate.json`` / ``aggregate.csv`` (agreement incl. ICC, patient bootstrap, strata, volume errors)."""
    with open(out / "cases.csv", "w", newline="") as handle:
        w = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in records:
            for row in r["per_frame"]:
                lo, hi = r.get("ef_interval", [None, None])
                w.writerow(_clean({"name": r["name"], "patient": r.get("patient"), "view": r.get("view"),
                                   "image_quality": r.get("image_quality"), **row,
                                   "ef_single_plane": r.get("ef_single_plane"), "ef_low": lo, "ef_high": hi}))
    with open(out / "patients.csv", "w", newline="") as handle:
        w = csv.DictWriter(handle, fieldnames=PATIENT_FIELDS, extrasaction="ignore")
        w.writeheader()
        for p in patients:
            lo, hi = p.get("ef_interval", [None, None])
            w.writerow(_clean({**p, "ef_low": lo, "ef_high": hi}))
    with open(out / "cases.json", "w") as handle:
        json.dump(_clean({"cases": records, "biplane": patients,
                          "definitions": {"hd95": "MONAI max of directed 95th percentiles, mm",
                                          "assd": "MONAI symmetric mean of pooled surface distances, mm",
                                          "ef_interval": "min-max over ensemble members",
                                          "fusion": "see apps/echo/sampling.py"}}), handle, indent=2)
    if clinical is not None:
        with open(out / "aggregate.json", "w") as handle:
            json.dump(_clean(clinical), handle, indent=2)
        with open(out / "aggregate.csv", "w", newline="") as handle:
            w = csv.DictWriter(handle, fieldnames=AGG_FIELDS)
            w.writeheader()
            w.writerows(_clean(_aggregate_rows(clinical)))


def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else html.escape(str(v))


def _clinical_html(clinical: dict) -> str:
    """The report's clinical-statistics section (agreement, bootstrap, strata, volume errors)."""
    parts = ["<h2>Clinical statistics</h2>"]
    a = clinical.get("agreement_ef", {})
    if a.get("n"):
        parts.append(f"<p>EF (biplane, fused) vs reference EF, n = {a['n']} patients: MAE {_fmt(a['mae'], 2)}, bias "
                     f"{_fmt(a['bias'], 2)}, Bland–Altman limits {_fmt(a['loa_low'], 2)} … {_fmt(a['loa_high'], 2)}, "
                     f"Pearson r {_fmt(a['pearson_r'])}, ICC(2,1) {_fmt(a['icc_2_1'])} (absolute agreement), "
                     f"ICC(3,1) {_fmt(a['icc_3_1'])} (consistency; Shrout &amp; Fleiss).</p>")
    boot = clinical.get("bootstrap", {})
    if boot:
        parts.append("<table><tr><th>statistic</th><th>value</th><th>5 %</th><th>95 %</th><th>patients</th></tr>")
        parts += [f"<tr><td>{k}</td><td>{_fmt(b['value'])}</td><td>{_fmt(b['low'])}</td><td>{_fmt(b['high'])}</td>"
                  f"<td>{b['n_patients']}</td></tr>" for k, b in boot.items()]
        parts.append("</table>")
    st = clinical.get("strata", [])
    if st:
        parts.append("<h3>Strata (patient-bootstrap 5–95 %)</h3><table><tr><th>stratum</th><th>images</th><th>Dice mean ± SD</th>"
                     "<th>Dice 5–95 %</th><th>pooled Dice</th><th>HD95 mm</th><th>EF MAE (patients)</th></tr>")
        for r in st:
            ef = f"{_fmt(r.get('ef_mae'), 2)} ({r.get('n_ef')})" if "ef_mae" in r else "–"
            parts.append(f"<tr><td>{html.escape(r['stratum'])}</td><td>{r['n_images']}</td><td>{_fmt(r['dice_mean'])} ± "
                         f"{_fmt(r['dice_sd'])}</td><td>{_fmt(r.get('dice_mean_p5'))} – {_fmt(r.get('dice_mean_p95'))}</td>"
                         f"<td>{_fmt(r.get('dice_pooled'))}</td><td>{_fmt(r['hd95_mean_mm'], 2)}</td><td>{ef}</td></tr>")
        parts.append("</table>")
    for key, v in clinical.get("volumes", {}).items():
        parts.append(f"<p>{key.upper()} error: mean {_fmt(v['mean_pct_error'], 1)} %, mean |error| "
                     f"{_fmt(v['mean_abs_pct_error'], 1)} % (n = {v['n']}).</p>")
    defs = clinical.get("definitions", {})
    if defs:
        parts.append("<p style='font-size:smaller'>" + "<br>".join(f"{html.escape(k)}: {html.escape(str(v))}"
                                                                  for k, v in defs.items()) + "</p>")
    return "".join(parts)


def write_report(out: Path, records: list[dict], patients: list[dict], summary: dict, title: str = "dualsci echo",
                 prefix: str = "", extra_html: str = "", clinical: dict | None = None) -> Path:
    """``out/report.html``: summary, biplane EF table, per-case rows with overlays and GIFs.

    ``prefix`` is prepended to every image link (the case folders may sit in a subfolder of ``out``);
    ``extra_html`` is inserted after the summary (e.g. the demo's training curve).
    """
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}td,th{padding:3px 8px;border-bottom:1px solid #ddd;"
             "text-align:left}img{max-width:100%}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    parts.append("<h2>Summary</h2><table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>"
                                                      for k, v in summary.items()) + "</table>" + extra_html)
    if clinical:
        parts.append(_clinical_html(clinical))
    if patients:
        parts.append("<h2>Ejection fraction (biplane Simpson, 20 disks)</h2><table><tr><th>patient</th><th>EF</th>"
                     "<th>ensemble interval (min–max)</th><th>EF from reference masks</th><th>reference EF (cfg)</th>"
                     "<th>EDV ml</th><th>ESV ml</th></tr>")
        for p in patients:
            lo, hi = p.get("ef_interval", [None, None])
            parts.append(f"<tr><td>{p['patient']}</td><td>{_fmt(p.get('ef'), 1)}</td><td>{_fmt(lo, 1)} – {_fmt(hi, 1)}</td>"
                         f"<td>{_fmt(p.get('ef_from_gt_masks'), 1)}</td><td>{_fmt(p.get('ef_reference'), 1)}</td>"
                         f"<td>{_fmt(p.get('edv'), 1)}</td><td>{_fmt(p.get('esv'), 1)}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Cases</h2><p>Red: prediction (fused ensemble, post-processed); green: reference mask. "
                 "HD95/ASSD: MONAI definitions, mm.</p><table><tr><th>case</th><th>frame</th><th>Dice</th><th>IoU</th>"
                 "<th>HD95 mm</th><th>ASSD mm</th><th>boundary entropy</th></tr>")
    for r in records:
        for row in r["per_frame"]:
            parts.append(f"<tr><td>{html.escape(r['name'])}</td><td>{row['role']}</td><td>{_fmt(row.get('dice'))}</td>"
                         f"<td>{_fmt(row.get('iou'))}</td><td>{_fmt(row.get('hd95_mm'), 2)}</td><td>{_fmt(row.get('assd_mm'), 2)}</td>"
                         f"<td>{_fmt(row.get('boundary_entropy'))}</td></tr>")
    parts.append("</table>")
    for r in records:
        parts.append(f"<h3>{html.escape(r['name'])}</h3>")
        if "ef_single_plane" in r:
            lo, hi = r.get("ef_interval", [None, None])
            parts.append(f"<p>single-plane EF {_fmt(r['ef_single_plane'], 1)} (ensemble {_fmt(lo, 1)} – {_fmt(hi, 1)}); "
                         f"ED frame {r.get('ed_frame')}, ES frame {r.get('es_frame')}</p>")
        parts += [f"<img src='{html.escape(prefix + p)}'>" for p in r.get("overlays", [])]
        if r.get("beats"):
            parts.append("<table><tr><th>beat</th><th>ED frame</th><th>ES frame</th><th>EF (single plane)</th>"
                         "<th>ensemble interval</th></tr>" + "".join(
                             f"<tr><td>{b['beat'] + 1}</td><td>{b['ed_frame']}</td><td>{b['es_frame']}</td>"
                             f"<td>{_fmt(b['ef'], 1)}</td><td>{_fmt(b['ef_interval'][0], 1)} – {_fmt(b['ef_interval'][1], 1)}</td></tr>"
                             for b in r["beats"]) + "</table>")
            bd, tc = r.get("beat_detection", {}), r.get("temporal_consistency", {})
            parts.append(f"<p>beats by {html.escape(str(bd.get('method')))} (distance {bd.get('distance_frames')} frames); "
                         f"temporal consistency of the screen: frame-to-frame Dice {_fmt(tc.get('frame_dice_mean'))} "
                         f"(min {_fmt(tc.get('frame_dice_min'))}), area roughness {_fmt(tc.get('area_roughness'), 2)}</p>")
        if r.get("mp4"):
            parts.append(f"<video controls loop src='{html.escape(prefix + r['mp4'])}'></video>")
        if r.get("gif"):
            parts.append(f"<img src='{html.escape(prefix + r['gif'])}'>")
    parts.append("</body></html>\n")
    path = out / "report.html"
    path.write_text("\n".join(parts))
    return path
