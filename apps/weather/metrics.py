"""WeatherBench2-exact verification metrics, streaming over inits so memory does not grow with them.

Definitions (method card §8): cell-area latitude weights normalised to mean 1; RMSE is the square root
of the time-mean of the area-mean squared error; ACC is uncentred, per init, then averaged; fair CRPS
``skill - ½·spread`` with the sorted O(M log M) pair sum; the unbiased spread-skill ratio takes the
ratio and the root after averaging; the rank histogram breaks ties at random.

Energy score (field-wise, ‖·‖ the area-weighted RMS over the region): ``(1/M)Σ‖x_m − y‖ − ½·mean_{m≠m'}‖x_m − x_m'‖``,
the fair form over all member pairs (WeatherBench-X sums adjacent pairs only: the same expectation, noisier).
Brier score at thresholds u per channel: ``(p − o)²`` with p the fraction of members above u and o the
truth's exceedance; fair version ``(p − o)² − p(1 − p)/(M − 1)``; the skill score against the sample base
rate ō is ``1 − BS_fair / (ō(1 − ō))``.

Skill against ensemble size (method card §15.3): ``ScoreAccumulator(member_sizes=(1, 2, 5, ...))`` also scores
the sub-ensembles of the first k members. Members are exchangeable draws, so the first k are a random k-subset.
The ensemble-mean RMSE and the standard CRPS fall with k; the fair CRPS and the unbiased SSR estimate the
infinite ensemble's values at every k ≥ 2, so their curves stay flat up to sampling noise (a check on both).

Array convention: fields are ``(..., H, W)`` with latitude ascending on H; ensembles put the member
axis first: ``(M, ..., H, W)``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

REGIONS: dict[str, dict] = {
    "global": {},
    "tropics": {"lat": (-20.0, 20.0)},
    "extra-tropics": {"abs_lat_min": 20.0},
    "northern-hemisphere": {"lat": (20.0, 90.0)},
    "southern-hemisphere": {"lat": (-90.0, -20.0)},
    "europe": {"lat": (35.0, 75.0), "lon": (-12.5, 42.5)},
    "north-america": {"lat": (25.0, 60.0), "lon": (-120.0, -75.0)},
    "north-atlantic": {"lat": (25.0, 65.0), "lon": (-70.0, -10.0)},
    "north-pacific": {"lat": (25.0, 60.0), "lon": (145.0, -130.0)},
    "east-asia": {"lat": (25.0, 60.0), "lon": (102.5, 150.0)},
    "ausnz": {"lat": (-45.0, -12.5), "lon": (120.0, 175.0)},
    "arctic": {"lat": (60.0, 90.0)},
    "antarctic": {"lat": (-90.0, -60.0)},
}


def cell_area_weights(lat_deg: np.ndarray) -> np.ndarray:
    """WB2 ``get_lat_weights``: ``sin`` of cell bounds at row midpoints (closed at ±90°), mean 1.

    Args:
        lat_deg: (H,) row latitudes in degrees, ascending or descending.

    Returns:
        (H,) float64 weights with mean 1.
    """
    lat = np.asarray(lat_deg, dtype=np.float64)
    order = np.argsort(lat)
    s = lat[order]
    if len(s) == 1:
        return np.ones(1)
    mids = (s[1:] + s[:-1]) / 2.0
    # Global grids close at the poles; regional ones extend half a row beyond the outer rows.
    lo = max(-90.0, s[0] - (mids[0] - s[0]))
    hi = min(90.0, s[-1] + (s[-1] - mids[-1]))
    bounds = np.radians(np.concatenate([[lo], mids, [hi]]))
    w_sorted = np.sin(bounds[1:]) - np.sin(bounds[:-1])
    w = np.empty_like(w_sorted)
    w[order] = w_sorted
    return w / w.mean()


def region_mask(lat_deg: np.ndarray, lon_deg: np.ndarray, region: str | dict) -> np.ndarray:
    """Boolean (H, W) mask of a WB2 region (name from :data:`REGIONS` or a dict)."""
    spec = REGIONS[region] if isinstance(region, str) else region
    lat = np.asarray(lat_deg, dtype=float)[:, None]
    lon = np.mod(np.asarray(lon_deg, dtype=float), 360.0)[None, :]
    mask = np.ones((lat.shape[0], lon.shape[1]), dtype=bool)
    if "lat" in spec:
        mask &= (lat >= spec["lat"][0]) & (lat <= spec["lat"][1])
    if "abs_lat_min" in spec:
        mask &= np.abs(lat) >= spec["abs_lat_min"]
    if "lon" in spec:
        west, east = np.mod(spec["lon"][0], 360.0), np.mod(spec["lon"][1], 360.0)
        mask &= ((lon >= west) & (lon <= east)) if west <= east else ((lon >= west) | (lon <= east))
    return mask


def spatial_mean(z: np.ndarray, weights: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Area-weighted mean over the last two axes: ``Σ w_j z_ji / Σ w_j`` over (masked) cells.

    Args:
        z: (..., H, W).
        weights: (H,) latitude weights.
        mask: optional (H, W) bool region mask.
    """
    w = np.broadcast_to(np.asarray(weights, dtype=np.float64)[:, None], z.shape[-2:])
    if mask is not None:
        w = w * mask
    return np.sum(z * w, axis=(-2, -1)) / np.sum(w)


