"""Cyclone tracking on mean-sea-level pressure, track errors and strike probability.

Tracker (after LaDCast's ``evaluate/track.py``, written afresh): from the previous centre, search a box
for local MSLP minima (a point qualifies when it is the minimum of its inner neighbourhood and not on the
box edge); keep the qualifying minimum closest to the previous centre. Applied per member and to the
ensemble-mean field. Errors are great-circle distances in km.
"""

from __future__ import annotations

import numpy as np

from apps.weather.metrics import great_circle_km


def _lon_distance_deg(a: np.ndarray, b: float) -> np.ndarray:
    return np.abs((np.asarray(a) - b + 180.0) % 360.0 - 180.0)


def find_centre(
    mslp: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    prev: tuple[float, float],
    search_deg: float = 10.0,
    inner_deg: float = 4.0,
) -> tuple[float, float] | None:
    """One tracking step.

    Args:
        mslp: (H, W) pressure field, latitude ascending.
        lat, lon: (H,), (W,) degrees.
        prev: previous centre (lat, lon).
        search_deg: half-width of the search box around ``prev``.
        inner_deg: half-width of the neighbourhood a minimum must dominate.

    Returns:
        (lat, lon) of the chosen minimum, or None when the box has no qualifying minimum.
    """
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    rows = np.flatnonzero(np.abs(lat - prev[0]) <= search_deg)
    cols = np.flatnonzero(_lon_distance_deg(lon, prev[1]) <= search_deg)
    best, best_d = None, np.inf
    for j in rows:
        for i in cols:
            # Box-edge points are dropped: their true neighbourhood extends outside the box.
            if abs(lat[j] - prev[0]) > search_deg - inner_deg / 2 or _lon_distance_deg(lon[i], prev[1]) > search_deg - inner_deg / 2:
                continue
            nr = np.flatnonzero(np.abs(lat - lat[j]) <= inner_deg)
            nc = np.flatnonzero(_lon_distance_deg(lon, lon[i]) <= inner_deg)
            if mslp[j, i] > mslp[np.ix_(nr, nc)].min():
                continue
            d = float(great_circle_km(prev[0], prev[1], lat[j], lon[i]))
            if d < best_d:
                best, best_d = (float(lat[j]), float(lon[i])), d
    return best


def track(
    fields: np.ndarray, lat: np.ndarray, lon: np.ndarray, start: tuple[float, float], **kwargs
) -> np.ndarray:
    """Track a cyclone through time.

    Args:
        fields: (T, H, W) MSLP at successive lead times (index 0 = init).
        start: (lat, lon) at index 0 (searched around, so a rough position is enough).

    Returns:
        (T, 2) centres (lat, lon); rows after a lost track are NaN.
    """
    out = np.full((fields.shape[0], 2), np.nan)
    prev = start
    for t in range(fields.shape[0]):
        c = find_centre(fields[t], lat, lon, prev, **kwargs)
        if c is None:
            break
        out[t] = c
        prev = c
    return out


def track_ensemble(
    members: np.ndarray, lat: np.ndarray, lon: np.ndarray, start: tuple[float, float], **kwargs
) -> tuple[np.ndarray, np.ndarray]:
    """Tracks per member and on the ensemble-mean field.

    Args:
        members: (M, T, H, W) MSLP.

    Returns:
        (member_tracks (M, T, 2), mean_field_track (T, 2)).
    """
    per_member = np.stack([track(m, lat, lon, start, **kwargs) for m in members])
    on_mean = track(members.mean(axis=0), lat, lon, start, **kwargs)
    return per_member, on_mean


def track_error_km(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Great-circle distance per time between two (T, 2) tracks (NaN where either is lost)."""
    return great_circle_km(pred[:, 0], pred[:, 1], truth[:, 0], truth[:, 1])


def strike_probability(tracks: np.ndarray, lat: np.ndarray, lon: np.ndarray, radius_km: float = 300.0) -> np.ndarray:
    """Fraction of members whose track passes within ``radius_km`` of each grid point.

    Args:
        tracks: (M, T, 2) member tracks (NaN rows ignored).

    Returns:
        (H, W) probabilities in [0, 1].
    """
    glat, glon = np.meshgrid(np.asarray(lat, float), np.asarray(lon, float), indexing="ij")
    hit = np.zeros((tracks.shape[0],) + glat.shape, dtype=bool)
    for m, tr in enumerate(tracks):
        for la, lo in tr:
            if np.isfinite(la):
                hit[m] |= great_circle_km(la, lo, glat, glon) <= radius_km
    return hit.mean(axis=0)
