"""Cyclone tracking on mean-sea-level pressure, track errors and strike probability.

Tracker (after LaDCast's ``evaluate/track.py``, written afresh): from the previous centre, search a box
for local MSLP minima (a point qualifies when it is the minimum of its inner neighbourhood and not on the
box edge); keep the qualifying minimum closest to the previous centre. Applied per member and to the
ensemble-mean field. Errors are great-circle distances in km, and their along-track / cross-track parts
relative to the observed track's direction of motion (:func:`along_cross_track_km`).
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
    from scipy.ndimage import minimum_filter

    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    rows = np.flatnonzero(np.abs(lat - prev[0]) <= search_deg)
    # Columns in geographic order around the previous centre (the box may straddle 0°).
    dlon = (lon - prev[1] + 180.0) % 360.0 - 180.0
    cols = np.flatnonzero(np.abs(dlon) <= search_deg)
    cols = cols[np.argsort(dlon[cols])]
    if len(rows) < 3 or len(cols) < 3:
        return None
    box = mslp[np.ix_(rows, cols)]
    dy = np.median(np.abs(np.diff(lat))) if len(lat) > 1 else 1.0
    dx = np.median(np.abs(np.diff(np.sort(lon)))) if len(lon) > 1 else 1.0
    size = (2 * int(round(inner_deg / dy)) + 1, 2 * int(round(inner_deg / dx)) + 1)
    is_min = box <= minimum_filter(box, size=size, mode="nearest")
    # Box-edge points are dropped: their true neighbourhood extends outside the box.
    margin = inner_deg / 2
    inside = (np.abs(lat[rows] - prev[0]) <= search_deg - margin)[:, None] & (np.abs(dlon[cols]) <= search_deg - margin)[None, :]
    jj, ii = np.nonzero(is_min & inside)
    if len(jj) == 0:
        return None
    d = great_circle_km(prev[0], prev[1], lat[rows[jj]], lon[cols[ii]])
    k = int(np.argmin(d))
    return float(lat[rows[jj[k]]]), float(lon[cols[ii[k]]])


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


def initial_bearing(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Initial great-circle bearing (radians, clockwise from north) from point 1 towards point 2."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(np.asarray(lon2) - np.asarray(lon1))
    return np.arctan2(np.sin(dl) * np.cos(p2), np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl))


def motion_bearing(truth: np.ndarray) -> np.ndarray:
    """Direction of motion of a (T, 2) track at each of its points (radians from north).

    Interior points: the circular mean of the final bearing of the arriving segment and the initial
    bearing of the leaving one (a centred difference that stays on the sphere); the ends use their one
    segment. NaN where the neighbours are lost, or the centre did not move.
    """
    n = len(truth)
    lat, lon = truth[:, 0], truth[:, 1]
    out = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        # leaving bearing at i (i -> i+1); arriving bearing at i = reversed initial bearing of i -> i-1
        leave = np.full(n, np.nan)
        arrive = np.full(n, np.nan)
        moved = great_circle_km(lat[:-1], lon[:-1], lat[1:], lon[1:]) > 1e-6
        leave[:-1] = np.where(moved, initial_bearing(lat[:-1], lon[:-1], lat[1:], lon[1:]), np.nan)
        arrive[1:] = np.where(moved, initial_bearing(lat[1:], lon[1:], lat[:-1], lon[:-1]) + np.pi, np.nan)
        for i in range(n):
            b = [v for v in (arrive[i], leave[i]) if np.isfinite(v)]
            if b:
                out[i] = np.arctan2(np.mean(np.sin(b)), np.mean(np.cos(b)))
    return out


def along_cross_track_km(pred: np.ndarray, truth: np.ndarray, radius_km: float = 6371.0) -> tuple[np.ndarray, np.ndarray]:
    """Signed along-track and cross-track errors of a forecast track against the observed one.

    At each time, take the great circle through the observed centre in its direction of motion
    (:func:`motion_bearing`). The cross-track error is the forecast centre's signed distance from that
    circle, positive to the RIGHT of the motion; the along-track error is the distance along it to the
    foot of the perpendicular, positive AHEAD of the observed centre (forecast too fast). Both are
    great-circle distances (spherical cross-track / along-track formulas), so
    ``along² + cross² ≈ total²`` for errors that are small against the Earth's radius.

    Args:
        pred, truth: (T, 2) tracks (lat, lon) in degrees; NaN rows are lost centres.

    Returns:
        (along_km (T,), cross_km (T,)); NaN where either centre is lost or the motion is undefined.
    """
    pred, truth = np.asarray(pred, float), np.asarray(truth, float)
    theta_motion = motion_bearing(truth)
    d13 = great_circle_km(truth[:, 0], truth[:, 1], pred[:, 0], pred[:, 1]) / radius_km  # angular distance
    theta13 = initial_bearing(truth[:, 0], truth[:, 1], pred[:, 0], pred[:, 1])
    with np.errstate(invalid="ignore"):
        dxt = np.arcsin(np.clip(np.sin(d13) * np.sin(theta13 - theta_motion), -1.0, 1.0))
        dat = np.arccos(np.clip(np.cos(d13) / np.cos(dxt), -1.0, 1.0)) * np.sign(np.cos(theta13 - theta_motion))
    # a forecast exactly on the observed centre has no bearing: both errors are 0
    same = d13 == 0
    dat, dxt = np.where(same & np.isfinite(theta_motion), 0.0, dat), np.where(same & np.isfinite(theta_motion), 0.0, dxt)
    return dat * radius_km, dxt * radius_km


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


def track_forecast(
    forecast_path: str,
    start: tuple[float, float],
    init_index: int = 0,
    truth_path: str | None = None,
    radius_km: float = 300.0,
    variable: str = "mean_sea_level_pressure",
) -> dict:
    """Track a cyclone in one init of a forecast store (members and ensemble mean), optionally against truth.

    Returns:
        JSON-able dict: valid times, member tracks, mean-field track, the strike-probability map and
        its grid (``lat``, ``lon``); with ``truth_path`` also the truth track, great-circle errors and
        signed along-/cross-track errors (km, :func:`along_cross_track_km`) per member and for the
        mean-field track.
    """
    import xarray as xr

    from apps.weather.data import WeatherDataError, check_finite, load_block, match_grid, open_weather, read_values
    from apps.weather.evaluate import _open_forecast

    src = str(forecast_path)
    fc = _open_forecast(forecast_path)  # a missing file or a non-forecast store: named
    if variable not in fc.data_vars:
        raise WeatherDataError(src, f"cyclone tracking needs this variable (the store has {sorted(map(str, fc.data_vars))})", variable)
    if not -fc.sizes["time"] <= init_index < fc.sizes["time"]:
        raise WeatherDataError(src, f"init index {init_index} out of range (the store has {fc.sizes['time']} inits)", "time")
    step = fc[variable].isel(time=init_index)
    mdim = next((d for d in ("realization", "number") if d in step.dims), None)
    where = f" at init {str(fc.time.values[init_index])[:16]}"
    fields = read_values(step.transpose(*([mdim] if mdim else []), "prediction_timedelta", "latitude", "longitude"), src, variable, where)
    check_finite(fields, src, variable, where)
    if mdim is None:
        fields = fields[None]
    lat, lon = fc.latitude.values, fc.longitude.values
    members, mean_track = track_ensemble(fields, lat, lon, start)
    valid = fc.valid_time.values[init_index] if "valid_time" in fc.coords else fc.time.values[init_index] + fc.prediction_timedelta.values
    out = {
        "valid_time": [str(v) for v in valid],
        "member_tracks": members.tolist(),
        "mean_field_track": mean_track.tolist(),
        "strike_probability": strike_probability(members, lat, lon, radius_km).tolist(),
        "radius_km": radius_km,
    }
    if truth_path is not None:
        truth = match_grid(open_weather(truth_path, variables=[variable]), lat, lon, truth_path)
        tindex = {t: i for i, t in enumerate(truth.time.values.astype("datetime64[ns]"))}
        absent = [str(v)[:16] for v in valid if v not in tindex]
        if absent:
            raise WeatherDataError(truth_path, f"no truth at valid time(s) {', '.join(absent)} of the track", "time")
        tf = load_block(truth, [variable], np.array([tindex[v] for v in valid]))[:, 0]  # read and checked, named
        ttrack = track(tf, lat, lon, start)
        out["truth_track"] = ttrack.tolist()
        out["mean_field_error_km"] = track_error_km(mean_track, ttrack).tolist()
        out["member_error_km"] = [track_error_km(m, ttrack).tolist() for m in members]
        at, xt = along_cross_track_km(mean_track, ttrack)
        out["mean_field_along_km"], out["mean_field_cross_km"] = at.tolist(), xt.tolist()
        per = [along_cross_track_km(m, ttrack) for m in members]
        out["member_along_km"] = [p[0].tolist() for p in per]
        out["member_cross_km"] = [p[1].tolist() for p in per]
    out["lat"], out["lon"] = np.asarray(lat, float).tolist(), np.asarray(lon, float).tolist()
    return out