def crps_parts(ens: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fair-CRPS skill ``mean|x_m - y|`` and spread ``E|X - X'|`` per point (sorted pair sum).

    Args:
        ens: (M, ...) members, M ≥ 2.
        truth: (...) verifying field.

    Returns:
        (skill, spread), each (...); ``crps = skill - 0.5 * spread``.
    """
    m = ens.shape[0]
    if m < 2:
        raise ValueError(f"fair CRPS needs at least 2 members, got {m}")
    ens = ens.astype(np.float64, copy=False)
    skill = np.mean(np.abs(ens - truth[None]), axis=0)
    xs = np.sort(ens, axis=0)
    k = np.arange(1, m + 1, dtype=np.float64).reshape((m,) + (1,) * (ens.ndim - 1))
    pair_sum = 2.0 * np.sum((2.0 * k - m - 1.0) * xs, axis=0)  # Σ_{m≠m'} |x_m - x_m'|
    spread = pair_sum / (m * (m - 1))
    return skill, spread


def rank_histogram_split(ens: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Rank-histogram counts (M + 1,) with each tie spread evenly over its bins.

    This is the expectation of random tie-breaking, so it is deterministic (used for exact tests and
    quantised data such as GRIB, where ties between members are common).
    """
    m = ens.shape[0]
    below = np.sum(ens < truth[None], axis=0).ravel()
    ties = np.sum(ens == truth[None], axis=0).ravel()
    share = 1.0 / (ties + 1.0)
    return np.array([np.sum(share * ((r >= below) & (r <= below + ties))) for r in range(m + 1)])


def rank_of_truth(ens: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank 0..M of the truth among M members per point, ties broken uniformly at random."""
    below = np.sum(ens < truth[None], axis=0)
    ties = np.sum(ens == truth[None], axis=0)
    return below + np.floor(rng.random(below.shape) * (ties + 1)).astype(np.int64)


@dataclass
class _Sums:
    n: int = 0
    mse: float = 0.0  # ensemble-mean (or deterministic) squared error, area-mean
    bias: float = 0.0
    mae: float = 0.0
    acc: float = 0.0
    n_acc: int = 0
    crps_skill: float = 0.0
    crps_spread: float = 0.0
    var: float = 0.0  # unbiased ensemble variance
    mse_debiased: float = 0.0
    member_mse: float = 0.0
    persistence_mse: float = 0.0
    n_persistence: int = 0
    climatology_mse: float = 0.0
    n_climatology: int = 0
    rank_counts: np.ndarray | None = None
    members: int = 0
    # members k -> area-mean sums [mse, crps skill, crps spread, unbiased variance, debiased mse] of the first k
    curve: dict = field(default_factory=dict)
    energy_skill: float = 0.0
    energy_spread: float = 0.0
    # threshold u -> area-mean sums [Brier, fair Brier, truth exceedance, forecast probability]
    brier: dict = field(default_factory=dict)


def energy_parts(ens: np.ndarray, truth: np.ndarray, weights: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Energy-score skill ``mean_m ‖x_m − y‖`` and spread ``mean_{m≠m'} ‖x_m − x_m'‖`` over the masked cells.

    Args:
        ens: (M, H, W) members, M ≥ 2; truth: (H, W); weights: (H,) latitude weights; mask: (H, W) bool.
    The norm is the area-weighted RMS over the mask; pair distances come from one Gram matrix (O(M²·H·W)).
    """
    w = np.broadcast_to(weights[:, None], truth.shape) * mask
    if not w.sum() > 0:  # no cell of the region holds data
        return float("nan"), float("nan")
    w = (w / w.sum()).ravel()
    x = ens.reshape(ens.shape[0], -1)
    skill = float(np.mean(np.sqrt(((x - truth.ravel()) ** 2) @ w)))
    xw = x * np.sqrt(w)
    gram = xw @ xw.T
    sq = np.diag(gram)
    dist = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0, None))
    m = ens.shape[0]
    return skill, float((dist.sum() - np.trace(dist)) / (m * (m - 1)))


