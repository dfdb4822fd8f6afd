"""Cyclone tracker on a planted vortex moving across the date line."""

from __future__ import annotations

import numpy as np

from apps.weather.cyclone import strike_probability, track, track_ensemble, track_error_km
from apps.weather.metrics import great_circle_km


def _vortex_fields(path, lat, lon, depth=3000.0, radius_deg=6.0, rng=None):
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    out = []
    for clat, clon in path:
        d = great_circle_km(clat, clon, la, lo) / 111.0
        f = 101000.0 + 5.0 * la - depth * np.exp(-((d / radius_deg) ** 2))
        if rng is not None:
            f = f + rng.normal(0, 20.0, f.shape)
        out.append(f)
    return np.stack(out)


def test_tracks_planted_vortex_across_dateline():
    lat = np.arange(-30.0, 60.1, 1.5)
    lon = np.arange(0.0, 360.0, 1.5)
    truth = np.array([(15.0 + 1.5 * t, (354.0 + 3.0 * t) % 360) for t in range(6)])
    fields = _vortex_fields(truth, lat, lon)
    got = track(fields, lat, lon, start=(16.0, 355.0))
    assert np.all(np.isfinite(got))
    err = track_error_km(got, truth)
    assert err.max() < 1.0  # on-grid centres are found exactly
    # ensemble: members displaced; the mean-field track and strike probability are sensible
    rng = np.random.default_rng(0)
    members = np.stack([_vortex_fields(truth + [0.0, 1.5 * (m - 2)], lat, lon, rng=rng) for m in range(5)])
    tracks, mean_track = track_ensemble(members, lat, lon, start=(16.0, 355.0))
    assert tracks.shape == (5, 6, 2) and np.all(np.isfinite(tracks))
    assert track_error_km(mean_track, truth).max() < 200.0
    p = strike_probability(tracks, lat, lon, radius_km=300.0)
    j, i = np.argmin(np.abs(lat - 18.0)), np.argmin(np.abs(lon - 0.0))
    assert p[j, i] == 1.0
    assert p[np.argmin(np.abs(lat - 50.0)), np.argmin(np.abs(lon - 180.0))] == 0.0


def test_lost_track_is_nan():
    lat = np.arange(-30.0, 30.1, 1.5)
    lon = np.arange(0.0, 360.0, 1.5)
    flat = np.full((3, lat.size, lon.size), 101000.0) + lat[None, :, None] * 10.0  # monotone in lat: no minimum
    got = track(flat, lat, lon, start=(0.0, 100.0))
    assert np.all(np.isnan(got))
