"""Beat-by-beat ED/ES detection on a sequence from its per-frame LV area, and temporal consistency.

ES frames are the minima of the LV area curve found with EchoNet-Dynamic's rule
``scipy.signal.find_peaks(−area, distance=20, prominence=0.5·(p95 − p5))``, where p5/p95 are the 5th and
95th percentiles of the area. EchoNet's ``distance = 20`` frames is for its 50 fps videos (0.4 s, i.e.
heart rates up to 150 bpm); at another frame rate we keep the same 0.4 s: ``distance = round(20·fps/50)``
(e.g. 8 frames at 20 fps, 12 at 30 fps), and 20 frames when the rate is unknown. The prominence rule is
frame-rate free. The ED frame of a beat is the largest area between the previous ES (or the first frame)
and this ES; a beat is (ED, ES) with ED < ES. When no ES minimum is found (a half sequence ED → ES has
its minimum at the end, where ``find_peaks`` never reports one) the whole sequence is one beat with ED =
global maximum, ES = global minimum (``method = "global extremes"``). A constant area curve has no ED/ES
pair: one beat ``(0, 0)`` with ``method = "flat area curve"``, whose EF the pipeline reports as missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ECHONET_FPS = 50.0
ECHONET_DISTANCE = 20


@dataclass(frozen=True)
class Beat:
    ed: int
    es: int


def peak_distance(fps: float | None) -> int:
    """``find_peaks`` distance in frames: EchoNet's 20 frames at 50 fps, the same 0.4 s at ``fps``."""
    if fps is None or not np.isfinite(fps) or fps <= 0:
        return ECHONET_DISTANCE
    return max(1, int(round(ECHONET_DISTANCE * fps / ECHONET_FPS)))


def detect_beats(area: np.ndarray, fps: float | None = None, prominence_frac: float = 0.5) -> tuple[list[Beat], str]:
    """Beats of an LV area curve ``area: (N,)``.

    Returns:
        ``(beats, method)``: beats in time order; ``method`` is ``"find_peaks"`` or ``"global extremes"``.
    """
    from scipy.signal import find_peaks

    a = np.asarray(area, dtype=np.float64)
    if a.ndim != 1 or len(a) < 2:
        raise ValueError(f"area must be a 1-D curve of at least 2 frames, got shape {a.shape}")
    p5, p95 = np.percentile(a, [5, 95])
    beats: list[Beat] = []
    if p95 > p5:
        es_frames, _ = find_peaks(-a, distance=peak_distance(fps), prominence=prominence_frac * (p95 - p5))
        start = 0
        for es in es_frames:
            ed = start + int(np.argmax(a[start:es])) if es > start else es
            if ed < es:
                beats.append(Beat(ed, int(es)))
            start = int(es)
    if beats:
        return beats, "find_peaks"
    if a.max() == a.min():  # e.g. identical frames: nothing tells ED from ES, so no EF (it came out as 0 %)
        return [Beat(0, 0)], "flat area curve"
    return [Beat(int(np.argmax(a)), int(np.argmin(a)))], "global extremes"


def temporal_consistency(masks: np.ndarray, area: np.ndarray | None = None) -> dict[str, float]:
    """Smoothness of a per-frame segmentation ``masks: (N, H, W)`` bool.

    - ``frame_dice_mean`` / ``frame_dice_min``: Dice between consecutive frames' masks (1 = identical;
      a real heart changes little between frames at 20–50 fps, flicker lowers it);
    - ``area_roughness``: mean |second difference| of the area curve divided by its mean |first
      difference| (≈ 0 for a smooth curve sampled finely, ~2 for frame-to-frame zig-zag noise).
    """
    m = np.asarray(masks, bool)
    if m.ndim != 3 or len(m) < 2:
        raise ValueError(f"masks must be (N >= 2, H, W), got shape {m.shape}")
    flat = m.reshape(len(m), -1)
    inter = (flat[1:] & flat[:-1]).sum(1).astype(float)
    size = flat[1:].sum(1) + flat[:-1].sum(1)
    dice = np.where(size > 0, 2 * inter / np.maximum(size, 1), 1.0)
    a = flat.sum(1).astype(float) if area is None else np.asarray(area, float)
    d1, d2 = np.abs(np.diff(a)), np.abs(np.diff(a, n=2)) if len(a) > 2 else np.zeros(0)
    rough = float(d2.mean() / d1.mean()) if len(d2) and d1.mean() > 0 else float("nan")
    return {"frame_dice_mean": float(dice.mean()), "frame_dice_min": float(dice.min()), "area_roughness": rough}
