"""Score a forecast store against truth, WeatherBench2-style, streaming over inits and leads.

Forecast: the schema written by ``apps.weather.sampling`` (or any WB2 forecast zarr with
``time``/``prediction_timedelta`` and an ensemble dim ``realization``/``number``). Truth: any dataset the
reader opens. Scores per (variable, lead, region) through :class:`ScoreAccumulator`; baselines:
persistence (truth at the init) and climatology.

Climatology: a WeatherBench2 climatology file when given (``climatology=``, see
``apps.weather.climatology_file``); otherwise, as the fallback, per hour of day and grid point, a least-squares fit on the climatology period of
``β₀ + Σ_{k=1..K} (a_k cos 2πk·f + b_k sin 2πk·f)`` in the year fraction f of the valid time, K = 3 when the
period spans a year or more, else K = 0 (the plain diurnal climatology — a short record cannot resolve
the season). This is a smooth (day-of-year, hour) climatology in the spirit of WB2's running-window one;
it is accumulated streaming (normal equations), so memory does not grow with the period. A declared masked
field (SST) with a mask that changes in time (sea ice) is fitted per cell over the times holding data
(K = 0: the mean over those times at that hour); it is NaN only where a cell has no data at that hour.
The cells that lack data at some time but not at all carry their own normal equations
(24·(1 + 2K)² floats each); cells always empty (land) and always full cost nothing extra.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from apps.weather.data import WeatherDataError, channel_names, check_finite, load_block, match_grid, open_weather, read_values
from apps.weather.dataset import time_blocks
from apps.weather.metrics import ScoreAccumulator, default_member_sizes
from dualsci.io import write_json_atomic


def year_fraction(times: np.ndarray) -> np.ndarray:
    t = np.asarray(times).astype("datetime64[s]")
    year = t.astype("datetime64[Y]")
    start = year.astype("datetime64[s]")
    length = ((year + 1).astype("datetime64[s]") - start).astype(np.float64)
    return (t - start).astype(np.float64) / length


def _design(times: np.ndarray, k: int) -> np.ndarray:
    f = year_fraction(times)
    cols = [np.ones_like(f)]
    for j in range(1, k + 1):
        cols += [np.cos(2 * np.pi * j * f), np.sin(2 * np.pi * j * f)]
    return np.stack(cols, axis=1)


# the shortest record whose seasonal cycle is fitted (shorter: the season is not resolved, only the hour of day)
SEASONAL_MIN_DAYS = 360


class Climatology:
    """Per-hour harmonic climatology fitted streaming (see module docstring).

    Args:
        ds: truth dataset (normalised), restricted to the climatology period.
        channels: channel names.
        harmonics: K, or None for automatic (3 if the period spans ≥ 360 days, else 0).
    """

    def __init__(self, ds: xr.Dataset, channels: Sequence[str], harmonics: int | None = None, block: int = 168) -> None:
        times = ds.time.values
        span_days = (times[-1] - times[0]) / np.timedelta64(1, "D")
        self.k = (3 if span_days >= SEASONAL_MIN_DAYS else 0) if harmonics is None else harmonics
        self.channels = list(channels)
        p = 1 + 2 * self.k
        xtx = np.zeros((24, p, p))
        xty: np.ndarray | None = None
        gaps: _GapCells | None = None  # normal equations of the cells a masked field leaves empty at some times
        for sl in time_blocks(len(times), block):
            vals = load_block(ds, self.channels, sl).astype(np.float64)  # (T, C, H, W); NaN only in masked fields
            if xty is None:
                xty = np.zeros((24, p) + vals.shape[1:])
                gaps = _GapCells(p, vals.shape[1:])
            x = _design(times[sl], self.k)
            hours = (times[sl].astype("datetime64[h]").astype(np.int64)) % 24
            ok = np.isfinite(vals)
            gaps.add(x, hours, ok, xtx)  # before this block enters the shared equations
            vals = np.where(ok, vals, 0.0)  # an empty cell adds nothing to the right-hand side
            for h in np.unique(hours):
                sel = hours == h
                xtx[h] += x[sel].T @ x[sel]
                xty[h] += np.tensordot(x[sel].T, vals[sel], axes=1)
        self.hours_present = np.flatnonzero(xtx[:, 0, 0] > 0)
        self.beta = np.zeros_like(xty)
        for h in self.hours_present:
            self.beta[h] = np.tensordot(np.linalg.pinv(xtx[h]), xty[h], axes=1)
        gaps.solve(self.beta, xty, self.hours_present)
        self.all_hours = len(self.hours_present) == 24

    def __call__(self, time: np.datetime64) -> np.ndarray:
        """(C, H, W) climatology at a valid time (nearest present hour if the data is not hourly)."""
        h = int(np.datetime64(time, "h").astype(np.int64) % 24)
        if h not in self.hours_present:
            h = int(self.hours_present[np.argmin(np.abs((self.hours_present - h + 12) % 24 - 12))])
        x = _design(np.array([np.datetime64(time, "s")]), self.k)[0]
        return np.tensordot(x, self.beta[h], axes=1)


class _GapCells:
    """Per-cell normal equations of the cells that lack data at some times (a masked field: SST over land or
    under sea ice), for :class:`Climatology`.

    A cell is tracked from the first block where it is empty; it then starts from the shared equations
    accumulated so far (all its earlier times held data) and adds the times where it holds data. Tracked
    cells that never hold data get no equations (land costs no memory) and come out NaN.

    Args:
        p: design columns (1 + 2K).
        shape: (C, H, W) of the fields.
    """

    def __init__(self, p: int, shape: tuple[int, ...]) -> None:
        n = int(np.prod(shape))
        self.tracked = np.zeros(n, bool)
        self.row = np.full(n, -1)  # row of a cell in self.xtx, -1: none
        self.xtx = np.zeros((0, 24, p, p))

    def add(self, x: np.ndarray, hours: np.ndarray, ok: np.ndarray, shared: np.ndarray) -> None:
        """One block: design ``x`` (T, p), hours of day (T,), ``ok`` (T, C, H, W) cells holding data, ``shared``
        (24, p, p) the shared equations before this block."""
        ok = ok.reshape(len(x), -1)
        new = ~ok.all(axis=0) & ~self.tracked
        if not new.any() and not self.tracked.any():
            return
        self.tracked |= new
        started = new & bool(shared[:, 0, 0].any())  # complete so far: they start from the shared equations
        need = (started | (self.tracked & ok.any(axis=0))) & (self.row < 0)
        if need.any():
            cells = np.flatnonzero(need)
            self.row[cells] = len(self.xtx) + np.arange(len(cells))
            init = np.where(started[cells][:, None, None, None], shared[None], 0.0)
            self.xtx = np.concatenate([self.xtx, init])
        cells = np.flatnonzero(self.row >= 0)
        if not cells.size:
            return
        rows = self.row[cells]
        w = ok[:, cells].astype(np.float64)  # (T, n)
        for h in np.unique(hours):
            sel = hours == h
            self.xtx[rows, h] += np.einsum("tn,tp,tq->npq", w[sel], x[sel], x[sel])

    def solve(self, beta: np.ndarray, xty: np.ndarray, hours: np.ndarray) -> None:
        """Overwrite the tracked cells of ``beta`` (24, p, C, H, W) with their own fit (right-hand sides ``xty``
        of that shape, which left the empty cells out); NaN where a cell has no data at that hour."""
        if not self.tracked.any():
            return
        b = beta.reshape(24, beta.shape[1], -1)
        rhs = xty.reshape(24, xty.shape[1], -1)
        b[:, :, self.tracked & (self.row < 0)] = np.nan
        cells = np.flatnonzero(self.row >= 0)
        rows = self.row[cells]
        for h in hours:
            a = self.xtx[rows, h]  # (n, p, p)
            fit = np.einsum("npq,qn->pn", np.linalg.pinv(a), rhs[h][:, cells])
            b[h][:, cells] = np.where(a[:, 0, 0] > 0, fit, np.nan)


def _open_forecast(path: str | os.PathLike, autoencoder: str | os.PathLike | None = None) -> xr.Dataset:
    """A forecast store (``forecast``'s zarr or NetCDF; a latent-only store decoded lazily with ``autoencoder``,
    default the one it records), or a WeatherDataError naming the file."""
    if not Path(path).exists():
        raise WeatherDataError(path, "forecast not found")
    try:
        fc = xr.open_zarr(path, consolidated=False) if Path(path).is_dir() else xr.open_dataset(path)
    except Exception as exc:  # not zarr / NetCDF at all: several exception types
        raise WeatherDataError(path, f"cannot open as a forecast store ({type(exc).__name__}: {exc})") from exc
    from apps.weather.forecast_schema import normalise_forecast
    from apps.weather.latent_store import is_latent_store, open_decoded

    if is_latent_store(fc):
        fc = open_decoded(path, autoencoder)
    fc, _ = normalise_forecast(fc, str(path))  # lat/lon, init_time/lead_time, number/idx, float-hour leads, ...
    missing = [d for d in ("time", "prediction_timedelta", "latitude", "longitude") if d not in fc.dims]
    if missing:
        raise WeatherDataError(path, f"not a forecast store: no {missing} dimension(s) (dims {sorted(map(str, fc.dims))}; "
                                     "write one with `dualsci-weather forecast`)")
    return fc


def _ensemble_dim(fc: xr.Dataset) -> str | None:
    for d in ("realization", "number", "member", "idx"):
        if d in fc.dims:
            return d
    return None


def evaluate(
    forecast_path: str | os.PathLike,
    truth_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    regions: Sequence[str] = ("global",),
    climatology_period: tuple[str, str] | None = None,
    harmonics: int | None = None,
    channels: Sequence[str] | None = None,
    report: bool = True,
    seed: int = 0,
    track_start: tuple[float, float] | None = None,
    climatology: str | os.PathLike | None = None,
    calibration: str | os.PathLike | None = None,
    member_curve: Sequence[int] | str | None = None,
    thresholds: Mapping[str, Sequence[float]] | None = None,
    plume_at: tuple[float, float] | None = None,
    spectra_band: tuple[float, float] | None = None,
    autoencoder: str | os.PathLike | None = None,
) -> dict:
    """Score ``forecast_path`` against ``truth_path``; write ``scores.json``, ``scores.csv``, report.

    Args:
        climatology_period: (start, end) of truth used for the climatology; default every truth time
            before the first init (or all truth if none).
        channels: subset of channels (default every forecast channel).
        climatology: a WeatherBench2 climatology file (zarr/NetCDF, path or URL; dims ``dayofyear``,
            ``hour``; ``apps.weather.climatology_file``) for ACC and the climatology baseline; None =
            the harmonic fit on ``climatology_period`` (the fallback).
        track_start: (lat, lon) of a cyclone near the first lead: track it in the first init
            (``cyclone.track_forecast``, needs ``mean_sea_level_pressure``); the result goes under
            ``"cyclone"`` and the report draws the tracks over the strike-probability map.
        calibration: a spread calibration JSON (``apps.weather.calibration``): members are scored as
            ``mean + s_ℓ (x − mean)``; it must cover every scored channel and lead (checked first).
        member_curve: ensemble sizes k (each ≤ the forecast's members) or ``"auto"`` (1, 2, 5, 10, 20, 50, ...
            and every member): each row gains ``members_curve``, the scores of the first k members
            (RMSE, fair and standard CRPS, SSR, debiased MSE), also written to ``members_curve.csv`` and drawn
            in the report. Checked before anything is read.
        thresholds: channel -> thresholds (the channel's units): each row of that channel gains ``brier``
            (Brier and fair Brier of ``value > u``, base rate, fair skill score), also in ``brier.csv``; the report
            maps the exceedance probability. A channel the forecast lacks is an error before anything is scored.
        plume_at: (lat, lon) of the report's ensemble plume (every member against lead at the nearest grid
            point, first init, with the truth); default the grid's centre.
        spectra_band: (lo, hi) absolute latitudes: also the zonal energy spectra of truth, ensemble mean and
            members per channel and lead, averaged over that band (``apps.weather.spectra``), under ``"spectra"``,
            in ``spectra.csv`` and drawn in the report. Needs a grid around the whole globe (checked first).
        autoencoder: for a latent-only store (``forecast --store latent``): the autoencoder that decodes it
            lazily (``apps.weather.latent_store``); default the one the store records (its sha256 is checked).

    Returns:
        The JSON-able result dict.
    """
    fc = _open_forecast(forecast_path, autoencoder)
    mdim = _ensemble_dim(fc)
    sizes = _member_sizes(member_curve, fc.sizes[mdim] if mdim else 1, str(forecast_path))
    levels = [float(lv) for lv in fc["level"].values] if "level" in fc.dims else None
    truth = open_weather(truth_path, variables=[v for v in fc.data_vars], levels=levels)
    truth = match_grid(truth, fc.latitude.values, fc.longitude.values, str(truth_path), expected="the forecast")
    # sorted: a zarr store lists its arrays in no fixed order, and the report should not change between runs
    chans = list(channels) if channels is not None else channel_names(fc, sorted(map(str, fc.data_vars)))
    thresholds = {ch: tuple(float(u) for u in us) for ch, us in (thresholds or {}).items()}
    unknown = sorted(set(thresholds) - set(chans))
    if unknown:
        raise WeatherDataError(str(forecast_path), f"thresholds for {unknown}, which the forecast does not hold (channels: {chans})")
    spectra = None
    if spectra_band is not None:
        from apps.weather.spectra import SpectrumAccumulator

        try:
            spectra = SpectrumAccumulator(fc.latitude.values, fc.longitude.values, tuple(spectra_band))
        except ValueError as exc:
            raise WeatherDataError(str(forecast_path), str(exc)) from None
    inits = fc.time.values
    leads = fc.prediction_timedelta.values
    ttimes = truth.time.values
    calib = None
    if calibration is not None:
        from apps.weather.calibration import SpreadCalibration

        calib = SpreadCalibration.load(calibration)
        calib.check_covers(chans, [int(x / np.timedelta64(1, "h")) for x in leads])
    if climatology is not None:
        from apps.weather.climatology_file import FileClimatology

        clim = FileClimatology(str(climatology), chans, fc.latitude.values, fc.longitude.values)
        clim_record = clim.describe()
    else:
        before = np.flatnonzero(ttimes < inits.min())
        if climatology_period is not None:
            clim_ds = truth.sel(time=slice(*climatology_period))
            if clim_ds.sizes["time"] == 0:
                raise WeatherDataError(str(truth_path), f"no truth times in the climatology period {climatology_period}", "time")
        else:  # never the verification times while any earlier truth exists (hours it lacks use the nearest hour)
            clim_ds = truth.isel(time=before) if len(before) else truth
            # a derived accumulation (apps.weather.accumulation) has no value before its first complete window
            starts = [np.datetime64(truth[v].attrs["first_complete"]) for v in {c.partition("/")[0] for c in chans}
                      if "first_complete" in truth[v].attrs]
            if starts:
                clim_ds = clim_ds.sel(time=slice(max(starts), None))
                if clim_ds.sizes["time"] == 0:
                    raise WeatherDataError(str(truth_path), f"no truth time before the first init has every accumulation's "
                                                            f"window complete (from {max(starts)})", "time")
        clim = Climatology(clim_ds, chans, harmonics)
        period = [str(clim_ds.time.values[0]), str(clim_ds.time.values[-1])]
        clim_record = {"source": "harmonic fit on truth", "kind": "harmonic", "harmonics": clim.k, "period": period,
                       "hours_of_day": len(clim.hours_present),
                       "includes_verification_times": bool(np.datetime64(period[1]) >= inits.min())}
    tindex = {t: i for i, t in enumerate(ttimes)}
    if not any(init in tindex and init + lead in tindex for init in inits for lead in leads):
        raise WeatherDataError(str(truth_path), f"no (init, lead) pair of the forecast has truth: valid times "
                               f"{inits.min() + leads.min()} .. {inits.max() + leads.max()}, truth {ttimes[0]} .. {ttimes[-1]}", "time")
    if track_start is not None and "mean_sea_level_pressure" not in fc.data_vars:  # bad input: before scoring
        raise WeatherDataError(str(forecast_path), "cyclone tracking needs MSLP", "mean_sea_level_pressure")
    with _PerInitTable() as per_init:  # per-init scores streamed to a temporary file (memory flat in inits)
        acc = ScoreAccumulator(truth.latitude.values, truth.longitude.values, tuple(regions), seed=seed, member_sizes=sizes,
                               thresholds=thresholds, sink=per_init.write)
        skipped = _score_inits(fc, truth, chans, mdim, clim, calib, acc, spectra, str(forecast_path))
    rows = acc.result()
    result = {
        "forecast": str(forecast_path),
        "truth": str(truth_path),
        "grid": f"{truth.sizes['latitude']}x{truth.sizes['longitude']}",
        # every number labelled with its resolution and period (method card §15.4; WB2 issues #184, #271)
        "resolution_deg": _resolution(truth.latitude.values, truth.longitude.values),
        "verification_period": [str(inits.min() + leads.min())[:16], str(inits.max() + leads.max())[:16]],
        "inits": [str(t) for t in inits],
        "climatology": clim_record,
        "skipped_pairs": skipped,
        "calibration": str(calibration) if calibration is not None else None,
        "member_curve_sizes": list(sizes),
        "thresholds": {ch: list(us) for ch, us in thresholds.items()},
        "plume_at": None if plume_at is None else [float(v) for v in plume_at],
        "spectra_band": None if spectra is None else list(spectra.band),
        "scores": rows,
    }
    if spectra is not None:
        result["spectra"] = spectra.result()
    if track_start is not None:
        from apps.weather.cyclone import track_forecast

        result["cyclone"] = track_forecast(str(forecast_path), tuple(track_start), 0, str(truth_path))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_init.move_to(out_dir / "per_init.csv")
    write_json_atomic(out_dir / "scores.json", result)
    _write_csv(out_dir / "scores.csv", rows, skip=("rank_histogram", "members_curve", "brier"))
    if sizes:
        _write_csv(out_dir / "members_curve.csv", [
            {"variable": r["variable"], "lead_hours": r["lead_hours"], "region": r["region"], **c}
            for r in rows for c in r["members_curve"]
        ])
    if thresholds:
        _write_csv(out_dir / "brier.csv", [
            {"variable": r["variable"], "lead_hours": r["lead_hours"], "region": r["region"], **b}
            for r in rows for b in r.get("brier", [])
        ])
    if spectra is not None:
        _write_csv(out_dir / "spectra.csv", [
            {"variable": s["variable"], "lead_hours": s["lead_hours"], "wavelength_km": wl, "truth": t, "ensemble_mean": e, "members": m}
            for s in result["spectra"] for wl, t, e, m in zip(s["wavelength_km"], s["truth"], s["ensemble_mean"], s["members"])
        ])
    if report:
        from apps.weather.report import write_report

        write_report(out_dir, result, fc, truth, chans)
    return result


def _score_inits(fc: xr.Dataset, truth: xr.Dataset, chans: list[str], mdim: str | None, clim, calib,
                 acc: ScoreAccumulator, spectra, source: str) -> int:
    """Feed every (init, lead, channel) with truth to ``acc`` (and ``spectra``); returns the (init, lead) pairs
    skipped for lack of truth."""
    inits, leads = fc.time.values, fc.prediction_timedelta.values
    tindex = {t: i for i, t in enumerate(truth.time.values)}
    skipped = 0
    for i, init in enumerate(inits):
        if init not in tindex:
            skipped += len(leads)
            continue
        persistence = load_block(truth, chans, np.array([tindex[init]]))[0]
        for j, lead in enumerate(leads):
            valid = init + lead
            if valid not in tindex:
                skipped += 1
                continue
            y = load_block(truth, chans, np.array([tindex[valid]]))[0]
            step = fc.isel(time=i, prediction_timedelta=j)
            c = clim(valid)
            lead_h = int(lead / np.timedelta64(1, "h"))
            for ci, ch in enumerate(chans):
                v, _, lv = ch.partition("/")
                da = step[v].sel(level=float(lv)) if lv else step[v]
                # a damaged chunk fails the read; a missing one (an unfinished store) reads as NaN: both named
                where = f" at init {str(init)[:16]}, lead {lead_h} h"
                ens = read_values(da.transpose(*([mdim] if mdim else []), "latitude", "longitude"), source, ch, where)
                ens = ens.astype(np.float64)
                check_finite(ens, source, ch, where)
                if mdim is None:
                    ens = ens[None]
                if calib is not None:
                    ens = calib.apply(ens, ch, lead_h)
                acc.add(ch, lead_h, ens, y[ci], climatology=c[ci], persistence=persistence[ci], init=str(init)[:16])
                if spectra is not None:
                    spectra.add(ch, lead_h, ens, y[ci])
    return skipped


def _resolution(lat: np.ndarray, lon: np.ndarray) -> list[float | None]:
    """[latitude, longitude] spacing in degrees (median step; None along an axis of one point)."""
    step = lambda x: float(np.round(np.median(np.abs(np.diff(np.asarray(x, float)))), 6)) if len(x) > 1 else None  # noqa: E731
    return [step(lat), step(lon)]


def _member_sizes(spec: Sequence[int] | str | None, members: int, where: str) -> tuple[int, ...]:
    """The sorted ensemble sizes of the skill-against-size curve; () for none. Sizes must lie in 1..members."""
    if spec is None:
        return ()
    if isinstance(spec, str):
        if spec != "auto":
            raise ValueError(f"member_curve must be 'auto' or a list of sizes, got {spec!r}")
        return default_member_sizes(members)
    sizes = tuple(sorted({int(k) for k in spec}))
    bad = [k for k in sizes if not 1 <= k <= members]
    if not sizes or bad:
        raise WeatherDataError(where, f"member curve sizes {list(spec)} must lie in 1..{members} (the forecast's members)")
    return sizes


PER_INIT_FIELDS = ("variable", "lead_hours", "region", "init", "mse", "mae", "bias", "crps", "variance")


class _PerInitTable:
    """``per_init.csv`` written as the scores come (``ScoreAccumulator(sink=...)``) into a temporary file of the
    system's temp folder: nothing appears in the output folder before the evaluation has finished. A failed
    scoring loop (the ``with`` block) deletes the file; a failure after it leaves it to the finaliser (the file
    goes when the table is collected, unless it was moved into place)."""

    def __enter__(self) -> "_PerInitTable":
        fd, name = tempfile.mkstemp(prefix="dualsci_per_init_", suffix=".csv")
        self.path = Path(name)
        weakref.finalize(self, self.path.unlink, missing_ok=True)
        self._file = os.fdopen(fd, "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=PER_INIT_FIELDS)
        self._writer.writeheader()
        return self

    def write(self, record: dict) -> None:
        self._writer.writerow(record)

    def __exit__(self, kind, *_) -> None:
        self._file.close()
        if kind is not None:
            self.discard()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)

    def move_to(self, dst: Path) -> None:
        shutil.move(str(self.path), str(dst))


def _write_csv(path: Path, rows: list[dict], skip: Sequence[str] = ()) -> None:
    """One line per row, the first row's keys as columns, less the ``skip`` keys (lists that CSV cannot hold)."""
    from dualsci.io import atomic_write

    keys = [k for k in rows[0].keys() if k not in skip] if rows else []
    with atomic_write(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
