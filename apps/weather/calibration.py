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


def calibrate_store(
    forecast_path: str | os.PathLike, out_path: str | os.PathLike, calibration: "SpreadCalibration | str | os.PathLike"
) -> Path:
    """Write a calibrated copy of a finished forecast store (zarr folder or NetCDF file).

    Every ensemble variable (dims ``realization`` and ``prediction_timedelta``) becomes
    ``mean + s · (x − mean)`` with ``s`` per (channel, lead); the rest is copied. Lazy (dask, the store's
    chunks), so memory does not grow with inits or leads; the output appears only when complete
    (``dualsci.io.atomic_dir`` / temp file + rename). Raises :class:`CalibrationError` naming the
    forecast when a (channel, lead) has no factor, before writing anything.
    """
    import xarray as xr

    from apps.weather.data import channel_names
    from dualsci.io import atomic_dir

    from apps.weather.data import WeatherDataError
    from apps.weather.sampling import cf_encoding, with_cf_coordinates

    dst = Path(out_path)
    if dst.exists():
        raise FileExistsError(f"{dst}: output already exists (refusing to overwrite)")
    calib = calibration if isinstance(calibration, SpreadCalibration) else SpreadCalibration.load(calibration)
    src = Path(forecast_path)
    fc = xr.open_zarr(src, consolidated=False) if src.is_dir() else xr.open_dataset(src, chunks={})
    if fc.attrs.get("store") == "latent":  # scaling latents about their mean is not scaling the decoded members
        raise CalibrationError(f"{src}: a latent-only store; decode it first (dualsci-weather decode) and calibrate that")
    ens_vars = [v for v in fc.data_vars if {"realization", "prediction_timedelta"} <= set(fc[v].dims)]
    if not ens_vars:
        raise CalibrationError(f"{src}: no ensemble variable (dims realization and prediction_timedelta)")
    leads = [int(x / np.timedelta64(1, "h")) for x in fc.prediction_timedelta.values]
    try:
        calib.check_covers(channel_names(fc, ens_vars), leads)
    except CalibrationError as e:
        raise CalibrationError(f"{src}: {e}") from None
    out = fc.copy()
    for v in ens_vars:
        da = fc[v]
        if "level" in da.dims:
            levels = fc["level"].values
            names = channel_names(fc, [v])
            f = np.array([[calib.factor(n, lead) for n in names] for lead in leads])  # (L, levels)
            s = xr.DataArray(f, dims=("prediction_timedelta", "level"), coords={"prediction_timedelta": fc.prediction_timedelta, "level": levels})
        else:
            s = xr.DataArray([calib.factor(v, lead) for lead in leads], dims=("prediction_timedelta",), coords={"prediction_timedelta": fc.prediction_timedelta})
        mean = da.mean("realization")
        out[v] = (mean + s * (da - mean)).transpose(*da.dims).astype(da.dtype)
        out[v].attrs = dict(da.attrs)
    out.attrs = dict(fc.attrs)
    out.attrs["spread_calibration"] = json.dumps({"factors": {c: {str(k): x for k, x in p.items()} for c, p in calib.factors.items()}, "source": calib.source})
    for v in out.variables:
        out[v].encoding = {}
    out = with_cf_coordinates(out)  # each field keeps its own auxiliary coordinates (valid_time, its height)
    try:  # the store is read while the copy is written: a damaged chunk fails here, named
        if str(dst).endswith((".nc", ".nc4")):
            dst.parent.mkdir(parents=True, exist_ok=True)
            part = dst.with_name(f".{dst.name}.part")
            try:
                out.to_netcdf(part, encoding=cf_encoding(out))
                os.replace(part, dst)
            finally:
                part.unlink(missing_ok=True)
        else:
            with atomic_dir(dst) as tmp:
                out.chunk({d: -1 for d in out.dims if d not in ("time", "realization")}).to_zarr(
                    tmp, mode="w", consolidated=False, zarr_format=3, encoding=cf_encoding(out))
    except (OSError, RuntimeError, ValueError) as exc:
        raise WeatherDataError(src, f"calibrated copy {dst} not written: {type(exc).__name__}: {exc}") from exc
    fc.close()
    return dst
