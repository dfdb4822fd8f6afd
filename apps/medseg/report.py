"""Report page: sample grids (image | mask overlay) and the evaluation tables, as one HTML file."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from apps.medseg.metrics import SegData
from dualsci.io import atomic_write


def overlay_grid(data: SegData, path: Path, n: int = 8, title: str = "") -> Path:
    """Save a 2 x n grid: images on top, images with the mask overlaid below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(data))
    fig, axes = plt.subplots(2, max(n, 1), figsize=(1.6 * max(n, 1), 3.4), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for i in range(n):
        img = data.images[i, data.images.shape[1] // 2].numpy().T  # RAS x/y -> display rows = y
        msk = data.masks[i].numpy().T
        for r in range(2):
            ax = axes[r, i]
            ax.imshow(img, cmap="gray", origin="lower", vmin=-1, vmax=1)
            if r == 1:
                rgba = np.zeros((*msk.shape, 4))
                for k in np.unique(msk):
                    if k > 0:
                        rgba[msk == k] = (*cmap((k - 1) % 10)[:3], 0.45)
                ax.imshow(rgba, origin="lower")
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=80)
    plt.close(fig)
    return path


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.3f}"
    return html.escape(str(v))


def write_report(out: Path, res: dict, real: SegData, synth: SegData, names: Sequence[str],
                 gen_dir: Path | None = None, extra: dict | None = None) -> Path:
    """Write ``out/report.html`` (+ ``out/figures/*.png``) from an evaluation result."""
    out = Path(out)
    fig_real = overlay_grid(real, out / "figures" / "real.png", title="real training slices")
    fig_syn = overlay_grid(synth, out / "figures" / "synthetic.png", title="synthetic pairs")
    rows = []
    for setting, m in res.get("downstream", {}).items():
        d, h = m["dice"], m["hd95"]
        rows.append(f"<tr><td>{setting}</td><td>{_fmt(d['mean'])} ± {_fmt(d['sd'])}</td>"
                    f"<td>{_fmt(h['mean'])} ± {_fmt(h['sd'])}</td><td>{', '.join(_fmt(x) for x in d['per_seed'])}</td></tr>")
    irows = []
    for name in names[1:]:
        r, s = res["intensity"]["real"].get(name, {}), res["intensity"]["synthetic"].get(name, {})
        irows.append("<tr><td>" + html.escape(name) + "</td>" + "".join(
            f"<td>{_fmt(r.get(k, float('nan')))} / {_fmt(s.get(k, float('nan')))}</td>"
            for k in ("mean", "std", "glcm_contrast", "glcm_homogeneity", "presence", "area_fraction")) + "</tr>")
    summary = {
        "alignment Dice (real-trained UNet on synthetic images vs synthetic masks)": res["alignment"]["dice"],
        "reference UNet Dice on its real training slices": res.get("reference_real_train", {}).get("dice", float("nan")),
        "reference UNet Dice on held-out real (ceiling of the alignment Dice)": res["reference_real_test"]["dice"],
        f"downstream gain ({res.get('headline_setting')} − real_only), Dice": res.get("downstream_gain_dice"),
        "seed spreads (mean ± sd) overlap": res.get("spreads_overlap"),
        "Fréchet distance synthetic vs held-out real (UNet features)": res["frechet"]["synthetic_vs_real_test"],
        "Fréchet distance real train vs held-out real (baseline)": res["frechet"]["real_train_vs_real_test"],
        "memorisation: median NN distance ratio generated/held-out": res["memorisation"]["ratio"],
        "memorisation: fraction closer than held-out 5th percentile": res["memorisation"]["fraction_below_heldout_p5"],
    }
    summary.update(extra or {})
    srows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in summary.items())
    page = f"""<!doctype html><html><head><meta charset='utf-8'><title>medseg report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}td,th{{padding:3px 10px;text-align:left}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f3f3f3}}</style></head><body>
<h1>dualsci medseg: synthetic image–mask pairs</h1>
<p>Real: {res.get('n_real_train')} training / {res.get('n_real_test')} held-out slices; synthetic: {res.get('n_synthetic')} pairs;
low-data setting uses {res.get('few')} real slices; UNet {res.get('steps')} steps; seeds {res.get('seeds')}.
{('Generated dataset: ' + html.escape(str(gen_dir))) if gen_dir else ''}</p>
<h2>Summary</h2><table>{srows}</table>
<h2>Samples</h2><img src="figures/synthetic.png" alt="synthetic"><br><img src="figures/real.png" alt="real">
<h2>Downstream segmentation on held-out real slices</h2>
<table><tr><th>training data</th><th>Dice mean ± sd</th><th>HD95 (mm) mean ± sd</th><th>Dice per seed</th></tr>{''.join(rows)}</table>
<h2>Per-label statistics (real / synthetic)</h2>
<table><tr><th>label</th><th>mean</th><th>std</th><th>GLCM contrast</th><th>GLCM homogeneity</th><th>presence</th><th>area fraction</th></tr>{''.join(irows)}</table>
<h2>Raw result</h2><pre>{html.escape(json.dumps({k: v for k, v in res.items() if k != 'intensity'}, indent=1, default=str))}</pre>
</body></html>
"""
    path = out / "report.html"
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return path
