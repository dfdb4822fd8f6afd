"""A beating-heart phantom with an ultrasound look, with known LV volumes and ejection fraction.

Geometry (mm, apical view, transducer at the top centre, depth downwards): the LV cavity is a
half prolate spheroid truncated at the mitral plane, long semi-axis ``L`` (apex → base) and short
semi-axes ``r2`` (seen in the 2-chamber view) and ``r4`` (4-chamber view), so its volume is exactly
``V = 2/3·π·L·r2·r4``. The apex stays fixed and the base descends during systole, as in a real heart.
The myocardium is a shell of thickness ``wall``; the left atrium an ellipse beyond the mitral plane;
the 4-chamber view also shows a right ventricle (unlabelled). Between ED (phase 0) and ES (phase 1)
``L`` shrinks by ``(1−EF)^¼`` and the radii by ``(1−EF)^⅜`` so that ``V_ES/V_ED = 1 − EF`` exactly.

Rendering: echogenicity per tissue × Rayleigh speckle (complex Gaussian field blurred more laterally
than axially) × depth attenuation, lateral-wall dropout, clutter in the cavity, log compression,
sector mask. ``ImageQuality`` (Good/Medium/Poor) sets the noise, dropout and contrast.

Everything is deterministic from ``(seed, patient index)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

QUALITIES = ("Good", "Medium", "Poor")
SECTOR_HALF_ANGLE = math.radians(38.0)


@dataclass(frozen=True)
class PatientSpec:
    """One synthetic patient: shape at ED, EF and acquisition details."""

    index: int
    ef: float  # percent
    length_ed: float  # mm, apex → mitral plane
    r2_ed: float  # mm, short semi-axis in the 2CH plane
    r4_ed: float  # mm, short semi-axis in the 4CH plane
    wall: float  # mm, myocardial thickness at ED
    apex_depth: float  # mm from the transducer
    tilt2: float  # radians, long-axis tilt in the 2CH image
    tilt4: float
    quality: str
    n_half: int  # frames from ED to ES (half sequence, both included)
    frame_rate: float
    sex: str
    age: int
    seed: int

    @property
    def es_scale(self) -> tuple[float, float]:
        """(length factor, radius factor) at ES."""
        keep = 1.0 - self.ef / 100.0
        return keep**0.25, keep**0.375

    def shape_at(self, phase: float) -> tuple[float, float, float]:
        """(L, r2, r4) in mm at ``phase`` ∈ [0, 1] (0 = ED, 1 = ES)."""
        c = 0.5 - 0.5 * math.cos(math.pi * min(max(phase, 0.0), 1.0))
        sl, sr = self.es_scale
        fl = 1.0 - c * (1.0 - sl)
        fr = 1.0 - c * (1.0 - sr)
        return self.length_ed * fl, self.r2_ed * fr, self.r4_ed * fr

    def volume_ml(self, phase: float) -> float:
        """Exact LV cavity volume (ml) of the half spheroid at ``phase``."""
        length, r2, r4 = self.shape_at(phase)
        return 2.0 / 3.0 * math.pi * length * r2 * r4 / 1000.0

    @property
    def edv(self) -> float:
        return self.volume_ml(0.0)

    @property
    def esv(self) -> float:
        return self.volume_ml(1.0)


def make_patient(index: int, seed: int = 0) -> PatientSpec:
    """Draw patient ``index`` (1-based) deterministically from ``seed``."""
    rng = np.random.default_rng([seed, index])
    quality = QUALITIES[int(rng.choice(3, p=[0.4, 0.4, 0.2]))]
    return PatientSpec(
        index=index,
        ef=float(rng.uniform(25.0, 72.0)),
        length_ed=float(rng.uniform(74.0, 92.0)),
        r2_ed=float(rng.uniform(20.0, 26.0)),
        r4_ed=float(rng.uniform(20.0, 26.0)),
        wall=float(rng.uniform(8.0, 11.0)),
        apex_depth=float(rng.uniform(18.0, 26.0)),
        tilt2=float(math.radians(rng.uniform(-8.0, 8.0))),
        tilt4=float(math.radians(rng.uniform(-8.0, 8.0))),
        quality=quality,
        n_half=int(rng.integers(10, 17)),
        frame_rate=float(np.round(rng.uniform(40.0, 60.0), 1)),
        sex=str(rng.choice(["F", "M"])),
        age=int(rng.integers(25, 90)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


@dataclass(frozen=True)
class Grid:
    """Pixel grid of a view: ``shape`` (H, W), ``spacing`` (dy, dx) mm; the transducer sits at the top centre."""

    shape: tuple[int, int]
    spacing: tuple[float, float]

    @staticmethod
    def for_depth(shape: tuple[int, int], depth_mm: float = 165.0) -> "Grid":
        width_mm = 2.0 * depth_mm * math.sin(SECTOR_HALF_ANGLE) + 10.0
        return Grid(shape, (depth_mm / shape[0], width_mm / shape[1]))

    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """(y, x) in mm of every pixel centre, each ``(H, W)``; x = 0 under the transducer."""
        h, w = self.shape
        dy, dx = self.spacing
        y = (np.arange(h) + 0.5) * dy
        x = (np.arange(w) + 0.5) * dx - w * dx / 2.0
        return np.meshgrid(y, x, indexing="ij")

    def to_pixel(self, y_mm: float, x_mm: float) -> tuple[float, float]:
        """(row, col) float pixel coordinates of a point in mm (pixel centres at integers)."""
        dy, dx = self.spacing
        return y_mm / dy - 0.5, (x_mm + self.shape[1] * dx / 2.0) / dx - 0.5


def axis_frame(spec: PatientSpec, view: str, phase: float) -> dict[str, np.ndarray | float]:
    """Apex, base centre, long-axis unit vector e (apex → base) and normal n, in (y, x) mm."""
    tilt = spec.tilt2 if view == "2CH" else spec.tilt4
    e = np.array([math.cos(tilt), math.sin(tilt)])
    n = np.array([-e[1], e[0]])
    length, r2, r4 = spec.shape_at(phase)
    apex = spec.apex_depth * e
    base = apex + length * e
    return {"apex": apex, "base": base, "e": e, "n": n, "length": length, "radius": r2 if view == "2CH" else r4}


def labels(spec: PatientSpec, view: str, phase: float, grid: Grid) -> np.ndarray:
    """CAMUS label map ``(H, W)`` uint8: 0 background, 1 LV cavity, 2 myocardium, 3 left atrium."""
    y, x = grid.coords()
    f = axis_frame(spec, view, phase)
    base, e, n = f["base"], f["e"], f["n"]
    length, radius = f["length"], f["radius"]
    u = -((y - base[0]) * e[0] + (x - base[1]) * e[1])  # distance from the mitral plane towards the apex
    v = (y - base[0]) * n[0] + (x - base[1]) * n[1]
    # Systolic thickening keeps myocardial area roughly constant.
    r_ed = spec.r2_ed if view == "2CH" else spec.r4_ed
    wall = spec.wall * (r_ed / radius) ** 0.5
    lv = (u >= 0) & ((u / length) ** 2 + (v / radius) ** 2 <= 1.0)
    myo = (u >= 0) & ((u / (length + wall)) ** 2 + (v / (radius + wall)) ** 2 <= 1.0) & ~lv
    la_len = 0.55 * spec.length_ed * (1.0 + 0.25 * (phase))  # the atrium fills while the LV empties
    la_r = 0.85 * spec.r4_ed * (1.0 + 0.15 * phase)
    uc = u + 2.0 + la_len / 2.0
    la = (u < -2.0) & ((uc / (la_len / 2.0)) ** 2 + (v / la_r) ** 2 <= 1.0)
    out = np.zeros(grid.shape, dtype=np.uint8)
    out[la] = 3
    out[myo] = 2
    out[lv] = 1
    return out


def _rv(spec: PatientSpec, view: str, phase: float, grid: Grid) -> np.ndarray:
    """Right-ventricle cavity (4CH only): a narrower ellipse beside the septum."""
    if view != "4CH":
        return np.zeros(grid.shape, dtype=bool)
    y, x = grid.coords()
    f = axis_frame(spec, view, phase)
    base, e, n = f["base"], f["e"], f["n"]
    centre = base - 0.5 * f["length"] * e - (f["radius"] + spec.wall + 16.0) * n
    u = (y - centre[0]) * e[0] + (x - centre[1]) * e[1]
    v = (y - centre[0]) * n[0] + (x - centre[1]) * n[1]
    return (u / (0.45 * spec.length_ed)) ** 2 + (v / 14.0) ** 2 <= 1.0


def sector_mask(grid: Grid, depth_mm: float | None = None) -> np.ndarray:
    """Pixels inside the ultrasound fan ``(H, W)`` bool."""
    y, x = grid.coords()
    depth_mm = depth_mm or grid.shape[0] * grid.spacing[0]
    return (np.hypot(y, x) <= depth_mm) & (np.abs(np.arctan2(x, y)) <= SECTOR_HALF_ANGLE)


def tissue_texture(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """Slowly varying background echogenicity ``(H, W)`` (drawn once per sequence: tissue does not flicker)."""
    return np.clip(0.32 + 0.48 * ndimage.gaussian_filter(rng.standard_normal(grid.shape), 6.0), 0.1, 0.6)


def _valve(spec: PatientSpec, view: str, phase: float, grid: Grid) -> np.ndarray:
    """Mitral annulus/leaflets: a bright band across the 2 mm gap between LV and LA (unlabelled)."""
    y, x = grid.coords()
    f = axis_frame(spec, view, phase)
    base, e, n = f["base"], f["e"], f["n"]
    u = -((y - base[0]) * e[0] + (x - base[1]) * e[1])
    v = (y - base[0]) * n[0] + (x - base[1]) * n[1]
    return (u < 0) & (u >= -2.5) & (np.abs(v) <= f["radius"] + spec.wall)


def render(spec: PatientSpec, view: str, phase: float, grid: Grid, rng: np.random.Generator,
           tissue: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One B-mode frame.

    Returns:
        image: ``(H, W)`` uint8; label: ``(H, W)`` uint8 (see :func:`labels`).
    """
    lab = labels(spec, view, phase, grid)
    q = QUALITIES.index(spec.quality)
    y, x = grid.coords()
    depth = np.hypot(y, x)
    angle = np.arctan2(x, y)
    echo = (tissue_texture(grid, rng) if tissue is None else tissue).copy()
    echo[lab == 2] = 0.8
    echo[_valve(spec, view, phase, grid)] = 0.55 - 0.1 * q
    blood = 0.04 + 0.05 * q
    echo[(lab == 1) | (lab == 3) | _rv(spec, view, phase, grid)] = blood
    # Dropout: a band of angles on the lateral wall loses signal (specular reflection, rib shadow).
    if q > 0 or rng.random() < 0.3:
        centre = rng.uniform(-0.6, 0.6) * SECTOR_HALF_ANGLE
        width = math.radians(4.0 + 5.0 * q)
        band = np.exp(-0.5 * ((angle - centre) / width) ** 2)
        echo = echo * (1.0 - (0.35 + 0.2 * q) * band)
    # Rayleigh speckle: |complex Gaussian| blurred anisotropically (resolution cell longer laterally).
    sy = 0.6 / grid.spacing[0] * 1.2
    sx = 1.6 / grid.spacing[1] * 1.2
    field = ndimage.gaussian_filter(rng.standard_normal(grid.shape), (sy, sx)) + 1j * ndimage.gaussian_filter(
        rng.standard_normal(grid.shape), (sy, sx)
    )
    speckle = np.abs(field)
    speckle /= speckle.mean() + 1e-8
    attenuation = np.exp(-(0.004 + 0.002 * q) * depth) * (1.0 + 0.004 * depth)  # partial TGC
    signal = echo * speckle * attenuation + (0.02 + 0.03 * q) * np.abs(rng.standard_normal(grid.shape))
    img = np.log1p(30.0 * signal) / np.log1p(30.0)
    img = np.clip(img * (1.0 - 0.12 * q), 0.0, 1.0)
    img[~sector_mask(grid)] = 0.0
    return np.round(img * 255).astype(np.uint8), lab


def half_sequence(spec: PatientSpec, view: str, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """ED → ES frames: images ``(N, H, W)`` uint8 and labels ``(N, H, W)`` uint8, N = ``spec.n_half``."""
    rng = np.random.default_rng([spec.seed, 2 if view == "2CH" else 4])
    phases = np.linspace(0.0, 1.0, spec.n_half)
    tissue = tissue_texture(grid, rng)
    frames = [render(spec, view, float(p), grid, rng, tissue) for p in phases]
    return np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames])


def cycle_phase(frame: int, period: int, systole: float = 0.38) -> float:
    """Phase (0 = ED, 1 = ES) of ``frame`` in a periodic cycle starting at ED."""
    s = (frame % period) / period
    return s / systole if s < systole else 1.0 - (s - systole) / (1.0 - systole)
