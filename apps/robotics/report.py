"""The robotics report page: results table, training curve, rollout videos (one self-contained folder)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np


def loss_plot(history: list[list[float]], path: Path) -> Path | None:
    """Plot ``[step, loss, loss_action, loss_vision]`` rows to a PNG (None when there is no history)."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = np.asarray(history, float)
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    for j, name in ((1, "total"), (2, "action"), (3, "vision")):
        if np.isfinite(h[:, j]).any():
            ax.plot(h[:, 0], h[:, j], label=name)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("flow-matching loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, float) for x in v):
        return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"
    return html.escape(str(v))


def write_report(out_dir: Path, title: str, intro: str, rows: list[dict], columns: list[str],
                 videos: list[tuple[str, str]], plot: str | None, details: dict) -> Path:
    """Write ``out_dir/report.html``; `videos` are ``(caption, relative mp4 path)``."""
    from dualsci.io import atomic_write

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows)
    vids = "".join(
        f"<figure><video src='{html.escape(p)}' controls loop muted autoplay width='256'></video>"
        f"<figcaption>{html.escape(c)}</figcaption></figure>" for c, p in videos)
    img = f"<img src='{html.escape(plot)}' alt='training loss'>" if plot else ""
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}td,th{padding:3px 10px;text-align:left}"
        "figure{display:inline-block;margin:6px}pre{background:#f4f4f4;padding:1em;overflow:auto}</style>"
        "</head><body><h1>" + html.escape(title) + "</h1><p>" + intro + "</p>"
        "<h2>Closed-loop results</h2><table><tr>" + head + "</tr>" + body + "</table>"
        "<h2>Rollouts</h2>" + vids + "<h2>Training</h2>" + img +
        "<h2>Details</h2><pre>" + html.escape(json.dumps(details, indent=2, default=str)) + "</pre></body></html>\n")
    path = Path(out_dir) / "report.html"
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(page)
    return path