def brier_parts(ens: np.ndarray, truth: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Point-wise [Brier, fair Brier, truth exceedance o, forecast probability p] for ``value > threshold``.

    Args: ens (M, ...) members; truth (...). One member has no fair Brier (NaN).
    """
    m = ens.shape[0]
    p = np.mean(ens > threshold, axis=0)
    o = (truth > threshold).astype(np.float64)
    bs = (p - o) ** 2
    fair = bs - p * (1.0 - p) / (m - 1) if m >= 2 else np.full_like(bs, np.nan)
    return [bs, fair, o, p]


def default_member_sizes(members: int) -> tuple[int, ...]:
    """Ensemble sizes 1, 2, 5, 10, 20, 50, ... below ``members``, and ``members`` itself."""
    sizes, decade = [], 1
    while decade < members:
        sizes += [k * decade for k in (1, 2, 5) if k * decade < members]
        decade *= 10
    return tuple(sizes + [members])


def _curve_parts(ens: np.ndarray, truth: np.ndarray, k: int) -> list[np.ndarray]:
    """Point-wise [squared error of the mean, CRPS skill, fair CRPS spread, variance, debiased squared error]
    of the first ``k`` members of ``ens`` (M, ...) against ``truth`` (...); one member has no spread or variance."""
    sub = ens[:k]
    err2 = (sub.mean(axis=0) - truth) ** 2
    if k == 1:
        zero = np.zeros_like(truth)
        return [err2, np.abs(sub[0] - truth), zero, zero, np.full_like(truth, np.nan)]
    skill, spread = crps_parts(sub, truth)
    var = sub.var(axis=0, ddof=1)
    return [err2, skill, spread, var, err2 - var / k]


@dataclass
class ScoreAccumulator:
    """Streaming WB2 scores per (variable, lead, region); add one init at a time, ``result()`` at the end.

    Memory: a few floats per key plus one rank histogram; independent of members and inits.

    Args:
        lat: (H,) latitudes of the grid (degrees).
        lon: (W,) longitudes (degrees).
        regions: region names or specs to score.
        seed: for the random tie-breaking of ranks. Each (variable, lead, n-th init added to it) draws from its own
            stream ``default_rng([seed, crc32(variable), lead, n])``, so the histograms do not depend on the order in
            which channels are added (a zarr store's listing order can change from one opening to the next).
        rank_ties: ``"random"`` breaks ties at random (WB2); ``"split"`` adds each tie's expected
            counts (deterministic).
        member_sizes: ensemble sizes k for the skill-against-size curve (scores of the first k members);
            empty: no curve. Every size must be ≤ the members of each ensemble added.
        thresholds: channel -> thresholds u (the channel's units) for the Brier score of ``value > u``.
        sink: called with one record per region for every :meth:`add` given an ``init``: the init's own
            area-mean ``mse``, ``mae``, ``bias``, ``crps`` (fair; NaN for one member) and ``variance`` (unbiased
            ensemble variance), for per-init tables and paired significance tests (``apps.weather.compare``). The
            records go out as they are made, so the accumulator's memory stays independent of the inits.
    """

    lat: np.ndarray
    lon: np.ndarray
    regions: tuple[str, ...] = ("global",)
    seed: int = 0
    rank_ties: str = "random"
    member_sizes: tuple[int, ...] = ()
    thresholds: dict = field(default_factory=dict)
    sink: Callable[[dict], None] | None = None
    _sums: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.weights = cell_area_weights(self.lat)
        self.masks = {r: region_mask(self.lat, self.lon, r) for r in self.regions}
        self._adds: dict = {}  # (variable, lead) -> inits added so far: the tie-breaking stream's counter
        if self.rank_ties not in ("random", "split"):
            raise ValueError(f"rank_ties={self.rank_ties!r} is not one of ('random', 'split')")
        self.member_sizes = tuple(sorted({int(k) for k in self.member_sizes}))
        if self.member_sizes and self.member_sizes[0] < 1:
            raise ValueError(f"member_sizes must be >= 1, got {self.member_sizes}")

    def add(
        self,
        variable: str,
        lead: int,
        ens: np.ndarray,
        truth: np.ndarray,
        climatology: np.ndarray | None = None,
        persistence: np.ndarray | None = None,
        init: str | None = None,
    ) -> None:
        """Score one init.

        Args:
            variable: channel name.
            lead: lead time in hours.
            ens: (M, H, W) members (M = 1 for a deterministic forecast).
            truth: (H, W) verifying analysis.
            climatology: (H, W) climatology at the valid time (for ACC and the climatology baseline).
            persistence: (H, W) the analysis at the init time (persistence baseline).
            init: the init's label (ISO time) for the ``sink`` records; None sends none.

        Cells with NaN in any of these (a declared masked field: SST over land) are left out of every score
        of this init, as if they were outside the region.
        """
        n_added = self._adds.get((variable, lead), 0)
        self._adds[(variable, lead)] = n_added + 1
        ens = np.asarray(ens, dtype=np.float64)
        truth = np.asarray(truth, dtype=np.float64)
        ens, truth, climatology, persistence, masks = self._valid_cells(ens, truth, climatology, persistence)
        m = ens.shape[0]
        mean = ens.mean(axis=0)
        err = mean - truth
        if m >= 2:
            skill, spread = crps_parts(ens, truth)
            var = ens.var(axis=0, ddof=1)
            if self.rank_ties == "random":
                rng = np.random.default_rng([self.seed, zlib.crc32(variable.encode()), int(lead), n_added])
                ranks = rank_of_truth(ens, truth, rng)
        if self.member_sizes and self.member_sizes[-1] > m:
            raise ValueError(f"member_sizes {self.member_sizes} ask for more than the {m} members of {variable} at lead {lead} h")
        # the whole ensemble's parts are the scores above: reused, not recomputed
        whole = [err**2, skill, spread, var, err**2 - var / m] if m >= 2 else None
        curve = {k: whole if k == m and whole is not None else _curve_parts(ens, truth, k) for k in self.member_sizes}
        brier = {float(u): brier_parts(ens, truth, float(u)) for u in self.thresholds.get(variable, ())}
        for region, mask in masks.items():
            s = self._sums.setdefault((variable, lead, region), _Sums())
            sm = lambda z: float(spatial_mean(z, self.weights, mask))  # noqa: E731
            s.n += 1
            mse_i, bias_i, mae_i = sm(err**2), sm(err), sm(np.abs(err))
            s.mse += mse_i
            s.bias += bias_i
            s.mae += mae_i
            s.member_mse += float(np.mean([sm((e - truth) ** 2) for e in ens]))
            if climatology is not None:
                fa, ya = mean - climatology, truth - climatology
                den = np.sqrt(sm(fa**2) * sm(ya**2))
                if den > 0:
                    s.acc += sm(fa * ya) / den
                    s.n_acc += 1
                s.climatology_mse += sm((climatology - truth) ** 2)
                s.n_climatology += 1
            if persistence is not None:
                s.persistence_mse += sm((persistence - truth) ** 2)
                s.n_persistence += 1
            crps_i = var_i = float("nan")
            if m >= 2:
                s.members = m
                skill_i, spread_i, var_i = sm(skill), sm(spread), sm(var)
                crps_i = skill_i - 0.5 * spread_i
                s.crps_skill += skill_i
                s.crps_spread += spread_i
                s.var += var_i
                s.mse_debiased += sm(err**2 - var / m)
                if self.rank_ties == "random":
                    counts = np.bincount(ranks[mask].ravel(), minlength=m + 1).astype(np.float64)
                else:
                    counts = rank_histogram_split(ens[:, mask], truth[mask])
                s.rank_counts = counts if s.rank_counts is None else s.rank_counts + counts
                skill_e, spread_e = energy_parts(ens, truth, self.weights, mask)
                s.energy_skill += skill_e
                s.energy_spread += spread_e
            for u, parts in brier.items():
                s.brier[u] = s.brier.get(u, 0.0) + np.array([sm(z) for z in parts])
            for k, parts in curve.items():
                s.curve[k] = s.curve.get(k, 0.0) + np.array([sm(z) for z in parts])
            if self.sink is not None and init is not None:
                self.sink({"variable": variable, "lead_hours": int(lead), "region": region, "init": str(init),
                           "mse": mse_i, "mae": mae_i, "bias": bias_i, "crps": crps_i, "variance": var_i})

    def _valid_cells(self, ens: np.ndarray, truth: np.ndarray, climatology: np.ndarray | None,
                     persistence: np.ndarray | None) -> tuple:
        """Leave out cells without data (a masked field, SST over land: NaN in the truth, the members, the
        climatology or the persistence state) from every score of this init.

        Args: as :meth:`add` (ens (M, H, W), the rest (H, W) or None).

        Returns:
            ``(ens, truth, climatology, persistence, masks)``: the fields with 0 at the empty cells (so no NaN
            reaches a sum) and the region masks (H, W) restricted to the cells with data; unchanged when every
            cell has data.
        """
        valid = np.isfinite(truth) & np.isfinite(ens).all(axis=0)
        for extra in (climatology, persistence):
            if extra is not None:
                valid &= np.isfinite(extra)
        if valid.all():
            return ens, truth, climatology, persistence, self.masks
        fill = lambda z: None if z is None else np.where(valid, z, 0.0)  # noqa: E731
        masks = {r: mask & valid for r, mask in self.masks.items()}
        return np.where(valid, ens, 0.0), fill(truth), fill(climatology), fill(persistence), masks

    def result(self) -> list[dict]:
        """One record per (variable, lead, region) with every score (NaN where undefined)."""
        rows = []
        for (variable, lead, region), s in sorted(self._sums.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
            n = s.n
            row = {
                "variable": variable,
                "lead_hours": int(lead),
                "region": region,
                "n_inits": n,
                "members": max(s.members, 1),
                "rmse": float(np.sqrt(s.mse / n)),
                "mse": s.mse / n,
                "bias": s.bias / n,
                "mae": s.mae / n,
                "member_rmse": float(np.sqrt(s.member_mse / n)),
                "acc": s.acc / s.n_acc if s.n_acc else float("nan"),
                "persistence_rmse": float(np.sqrt(s.persistence_mse / s.n_persistence)) if s.n_persistence else float("nan"),
                "climatology_rmse": float(np.sqrt(s.climatology_mse / s.n_climatology)) if s.n_climatology else float("nan"),
            }
            if s.members >= 2:
                skill, spread = s.crps_skill / n, s.crps_spread / n
                denom = s.mse_debiased / n
                row.update(
                    crps=skill - 0.5 * spread,
                    crps_skill=skill,
                    crps_spread=spread,
                    spread=float(np.sqrt(s.var / n)),
                    ssr=float(np.sqrt(s.var / n / denom)) if denom > 0 else float("inf"),
                    debiased_mse=denom,  # estimates the infinite ensemble's ensemble-mean MSE (may be < 0)
                    energy_score=(s.energy_skill - 0.5 * s.energy_spread) / n,
                    rank_histogram=(s.rank_counts / s.rank_counts.sum()).tolist(),
                )
            else:
                row.update(crps=float("nan"), crps_skill=float("nan"), crps_spread=float("nan"), spread=float("nan"), ssr=float("nan"),
                           debiased_mse=float("nan"), energy_score=float("nan"), rank_histogram=[])
            if s.brier:
                row["brier"] = [_brier_row(u, s.brier[u] / n) for u in sorted(s.brier)]
            if self.member_sizes:
                row["members_curve"] = [_curve_row(k, s.curve[k] / n) for k in self.member_sizes]
            rows.append(row)
        return rows


def _brier_row(u: float, means: np.ndarray) -> dict:
    """Brier scores at threshold ``u`` from the init-mean sums [Brier, fair Brier, exceedance, probability]."""
    bs, fair, base, prob = (float(x) for x in means)
    uncertainty = base * (1.0 - base)
    return {"threshold": u, "brier": bs, "brier_fair": fair, "base_rate": base, "forecast_rate": prob,
            "uncertainty": uncertainty, "brier_skill_fair": 1.0 - fair / uncertainty if uncertainty > 0 else float("nan")}


def _curve_row(k: int, means: np.ndarray) -> dict:
    """Scores of the first ``k`` members from the init-mean sums [mse, skill, spread, var, debiased mse]."""
    mse, skill, spread, var, debiased = (float(x) for x in means)
    return {
        "members": k,
        "rmse": float(np.sqrt(mse)),
        "crps": skill - 0.5 * spread if k >= 2 else float("nan"),  # fair: unbiased for the infinite ensemble
        # standard (finite-ensemble) CRPS: the pair sum over k² instead of k(k − 1); the MAE for one member
        "crps_standard": skill - 0.5 * spread * (k - 1) / k,
        "ssr": float(np.sqrt(var / debiased)) if k >= 2 and debiased > 0 else float("nan"),
        "debiased_mse": debiased,
    }


def great_circle_km(lat1, lon1, lat2, lon2, radius_km: float = 6371.0) -> np.ndarray:
    """Haversine distance ``2R·asin(√(sin²(Δφ/2) + cos φ₁ cos φ₂ sin²(Δλ/2)))`` in km."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlam = np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlam / 2) ** 2
    return 2.0 * radius_km * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
