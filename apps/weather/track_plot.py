"""Map of cyclone tracks (observed, members, ensemble-mean field) over the strike-probability map."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dualsci.io import atomic_write  # noqa: E402


def _recentre(lon: np.ndarray, centre: float) -> np.ndarray:
    """Longitudes in (centre − 180, centre + 180]: a track crossing 0° is drawn without a jump."""
    return (np.asarray(lon, float) - centre + 180.0) % 360.0 - 180.0 + centre


def draw_tracks(res: dict, path: str | Path, margin_deg: float = 12.0) -> Path:
    """Draw a ``track_forecast`` result to a PNG.

    Args:
        res: dict with ``member_tracks`` (M, T, 2), ``mean_field_track`` (T, 2), ``strike_probability``
            (H, W), ``lat`` (H,), ``lon`` (W,), ``radius_km``, optionally ``truth_track`` (T, 2).
        path: output PNG (written atomically).
        margin_deg: map extent beyond the tracks.

    Returns:
        The path written.
    """
    members = np.asarray(res["member_tracks"], float)
    mean = np.asarray(res["mean_field_track"], float)
    truth = np.asarray(res["truth_track"], float) if res.get("truth_track") is not None else None
    lat, lon = np.asarray(res["lat"], float), np.asarray(res["lon"], float)
    prob = np.asarray(res["strike_probability"], float)
    ref = truth if truth is not None and np.isfinite(truth).any() else mean
    finite = ref[np.isfinite(ref[:, 0])]
    if len(finite):
        centre = float(finite[0, 1])
    elif np.isfinite(members[..., 1]).any():
        centre = float(np.nanmedian(members[..., 1]))
    else:  # no track found anywhere (no minimum near the start): the map of the grid, centred on its circular mean
        centre = float(np.degrees(np.arctan2(np.sin(np.radians(lon)).mean(), np.cos(np.radians(lon)).mean())) % 360.0)
    glon = _recentre(lon, centre)
    order = np.argsort(glon)
    pts = np.concatenate([t.reshape(-1, 2) for t in (members, mean[None], ref[None])])
    pts = pts[np.isfinite(pts[:, 0])]
    fig, ax = plt.subplots(figsize=(7, 5))
    im = ax.pcolormesh(glon[order], lat, prob[:, order], shading="auto", cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label=f"strike probability ({res.get('radius_km', 300):g} km)")
    for m, tr in enumerate(members):
        ax.plot(_recentre(tr[:, 1], centre), tr[:, 0], "-", color="tab:gray", lw=0.8, alpha=0.8, label="members" if m == 0 else None)
    if truth is not None:
        ax.plot(_recentre(truth[:, 1], centre), truth[:, 0], "s-", color="k", lw=3.0, ms=4, label="observed")
    # drawn last so that it stays visible where it lies on the observed track
    ax.plot(_recentre(mean[:, 1], centre), mean[:, 0], "o--", color="tab:red", lw=1.5, ms=3, label="ensemble-mean field", zorder=5)
    if len(pts):
        plon = _recentre(pts[:, 1], centre)
        ax.set_xlim(plon.min() - margin_deg, plon.max() + margin_deg)
        ax.set_ylim(max(pts[:, 0].min() - margin_deg, -90), min(pts[:, 0].max() + margin_deg, 90))
    # the axis runs past 360° (or below 0°) when the map straddles the meridian: label in [0, 360)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v % 360:g}"))
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.set_title("cyclone tracks and strike probability", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=80)
    plt.close(fig)
    return path
