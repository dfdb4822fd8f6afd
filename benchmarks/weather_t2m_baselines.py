"""Statistical baselines of the t2m benchmark: how far "persistence + the mean daily cycle" gets.

``python benchmarks/weather_t2m_baselines.py --data FILE --train START:END --test START:END --out X.json``

Same inits (00/12 UTC in the test period with truth in the file at every lead), leads (6, 12, 24, 48 h), grid
crop and WB2 scoring (cell-area weights, RMSE after the time mean) as ``weather_t2m_uk.py``. Baselines,
all fitted on the training period only:

* ``persistence``: the analysis at the init;
* ``diurnal_climatology``: hour-of-day mean (what the benchmark calls the climatology baseline);
* ``persistence_plus_cycle``: init state + ``D(valid hour) − D(init hour)`` with ``D`` the smooth
  daily cycle of ``apps.weather.prior.fit_diurnal`` — the forecaster's starting point under
  ``prior="diurnal"``; a model that learns nothing beyond its prior scores this;
* ``damped_anomaly_persistence``: ``D(valid hour) + a·(x0 − D(init hour))`` with the init's departure
  from the daily cycle damped by the training-period regression ``a_j`` of ``fit_damping`` (4 frames of
  6 h; beyond 24 h ``a_4^b·a_j`` like the forecaster's second block) — the prior of ``prior="damped"``;
* ``damped_per_cell_hour``: the same with ``a`` regressed directly at each lead, separately for every
  grid cell and init hour (00/12 UTC) — a MOS-style local linear model;
* ``persistence_plus_mean_change``: init state + the training-period mean change over the lead for that
  cell and init hour (the raw, unsmoothed version of ``persistence_plus_cycle``);
* ``persistence_plus_yesterday_change``: init state + the change over the same hours one day earlier,
  ``x(t0) + x(t0 + L mod 24 − 24 h) − x(t0 − 24 h)`` (persistence at whole days): the daily cycle of the
  current regime rather than the training period's — nothing fitted, only the day before the init;
* ``mean_change_plus_tendency``: ``persistence_plus_mean_change`` + ``b·(Δ − mean Δ)`` with ``Δ`` the change
  over the ``TENDENCY_HOURS`` before the init (a cloud or front arriving shows in the last hours first)
  and ``mean Δ`` its training-period mean for that cell and init hour; one ``b`` per lead and init hour,
  least squares over all training inits and cells;
* ``stencil_ridge``: ``D(valid hour)`` + a ridge regression of the departure at the valid time on the
  init's departures in the 5×5 neighbourhood of the cell (edge-padded) + an intercept, one set of 26
  weights per lead and init hour shared by every cell — a linear model that can see upstream
  anomalies (advection) with few enough parameters for a fortnight of data;
* ``damped_recent_cycle``: regime-dependent damping, ``R(valid hour) + a·(x0 − R(init hour))`` with ``R`` the
  hour-of-day mean of the ``--recent-days`` days up to the init (data available at forecast time) instead of
  the training period's cycle, so a warmer or calmer week relaxes towards its own level and cycle; one ``a`` per
  lead and init hour (area-weighted least squares over the training inits, each with its own recent window).

It is the yardstick for the learned model: the target (≤ 0.9 × the better of the first two) is only
within reach at a lead where this line, or what the network adds to it, is well below both.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.weather.data import WeatherDataError, crop_to_multiple, load_block, open_weather, period_end_hour, split_period, trim_training_overlap, verifiable_inits, verification_limit  # noqa: E402
from apps.weather.dataset import NS_PER_HOUR, WindowDataset, compute_stats, time_lag_index  # noqa: E402
from apps.weather.metrics import cell_area_weights  # noqa: E402
from apps.weather.prior import fit_damping, fit_diurnal  # noqa: E402
from dualsci.argtypes import positive_int  # noqa: E402
from dualsci.io import write_json_atomic  # noqa: E402

LEADS = (6, 12, 24, 48)
STENCIL_RADIUS = 2
STENCIL_RIDGE = 100.0
TENDENCY_HOURS = 3
RECENT_DAYS = 7


def recent_hour_means(x: np.ndarray, times: np.ndarray, hours: np.ndarray, i: int, needed: tuple[int, ...],
                      days: int) -> dict[int, np.ndarray] | None:
    """Mean (H, W) state at each hour of day in ``needed`` over the ``days`` days ending at time index ``i``
    (inclusive; times looked up by value, so a gap only thins the window); None if a needed hour is absent."""
    window = (times > times[i] - np.timedelta64(24 * days, "h")) & (times <= times[i])
    means = {}
    for h in needed:
        sel = window & (hours == h)
        if not sel.any():
            return None
        means[h] = x[sel].mean(0)
    return means


def stencil_features(field: np.ndarray, radius: int = STENCIL_RADIUS) -> np.ndarray:
    """(H, W) field -> (H*W, (2r+1)² + 1) neighbourhood values (edge-padded) and a constant column."""
    h, w = field.shape
    padded = np.pad(field, radius, mode="edge")
    side = 2 * radius + 1
    cols = [padded[dy:dy + h, dx:dx + w].ravel() for dy in range(side) for dx in range(side)]
    return np.stack(cols + [np.ones(h * w)], 1)


def fit_stencil_ridge(inputs: np.ndarray, targets: np.ndarray, ridge: float = STENCIL_RIDGE) -> np.ndarray:
    """Shared weights from (N, H, W) input and target departures; the intercept is not penalised."""
    feats = np.concatenate([stencil_features(f) for f in inputs])
    gram = feats.T @ feats + ridge * np.diag(np.r_[np.ones(feats.shape[1] - 1), 0.0])
    return np.linalg.solve(gram, feats.T @ targets.reshape(-1))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--train", required=True, help="START:END (inclusive)")
    p.add_argument("--test", required=True, help="START:END (inclusive)")
    p.add_argument("--out", required=True)
    p.add_argument("--recent-days", type=positive_int, default=RECENT_DAYS, help="window of damped_recent_cycle (days)")
    a = p.parse_args(argv)
    (tr0, tr1), (te0, te1) = (split_period(s) for s in (a.train, a.test))
    (tr0, tr1), overlap_note = trim_training_overlap((tr0, tr1), (te0, te1), max(LEADS))  # as weather_t2m_uk.py
    if overlap_note:
        print(f"note: {overlap_note}", file=sys.stderr)
    truth_end = verification_limit(a.data, (tr0, tr1), (te0, te1))  # the same rule as weather_t2m_uk.py
    ds = crop_to_multiple(open_weather(a.data, variables=["2m_temperature"]), 4)
    times = ds.time.values
    x = load_block(ds, ["2m_temperature"], slice(None))[:, 0].astype(np.float64)  # (T, H, W)
    hours = (times.astype("datetime64[h]").astype(np.int64) % 24).astype(int)
    train = (times >= np.datetime64(tr0, "h")) & (times <= period_end_hour(tr1))
    test = (times >= np.datetime64(te0, "h")) & (times <= period_end_hour(te1))
    if train.sum() < 24 or not test.any():
        raise WeatherDataError(a.data, f"need >= 24 h of training data and some test data ({a.train}, {a.test})", "time")
    index = {t: i for i, t in enumerate(times)}
    inits = [index[np.datetime64(t, "ns")] for t in verifiable_inits(times, te0, period_end_hour(te1), LEADS, truth_end=truth_end)]
    if not inits:
        raise WeatherDataError(a.data, f"test period {a.test} has no 00/12 UTC init with truth at +{'/'.join(map(str, LEADS))} h "
                               "in the file" + (f" before the training period {a.train}" if truth_end is not None else ""), "time")
    hod = np.stack([x[train & (hours == h)].mean(0) if (train & (hours == h)).any() else x[train].mean(0) for h in range(24)])
    train_ds = ds.isel(time=np.flatnonzero(train))
    stats = compute_stats(train_ds)
    cycle = fit_diurnal(WindowDataset(train_ds, stats, frames=1, step_hours=1))[:, 0] * stats.std[0]  # physical, up to a constant
    blocks = WindowDataset(train_ds, stats, frames=4, step_hours=6)
    table = fit_diurnal(blocks)
    damping = fit_damping(blocks, table)[:, 0]  # (4,) a_j at 6/12/18/24 h
    clim = table[:, 0] * stats.std[0] + stats.mean[0]  # (24, H, W) physical daily cycle
    w = cell_area_weights(ds.latitude.values)[:, None]
    out = {}
    anomaly = x - clim[hours]  # departure from the smooth daily cycle, every hour
    train_idx = np.flatnonzero(train)
    day = np.timedelta64(24, "h")
    # states found by time (a gap in the file drops a pair, never shifts it): index of the time TENDENCY_HOURS
    # before each time, -1 where absent
    tend_back = time_lag_index(times, [-TENDENCY_HOURS * NS_PER_HOUR])[:, 0]
    for lead in LEADS:
        mse = {k: [] for k in ("persistence", "diurnal_climatology", "persistence_plus_cycle", "damped_anomaly_persistence",
                               "damped_per_cell_hour", "persistence_plus_mean_change",
                               "persistence_plus_yesterday_change", "mean_change_plus_tendency", "stencil_ridge",
                               "damped_recent_cycle")}
        n_day, j_in = divmod(lead // 6, 4)
        a_lead = damping[3] ** n_day * (damping[j_in - 1] if j_in else 1.0)
        # Local fits on training inits whose valid time is also in the training period (-1: not in the file).
        ahead = time_lag_index(times, [lead * NS_PER_HOUR])[:, 0]
        fit_i = train_idx[np.isin(ahead[train_idx], train_idx)]
        local_a, mean_change, stencil, mean_tend, tend_b, recent_a = {}, {}, {}, {}, {}, {}
        for h0 in (0, 12):
            sel = fit_i[hours[fit_i] == h0]
            if len(sel) == 0:
                raise WeatherDataError(a.data, f"no {h0:02d} UTC training init with a {lead} h lead inside {a.train}", "time")
            needed = (h0, (h0 + lead) % 24)
            num = den = 0.0
            for i in sel:  # training inits whose recent window holds both hours (the first days' may not)
                r = recent_hour_means(x, times, hours, i, needed, a.recent_days)
                if r is not None:
                    r0, r1 = x[i] - r[needed[0]], x[ahead[i]] - r[needed[1]]
                    num, den = num + float((w * r0 * r1).sum()), den + float((w * r0 * r0).sum())
            recent_a[h0] = float(np.clip(num / den, 0.0, 1.0)) if den > 0 else 0.0
            a0, a1 = anomaly[sel], anomaly[ahead[sel]]
            local_a[h0] = np.clip((a0 * a1).sum(0) / np.maximum((a0 * a0).sum(0), 1e-12), 0.0, 1.0)
            mean_change[h0] = (x[ahead[sel]] - x[sel]).mean(0)
            stencil[h0] = fit_stencil_ridge(a0, a1)
            sel = sel[tend_back[sel] >= 0]  # the tendency needs the hours before the init
            tend = x[sel] - x[tend_back[sel]]
            mean_tend[h0] = tend.mean(0)
            dt, dy = tend - mean_tend[h0], x[ahead[sel]] - x[sel] - mean_change[h0]
            tend_b[h0] = float((dt * dy).sum() / max((dt * dt).sum(), 1e-12))
        for i in inits:
            j = index[times[i] + np.timedelta64(lead, "h")]
            y = x[j]
            mse["persistence"].append(((x[i] - y) ** 2 * w).mean())
            mse["diurnal_climatology"].append(((hod[hours[j]] - y) ** 2 * w).mean())
            mse["persistence_plus_cycle"].append(((x[i] + cycle[hours[j]] - cycle[hours[i]] - y) ** 2 * w).mean())
            damped = clim[hours[j]] + a_lead * anomaly[i]
            mse["damped_anomaly_persistence"].append(((damped - y) ** 2 * w).mean())
            local = clim[hours[j]] + local_a[hours[i]] * anomaly[i]
            mse["damped_per_cell_hour"].append(((local - y) ** 2 * w).mean())
            mse["persistence_plus_mean_change"].append(((x[i] + mean_change[hours[i]] - y) ** 2 * w).mean())
            # The same hours a day earlier: data before the init, available at forecast time.
            back, back_valid = index.get(times[i] - day), index.get(times[i] - day + np.timedelta64(lead % 24, "h"))
            if back is None or back_valid is None:
                raise WeatherDataError(a.data, f"the init {times[i]} needs the 24 h before it in the file", "time")
            yday = x[i] + x[back_valid] - x[back]
            mse["persistence_plus_yesterday_change"].append(((yday - y) ** 2 * w).mean())
            if tend_back[i] < 0:
                raise WeatherDataError(a.data, f"the init {times[i]} needs the {TENDENCY_HOURS} h before it", "time")
            tend = x[i] - x[tend_back[i]] - mean_tend[hours[i]]
            pred = x[i] + mean_change[hours[i]] + tend_b[hours[i]] * tend
            mse["mean_change_plus_tendency"].append(((pred - y) ** 2 * w).mean())
            ridge = clim[hours[j]] + (stencil_features(anomaly[i]) @ stencil[hours[i]]).reshape(y.shape)
            mse["stencil_ridge"].append(((ridge - y) ** 2 * w).mean())
            needed = (hours[i], hours[j])
            r = recent_hour_means(x, times, hours, i, needed, a.recent_days)
            if r is None:
                raise WeatherDataError(a.data, f"the init {times[i]} has no {needed[1]:02d} UTC state in the {a.recent_days} days "
                                               "before it (damped_recent_cycle)", "time")
            recent = r[needed[1]] + recent_a[hours[i]] * (x[i] - r[needed[0]])
            mse["damped_recent_cycle"].append(((recent - y) ** 2 * w).mean())
        out[str(lead)] = {k: float(np.sqrt(np.mean(v))) for k, v in mse.items()}
    res = {
        "leads": out,
        "n_inits": len(inits),
        "damping_6_12_18_24h": [float(v) for v in damping],
        "recent_days": a.recent_days,
        "grid": f"{x.shape[1]}x{x.shape[2]}",
        "command": "python benchmarks/weather_t2m_baselines.py " + " ".join(shlex.quote(s) for s in (argv if argv is not None else sys.argv[1:])),
    }
    write_json_atomic(a.out, res)
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    from apps.weather.cli import script_main

    script_main(main)  # bad input: one line naming file, variable and problem
