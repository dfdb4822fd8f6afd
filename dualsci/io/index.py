"""The demo landing page: one HTML file linking every report under a folder."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Sequence

from dualsci.io.atomic import atomic_write


def write_index_html(out_dir: str | os.PathLike, entries: Sequence[dict]) -> Path:
    """Write ``out_dir/index.html`` listing ``entries``.

    Each entry: ``{"name": str, "report": relative path or None, "status": "ok"|"failed", "seconds": float,
    "detail": str}``. Returns the path written.
    """
    out_dir = Path(out_dir)
    rows = []
    for entry in entries:
        name = html.escape(entry["name"])
        report = entry.get("report")
        link = f'<a href="{html.escape(str(report))}">{name}</a>' if report else name
        status = html.escape(entry.get("status", "?"))
        seconds = entry.get("seconds")
        took = f"{seconds:.0f} s" if seconds is not None else ""
        detail = html.escape(entry.get("detail", ""))
        rows.append(f"<tr><td>{link}</td><td class='{status}'>{status}</td><td>{took}</td><td>{detail}</td></tr>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>dualsci demo</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 12px;text-align:left}"
        ".ok{color:green}.failed{color:#b00}</style></head><body>"
        "<h1>dualsci demo</h1><p>Every app end to end on embedded data. Each link opens that app's report.</p>"
        "<table><tr><th>part</th><th>status</th><th>time</th><th>detail</th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    )
    path = out_dir / "index.html"
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(page)
    return path
