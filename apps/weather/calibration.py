"""Per-lead ensemble spread calibration: scale members' departures from the ensemble mean.

A calibrated member is ``x̄ + s_ℓ · (x_m − x̄)``: the ensemble mean is unchanged and the unbiased
ensemble variance V is multiplied by ``s_ℓ²``. The unbiased spread–skill ratio of WB2
(``apps.weather.metrics``) is ``r² = V / (E − V/M)`` with E the ensemble-mean MSE and M members: the
debiasing term ``V/M`` scales with ``s²`` too, so ``1/r`` is NOT the factor that gives SSR = 1. Solving
``s²V = E − s²V/M`` with ``E = V/r² + V/M`` gives

    s_ℓ = sqrt((1/r² + 1/M) / (1 + 1/M)),

which makes the unbiased SSR exactly 1 on the window it is fitted on (≈ 1/r for large M). The
factors must be fitted on data the model did not train on and that is not the test period (the
benchmark holds out the end of the training period). Factors are clipped to ``[clip_min, clip_max]`` so that a degenerate validation
score (tiny or infinite SSR) cannot blow the ensemble up or collapse it.

Stored as JSON ``{"kind": "spread_scale", "factors": {channel: {lead_hours: s}}, ...}`` (atomic write).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from dualsci.io import write_json_atomic


class CalibrationError(ValueError):
    """A calibration file or request that cannot be applied (names the file/channel/lead)."""


@dataclass
class SpreadCalibration:
    """Spread scale factors per channel and lead (hours).

    Args:
        factors: ``{channel: {lead_hours: s}}``, every ``s`` finite and > 0.
        source: free-text provenance (what window the factors were fitted on).
    """

    factors: dict[str, dict[int, float]]
    source: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean: dict[str, dict[int, float]] = {}
        for ch, per_lead in self.factors.items():
            clean[ch] = {}
            for lead, s in per_lead.items():
                s = float(s)
                if not math.isfinite(s) or s <= 0:
                    raise CalibrationError(f"spread factor for {ch!r} at lead {lead} h must be finite and > 0, got {s}")
                clean[ch][int(lead)] = s
        self.factors = clean

    def factor(self, channel: str, lead_hours: int) -> float:
        """The factor for (channel, lead); a clear error when the file does not cover it."""
        if channel not in self.factors:
            raise CalibrationError(f"calibration has no channel {channel!r} (has {sorted(self.factors)})")
        per = self.factors[channel]
        if int(lead_hours) not in per:
            raise CalibrationError(f"calibration for {channel!r} has no lead {int(lead_hours)} h (has {sorted(per)})")
        return per[int(lead_hours)]

    def check_covers(self, channels: Iterable[str], leads_hours: Iterable[int]) -> None:
        """Raise before any work if some (channel, lead) of a forecast has no factor."""
        for ch in channels:
            for lead in leads_hours:
                self.factor(ch, int(lead))

    def apply(self, ens: np.ndarray, channel: str, lead_hours: int) -> np.ndarray:
        """Scale departures from the member mean.

        Args:
            ens: (M, ...) members on the first axis.
        Returns:
            (M, ...) calibrated members, same mean over axis 0.
        """
        s = self.factor(channel, lead_hours)
        ens = np.asarray(ens)
        mean = ens.mean(axis=0, keepdims=True)
        return mean + s * (ens - mean)

    def save(self, path: str | os.PathLike) -> Path:
        data = {
            "kind": "spread_scale",
            "factors": {ch: {str(k): v for k, v in sorted(per.items())} for ch, per in self.factors.items()},
            "source": self.source,
        }
        write_json_atomic(path, data)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SpreadCalibration":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CalibrationError(f"{path}: cannot read calibration JSON ({e})") from e
        if not isinstance(data, dict) or data.get("kind") != "spread_scale" or not isinstance(data.get("factors"), dict):
            raise CalibrationError(f"{path}: not a spread calibration file (need kind 'spread_scale' and 'factors')")
        try:
            return cls({ch: {int(k): v for k, v in per.items()} for ch, per in data["factors"].items()}, data.get("source", {}))
        except (TypeError, ValueError, AttributeError) as e:
            raise CalibrationError(f"{path}: bad factors ({e})") from e


def fit_spread_scales(
    rows: Iterable[Mapping],
    region: str = "global",
    clip_min: float = 0.25,
    clip_max: float = 4.0,
    source: dict | None = None,
) -> SpreadCalibration:
    """``s_ℓ = clip(sqrt((1/r² + 1/M)/(1 + 1/M)))``, r = validation SSR (module docstring).

    Args:
        rows: score records (``apps.weather.evaluate`` ``scores``) with ``variable``, ``lead_hours``,
            ``region``, ``members`` and ``ssr`` (unbiased SSR).
        region: which region's SSR to use.
    """
    if not 0 < clip_min <= 1 <= clip_max:
        raise CalibrationError(f"need 0 < clip_min <= 1 <= clip_max, got {clip_min}, {clip_max}")
    factors: dict[str, dict[int, float]] = {}
    raw: dict[str, dict[int, float]] = {}
    for r in rows:
        if r["region"] != region:
            continue
        ssr = float(r["ssr"])
        if not math.isfinite(ssr) or ssr <= 0:
            raise CalibrationError(f"validation SSR for {r['variable']!r} at lead {r['lead_hours']} h is {ssr}: cannot calibrate")
        m = int(r["members"])
        if m < 2:
            raise CalibrationError(f"validation ensemble for {r['variable']!r} has {m} member(s): cannot calibrate")
        s = math.sqrt((1.0 / ssr**2 + 1.0 / m) / (1.0 + 1.0 / m))
        factors.setdefault(r["variable"], {})[int(r["lead_hours"])] = float(np.clip(s, clip_min, clip_max))
        raw.setdefault(r["variable"], {})[int(r["lead_hours"])] = ssr
    if not factors:
        raise CalibrationError(f"no score rows for region {region!r}")
    src = dict(source or {})
    src.update(region=region, clip=[clip_min, clip_max], validation_ssr={ch: {str(k): v for k, v in p.items()} for ch, p in raw.items()})
    return SpreadCalibration(factors, src)
