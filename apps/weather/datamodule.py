"""Lightning wiring of the weather app: the data module and the thin model module.

The data module opens a dataset (a path, or the embedded synthetic generator), computes normalisation
statistics and tendency scales on the training period, and serves windowed batches. The module is the
core ``DiffusionModule`` plus one thing: it embeds the data description (statistics, channels, grid,
frames, step) in every checkpoint under ``"weather"``, so a checkpoint alone can forecast.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import numpy as np
import torch

from apps.weather.data import WeatherDataError, crop_to_multiple, load_block, open_weather, split_period
from apps.weather.dataset import (
    NS_PER_HOUR, BlockShuffleSampler, NormStats, WindowDataset, compute_stats, fill_masked, time_lag_index,
)
from apps.weather.prior import PriorKind, check_prior, fit_damping, fit_diurnal, prior_tendency
from dualsci.training import DiffusionModule


def tendency_scale(
    ds: WindowDataset, n_reads: int = 8, diurnal: np.ndarray | None = None, damping: np.ndarray | None = None
) -> np.ndarray:
    """(k, C) RMS of normalised tendencies ``y_j − x0 − p_j`` (lag ``j·step``) from a few contiguous reads.

    ``n_reads`` evenly spaced stretches of one cached block each (plus the longest lag) are read, so
    the cost does not grow with the period. Pairs are found by time: an init whose frame j falls in a gap
    of the time axis does not count for lag j, nor does a cell that a masked field (SST over land) leaves
    empty at either end. ``diurnal`` (24, C, H, W): the prior's hour-of-day table
    (``p_j`` = its change from the init hour to frame j's hour); None = plain tendencies (``p_j = 0``).
    ``damping`` (k, C): ``prior="damped"`` (``p_j`` also removes ``(1 − a_j)`` of the init's anomaly,
    ``apps.weather.prior``).
    """
    hours = (ds.times.astype("datetime64[h]").astype(np.int64) % 24).astype(int)
    k, stride, n = ds.frames, ds.stride, len(ds.times)
    # (T, k) time index of each time's frame j (-1 in a gap); frame j lies at most j·stride indices later
    lag = time_lag_index(ds.times, np.arange(1, k + 1, dtype=np.int64) * ds.step_hours * NS_PER_HOUR)
    span = min(n, ds.block + stride * k)
    starts = np.unique(np.linspace(0, n - span, min(n_reads, max(1, n - span + 1))).astype(int))
    sums = np.zeros((k, len(ds.channels)))
    count = np.zeros((k, len(ds.channels)))  # pairs × fraction of their cells that hold data
    for s0 in starts:
        arr, valid = fill_masked(ds.stats.normalise(load_block(ds.ds, ds.channels, slice(int(s0), int(s0) + span))))
        arr = arr.astype(np.float64)
        src = np.arange(int(s0), int(s0) + span - stride * k)  # inits of this read whose frames all lie inside it
        for j in range(1, k + 1):
            tgt = lag[src, j - 1]
            ok = tgt >= 0
            i0, i1 = src[ok], tgt[ok]
            if not len(i0):
                continue
            d = arr[i1 - s0] - arr[i0 - s0]
            if diurnal is not None:
                d = d - (diurnal[hours[i1]] - diurnal[hours[i0]])
                if damping is not None:
                    d = d + (1.0 - damping[j - 1])[None, :, None, None] * (arr[i0 - s0] - diurnal[hours[i0]])
            if valid is None:
                sums[j - 1] += (d**2).mean(axis=(0, 2, 3)) * len(i0)
                count[j - 1] += len(i0)
            else:  # mean over the cells with data at both ends
                both = (valid[i1 - s0] & valid[i0 - s0]).astype(np.float64)
                sums[j - 1] += (d**2 * both).mean(axis=(0, 2, 3)) * len(i0)
                count[j - 1] += both.mean(axis=(0, 2, 3)) * len(i0)
    return np.maximum(np.sqrt(sums / np.maximum(count, 1e-12)), 1e-3).astype(np.float32)


def note_gaps(windows: WindowDataset, what: str) -> None:
    """Print a ``note:`` line on stderr when gaps in the time axis dropped windows (the user should know
    that e.g. a missing month costs the windows around it, not only its own)."""
    if windows.gap_dropped:
        src = windows.ds.attrs.get("source_path", "<dataset>")
        print(f"note: {src}: gaps in the time axis dropped {windows.gap_dropped} {what} window(s) "
              f"({len(windows)} left)", file=sys.stderr)


class _Items(torch.utils.data.Dataset):
    """Adds the grid and tendency scales to every window item (so batches are self-describing)."""

    def __init__(
        self,
        windows: WindowDataset,
        delta_scale: np.ndarray,
        diurnal: np.ndarray | None = None,
        damping: np.ndarray | None = None,
    ) -> None:
        self.windows = windows
        self.diurnal = None if diurnal is None else torch.from_numpy(diurnal)
        self.damping = None if damping is None else torch.from_numpy(damping)
        self.extra = {
            "delta_scale": torch.from_numpy(delta_scale),
            "lat": torch.from_numpy(np.array(windows.lat, np.float64)),
            "lon": torch.from_numpy(np.array(windows.lon, np.float64)),
        }

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        item = {**self.windows[i], **self.extra}
        if self.diurnal is not None:
            w = self.windows
            item["prior"] = prior_tendency(
                self.diurnal, item["init_time"][None], w.frames, w.step_hours, x0=item["x0"][None], damping=self.damping
            )[0]
        return item


class WeatherDataModule(pl.LightningDataModule):
    """Windows of (state at init, k future frames) from a WB2-style dataset.

    Args:
        path: zarr/NetCDF/GRIB path or URL; ``None`` writes the embedded synthetic dataset to
            ``synthetic_dir`` (once, deterministic from ``seed``) and uses it.
        variables, levels, region, frequency: reader selections (see ``apps.weather.data.open_weather``).
        train_period, val_period: ``"START:END"`` inclusive (``None`` = whole file / no validation).
        frames, step_hours: k frames per block, hours between frames.
        init_hours: allowed init hours for validation windows (training uses every hour).
        batch_size, num_workers: loader settings (0 workers on 2-core machines).
        max_train_windows: cap on training windows per epoch (evenly spaced), None = all.
        synthetic: keyword arguments of ``write_synthetic_zarr`` (grid, days, seed).
        synthetic_dir: where the synthetic zarr is cached.
        crop_multiple: drop trailing rows/columns so the grid divides this (the net's patch size).
        prior: ``"persistence"`` (diffuse ``y_j − x0``) or ``"diurnal"`` (diffuse the departure from
            persistence plus the mean daily cycle of the training period; ``apps.weather.prior``) or
            ``"damped"`` (the same, with the init's departure from the cycle decaying by a_j fitted on
            the training period).
        history: states before the init given to the network as context (``step_hours`` apart; the
            net needs the same ``history``).
        seed: shuffling seed.
    """

    def __init__(
        self,
        path: str | None = None,
        variables: Sequence[str] | None = None,
        levels: Sequence[float] | None = None,
        region: dict | None = None,
        frequency: str = "1h",
        train_period: str | None = None,
        val_period: str | None = None,
        frames: int = 4,
        step_hours: int = 6,
        init_hours: Sequence[int] | None = (0, 12),
        batch_size: int = 8,
        num_workers: int = 0,
        max_train_windows: int | None = None,
        synthetic: dict | None = None,
        synthetic_dir: str = "outputs/cache",
        crop_multiple: int | None = None,
        prior: PriorKind = "persistence",
        history: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_prior(prior)
        self.save_hyperparameters()
        self.path = path
        self.stats: NormStats | None = None
        self.delta_scale: np.ndarray | None = None
        self.diurnal: np.ndarray | None = None
        self.damping: np.ndarray | None = None
        self.train_set = self.val_set = None

    @staticmethod
    def _period(spec: str | None) -> tuple[str | None, str | None] | None:
        return None if spec is None else split_period(spec)

    def _resolve_path(self) -> str:
        if self.path is not None:
            return str(self.path)
        from apps.weather.synthetic import write_synthetic_zarr

        kw = dict(self.hparams.synthetic or {})
        kw.setdefault("seed", self.hparams.seed)
        tag = hashlib.sha1(repr(sorted(kw.items())).encode()).hexdigest()[:10]
        out = Path(self.hparams.synthetic_dir) / f"synthetic_{tag}.zarr"
        if not out.exists():
            write_synthetic_zarr(out, **kw)
        self.path = str(out)
        return self.path

    def open(self, period: str | None):
        h = self.hparams
        ds = open_weather(self._resolve_path(), h.variables, h.levels, h.region, self._period(period), h.frequency)
        return crop_to_multiple(ds, h.crop_multiple) if h.crop_multiple else ds

    def prepare_data(self) -> None:
        """Open the periods and compute the statistics (``setup``; the synthetic default is written if needed):
        Lightning calls this before its logger creates ``lightning_logs/version_N``, so a missing file,
        variable or period, a NaN or a corrupt chunk stops the run without leaving that folder."""
        self.setup("fit")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        h = self.hparams
        train_ds = self.open(h.train_period)
        if self.stats is None:
            self.stats = compute_stats(train_ds)
        windows = WindowDataset(train_ds, self.stats, h.frames, h.step_hours, history=h.history)
        note_gaps(windows, "training")
        if h.prior in ("diurnal", "damped") and self.diurnal is None:
            self.diurnal = fit_diurnal(windows)
        if h.prior == "damped" and self.damping is None:
            self.damping = fit_damping(windows, self.diurnal)
        if self.delta_scale is None:
            self.delta_scale = tendency_scale(windows, diurnal=self.diurnal, damping=self.damping)
        self.train_set = _Items(windows, self.delta_scale, self.diurnal, self.damping)
        if h.val_period:
            val = WindowDataset(self.open(h.val_period), self.stats, h.frames, h.step_hours, h.init_hours, history=h.history)
            note_gaps(val, "validation")
            self.val_set = _Items(val, self.delta_scale, self.diurnal, self.damping)

    def describe(self) -> dict[str, Any]:
        """What a checkpoint needs to forecast: statistics, tendency scales, grid, frames, step."""
        if self.stats is None:
            self.setup("fit")
        w = self.train_set.windows
        return {
            "stats": self.stats.to_dict(),
            "delta_scale": self.delta_scale.tolist(),
            "lat": np.asarray(w.lat, float).tolist(),
            "lon": np.asarray(w.lon, float).tolist(),
            "frames": self.hparams.frames,
            "step_hours": self.hparams.step_hours,
            "history": self.hparams.history,
            "data_path": str(self.path),
            # (24, C, H, W) tensor: checkpoints load with weights_only=True, which accepts tensors.
            "diurnal": None if self.diurnal is None else torch.from_numpy(self.diurnal),
            # (k, C) damping a_j of prior="damped" (None otherwise)
            "damping": None if self.damping is None else torch.from_numpy(self.damping),
        }

    def train_dataloader(self):
        n = len(self.train_set)
        cap = self.hparams.max_train_windows
        ds = self.train_set
        if cap is not None and cap < n:
            ds = torch.utils.data.Subset(self.train_set, np.linspace(0, n - 1, cap).astype(int).tolist())
        block = self.train_set.windows.block
        return torch.utils.data.DataLoader(
            ds,
            batch_size=self.hparams.batch_size,
            sampler=BlockShuffleSampler(len(ds), block, self.hparams.seed),
            num_workers=self.hparams.num_workers,
            drop_last=len(ds) > self.hparams.batch_size,
        )

    def predict_dataloader(self):
        """The validation windows (00/12 UTC inits by default), or the training ones without."""
        ds = self.val_set if self.val_set is not None else self.train_set
        return torch.utils.data.DataLoader(ds, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)

    def test_dataloader(self):
        return self.val_dataloader()

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return torch.utils.data.DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)


class WeatherModule(DiffusionModule):
    """``DiffusionModule`` that stores the data description (``"weather"``) in checkpoints."""

    weather_meta: dict | None = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "describe"):
            self.weather_meta = {
                **dm.describe(),
                "net": dict(getattr(self.net, "init_kwargs", {})),
                "objective": dict(getattr(self.objective, "init_kwargs", {})),
            }
        if self.weather_meta is None:
            raise WeatherDataError("<checkpoint>", "no data description to store (train through WeatherDataModule)")
        checkpoint["weather"] = self.weather_meta

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.weather_meta = checkpoint.get("weather")
