"""Synthetic abdominal phantoms (CT-like and MR-like) with organ label maps, written in the MSD layout.

The embedded default dataset: no download, deterministic from a seed. Each case is an axial stack
(X, Y, Z) in RAS with a body ellipse, subcutaneous fat, a vertebra, and five labelled organs whose
position, size and shape vary per case and along z (ellipsoids with random axes and a wobble),
plus an optional liver lesion. Intensities follow rough HU (CT) or T1-like (MR) contrasts, with
smooth organ texture and Gaussian noise.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import ndimage

from apps.medseg.labels import LabelDict
from apps.medseg.layouts import DatasetWriter

PHANTOM_LABELS = LabelDict(("background", "liver", "spleen", "kidney_left", "kidney_right", "stomach", "liver_lesion"))

# Tissue intensities: (CT HU mean, portal-venous-like contrast; MR mean on 0..1000).
_TISSUE = {
    "air": (-1000.0, 0.0), "fat": (-100.0, 800.0), "body": (40.0, 350.0), "bone": (600.0, 150.0),
    "liver": (110.0, 450.0), "spleen": (140.0, 300.0), "kidney_left": (190.0, 250.0),
    "kidney_right": (190.0, 250.0), "stomach": (-40.0, 120.0), "liver_lesion": (40.0, 180.0),
}
# Organ layout in body-normalised coordinates (x: patient left = +, y: anterior = +), radii fractions.
_ORGANS = {
    # name: (cx, cy, rx, ry, z-extent fraction lo, hi)
    "liver": (-0.38, 0.05, 0.42, 0.45, 0.0, 0.85),
    "spleen": (0.55, -0.2, 0.17, 0.25, 0.1, 0.7),
    "kidney_left": (0.35, -0.55, 0.15, 0.2, 0.35, 1.0),
    "kidney_right": (-0.35, -0.55, 0.15, 0.2, 0.45, 1.0),
    "stomach": (0.25, 0.3, 0.25, 0.22, 0.05, 0.6),
}


def _field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Smooth zero-mean unit-std random field (organ texture)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (f - f.mean()) / (f.std() + 1e-8)


def make_volume(
    rng: np.random.Generator,
    modality: Literal["CT", "MR"] = "CT",
    shape: tuple[int, int, int] = (64, 64, 16),
    lesion_prob: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """One phantom case.

    Returns:
        image: (X, Y, Z) float32 (HU for CT, 0..1000 for MR); label: (X, Y, Z) uint8 ids of
        :data:`PHANTOM_LABELS`.
    """
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality: unknown {modality!r}; allowed: ['CT', 'MR']")
    mi = 0 if modality == "CT" else 1
    nx, ny, nz = shape
    x = np.linspace(-1, 1, nx)[:, None, None]
    y = np.linspace(-1, 1, ny)[None, :, None]
    z = np.linspace(0, 1, nz)[None, None, :]
    bx, by = 0.85 + 0.08 * rng.standard_normal(), 0.65 + 0.06 * rng.standard_normal()
    body = (x / bx) ** 2 + (y / by) ** 2 <= 1.0
    body = np.broadcast_to(body, shape)
    inner = (x / (bx - 0.08)) ** 2 + (y / (by - 0.08)) ** 2 <= 1.0
    inner = np.broadcast_to(inner, shape)
    label = np.zeros(shape, np.uint8)
    tissue = np.full(shape, _TISSUE["air"][mi], np.float32)
    tissue[body] = _TISSUE["fat"][mi]
    tissue[inner] = _TISSUE["body"][mi]
    vert = (x / 0.1) ** 2 + ((y + by * 0.72) / 0.1) ** 2 <= 1.0
    tissue[np.broadcast_to(vert, shape)] = _TISSUE["bone"][mi]
    for lid, name in enumerate(PHANTOM_LABELS.names[1:6], start=1):
        cx, cy, rx, ry, zlo, zhi = _ORGANS[name]
        cx, cy = cx * bx + 0.05 * rng.standard_normal(), cy * by + 0.04 * rng.standard_normal()
        rx, ry = rx * bx * np.exp(0.12 * rng.standard_normal()), ry * by * np.exp(0.12 * rng.standard_normal())
        zlo, zhi = zlo + 0.08 * rng.standard_normal(), zhi + 0.08 * rng.standard_normal()
        zc, zr = (zlo + zhi) / 2, max((zhi - zlo) / 2, 0.1)
        prof = np.sqrt(np.clip(1 - ((z - zc) / zr) ** 2, 0, 1))  # ellipsoidal taper along z
        ang = np.arctan2(y - cy, x - cx)
        wobble = 1 + 0.1 * np.sin(3 * ang + rng.uniform(0, 2 * np.pi)) + 0.05 * np.sin(5 * ang + rng.uniform(0, 2 * np.pi))
        r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
        organ = (r <= wobble * prof) & inner & (label == 0)
        label[organ] = lid
        tissue[organ] = _TISSUE[name][mi]
    if rng.random() < lesion_prob and (label == 1).any():
        pts = np.argwhere(label == 1)
        c = pts[rng.integers(len(pts))]
        rad = rng.uniform(2.0, 4.0) * nx / 64
        gx, gy, gz = np.ogrid[:nx, :ny, :nz]
        les = ((gx - c[0]) ** 2 + (gy - c[1]) ** 2 + ((gz - c[2]) * 2.0) ** 2 <= rad**2) & (label == 1)
        label[les] = 6
        tissue[les] = _TISSUE["liver_lesion"][mi]
    scale = 25.0 if mi == 0 else 40.0
    texture = _field(rng, shape, sigma=1.5) * scale * 0.6 + _field(rng, shape, sigma=4.0) * scale * 0.4
    image = tissue + np.where(body, texture, 0.0)
    image = ndimage.gaussian_filter(image, 0.6)  # partial-volume blur
    image = image + rng.standard_normal(shape) * (12.0 if mi == 0 else 20.0)
    if mi == 1:  # MR: smooth multiplicative bias field, no absolute scale
        image = np.clip(image * (1 + 0.15 * _field(rng, shape, sigma=12.0)), 0, None)
    return image.astype(np.float32), label


def write_phantom_msd(
    out: str | os.PathLike,
    n_cases: int = 8,
    modality: Literal["CT", "MR"] = "CT",
    seed: int = 0,
    shape: tuple[int, int, int] = (64, 64, 16),
    spacing: tuple[float, float, float] = (5.0, 5.0, 6.0),
    lesion_prob: float = 0.3,
) -> Path:
    """Write ``n_cases`` phantoms as an MSD dataset at ``out`` (refuses an existing folder).

    Case ``i`` depends only on ``(seed, i)``: ``np.random.default_rng([seed, i])``.
    Returns the MSD root (``out`` itself).
    """
    from dualsci.io import atomic_dir

    out = Path(out)
    with atomic_dir(out) as tmp:
        writer = DatasetWriter(tmp, PHANTOM_LABELS, modality, name=f"Phantom{modality}", layouts=("msd",),
                               description=f"dualsci synthetic abdominal {modality} phantom, seed {seed}")
        affine = np.diag([*spacing, 1.0])
        ids = []
        for i in range(n_cases):
            image, label = make_volume(np.random.default_rng([seed, i]), modality, shape, lesion_prob)
            case = f"phantom_{modality.lower()}_{i:03d}"
            writer.add_case(case, image, label, affine)
            ids.append(case)
        writer.finalize(ids)
        # Flatten: the MSD root is `out` itself.
        msd_root = writer.roots["msd"]
        for item in msd_root.iterdir():
            item.rename(tmp / item.name)
        msd_root.rmdir()
        msd_root.parent.rmdir()
    return out
