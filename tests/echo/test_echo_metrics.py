"""Clinical metrics: overlap, surface distances in mm, volumes by disks / Simpson / area-length, EF."""

from __future__ import annotations

import math

import numpy as np
import pytest

from apps.echo import metrics
from apps.echo.phantom import Grid, labels, make_patient


def _square(n, half, centre=None):
    m = np.zeros((n, n), bool)
    c = centre if centre is not None else (n // 2, n // 2)
    m[c[0] - half:c[0] + half, c[1] - half:c[1] + half] = True
    return m


def test_dice_iou_exact():
    a = np.zeros((10, 10), bool); a[:, :4] = True
    b = np.zeros((10, 10), bool); b[:, 2:6] = True
    dice, iou = metrics.overlap(a, b)
    assert dice == pytest.approx(0.5) and iou == pytest.approx(1 / 3)


def test_empty_conventions():
    z = np.zeros((8, 8), bool)
    assert metrics.overlap(z, z) == (1.0, 1.0) and metrics.surface_distances(z, z) == (0.0, 0.0)
    assert metrics.overlap(_square(8, 2), z) == (0.0, 0.0)
    assert all(math.isnan(v) for v in metrics.surface_distances(_square(8, 2), z))


def test_surface_distances_use_spacing():
    inner, outer = _square(64, 10), _square(64, 13)
    hd_px, asd_px = metrics.surface_distances(inner, outer)
    hd_mm, asd_mm = metrics.surface_distances(inner, outer, spacing=(0.5, 0.5))
    assert 3.0 <= hd_px <= 3 * math.sqrt(2) + 1e-6
    assert hd_mm == pytest.approx(hd_px / 2) and asd_mm == pytest.approx(asd_px / 2)
    # anisotropic spacing stretches only the x distances
    a = np.zeros((40, 40), bool); a[10:30, 10:20] = True
    b = np.zeros((40, 40), bool); b[10:30, 10:23] = True
    hd, _ = metrics.surface_distances(a, b, spacing=(1.0, 2.0))
    assert hd == pytest.approx(6.0)


def test_pooled_dice_weights_large_masks():
    big, small = _square(40, 15), _square(40, 2)
    preds = [big, np.zeros_like(small)]
    assert metrics.pooled_dice(preds, [big, small]) > 0.95 > 0.5 == np.mean([metrics.overlap(p, g)[0] for p, g in zip(preds, [big, small])])


def test_prolate_spheroid_closed_form():
    L, D = 80.0, 40.0
    exact = math.pi * L * D**2 / 6
    area = math.pi * L * D / 4
    assert metrics.area_length_volume(area, L) == pytest.approx(exact)
    x = (np.arange(20) + 0.5) / 20 * 2 - 1  # disk centres along the long axis, −1..1
    chords = D * np.sqrt(1 - x**2)
    assert metrics.disks_volume(chords, L) == pytest.approx(exact, rel=5e-3)
    assert metrics.biplane_volume(chords, chords, L / 20) == pytest.approx(exact, rel=5e-3)
    assert metrics.ejection_fraction(100.0, 40.0) == 60.0


def test_lv_geometry_on_an_ellipse_mask():
    # a full ellipse (spheroid section), long axis vertical, anisotropic pixels
    dy, dx = 0.4, 0.6
    yy, xx = np.mgrid[0:300, 0:200]
    L, D = 90.0, 40.0
    mask = ((yy * dy - 60) / (L / 2)) ** 2 + ((xx * dx - 60) / (D / 2)) ** 2 <= 1
    # truncate at the widest line to make a mitral plane → half spheroid
    mask &= yy * dy <= 60
    g = metrics.lv_geometry(mask, (dy, dx))
    assert g["length"] == pytest.approx(L / 2, rel=0.03)
    assert g["diameters"][1:3] == pytest.approx(D * np.sqrt(1 - (np.array([1.5, 2.5]) / 20) ** 2), rel=0.04)
    v = metrics.single_plane_volume(mask, (dy, dx)) * 1000
    half = 2 / 3 * math.pi * (L / 2) * (D / 2) ** 2
    assert v == pytest.approx(half, rel=0.05)


def test_biplane_simpson_on_phantom_recovers_ef():
    spec = make_patient(5, 0)
    g = Grid.for_depth((384, 312))
    m = {(v, p): labels(spec, v, p, g) == 1 for v in ("2CH", "4CH") for p in (0.0, 1.0)}
    r = metrics.biplane_simpson(m["2CH", 0.0], m["2CH", 1.0], m["4CH", 0.0], m["4CH", 1.0], g.spacing, g.spacing)
    assert r["edv"] == pytest.approx(spec.edv, rel=0.08) and r["esv"] == pytest.approx(spec.esv, rel=0.1)
    assert abs(r["ef"] - spec.ef) < 3.0
    rg = metrics.biplane_simpson(m["2CH", 0.0], m["2CH", 1.0], m["4CH", 0.0], m["4CH", 1.0], g.spacing, g.spacing, height="global")
    assert rg["esv"] > r["esv"] and rg["edv"] == pytest.approx(r["edv"])
    rr = metrics.biplane_simpson(m["2CH", 0.0], m["2CH", 1.0], m["4CH", 0.0], m["4CH", 1.0], g.spacing, g.spacing, rounded=True)
    assert rr["ef"] == round(rr["ef"]) and rr["edv"] == round(rr["edv"])
    with pytest.raises(ValueError, match="height must be one of"):
        metrics.biplane_simpson(m["2CH", 0.0], m["2CH", 1.0], m["4CH", 0.0], m["4CH", 1.0], g.spacing, g.spacing, height="x")


def test_agreement_bland_altman():
    ref = np.array([50.0, 60.0, 40.0, 30.0])
    a = metrics.agreement(ref + np.array([1.0, -1.0, 1.0, -1.0]) + 2, ref)
    assert a["mae"] == pytest.approx(2.0, abs=1.0) and a["bias"] == pytest.approx(2.0)
    assert a["loa_high"] - a["bias"] == pytest.approx(1.96 * np.std([1, -1, 1, -1], ddof=1))
