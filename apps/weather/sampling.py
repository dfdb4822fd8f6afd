"""Ensemble rollouts: autoregressive blocks of k frames, streamed to a CF/WB2-schema zarr or NetCDF.

* Seeds are counter-based: the start noise of (init, member, block) comes from
  ``SeedSequence([seed, init_hours_since_1970, member, block])``, never reused across blocks (LaDCast's
  bug) and independent of how members are batched.
* Output schema (WeatherBench2 forecast layout + CF): dims ``(time, realization, prediction_timedelta,
  [level,] latitude, longitude)``, ``time`` = init, ``prediction_timedelta`` in hours, a 2-D
  ``valid_time``; units and standard names; provenance (checkpoint sha256, options, seed rule).
* Resumable: work units (init, member batch) are recorded in a ``JsonlManifest`` inside
  ``OUT.partial``; a restarted run with the same options skips finished units and redoes the rest, and
  the final rename to ``OUT`` happens only when every unit is done — the result is identical to an
  uninterrupted run (the computation of a unit depends only on its seeds).
* Multi-model ensembles: given several checkpoints (e.g. one net per training seed, sharing one data
  description), member m is drawn by net ``floor(m * K / M)``; ``model_sha256`` lists the K hashes in that order.
* Memory is flat in leads and members: one member batch and one block live in memory at a time; each
  block is written to its own zarr region as soon as it is sampled.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import xarray as xr

from apps.weather.data import UNITS, WeatherDataError, channel_levels, load_block, match_grid, near_surface_height, open_weather
from apps.weather.dataset import NS_PER_HOUR, NormStats, fill_masked, mask_empty
from apps.weather.model import WeatherForecaster
from apps.weather.objective import WeatherEDMObjective
from apps.weather.prior import prior_tendency
from dualsci.diffusion import Churn, per_sample_noise, sample_generators
from dualsci.io import JsonlManifest, atomic_write, sha256_file



@dataclass
class ForecastOptions:
    """Everything that determines a forecast's values (hashed for resume)."""

    inits: list[str]
    lead_hours: int
    members: int = 10
    sampler: str = "heun"
    steps: int = 10
    churn: float = 0.0
    # EDM's churn window and noise scale (core Churn): churn only at levels s_tmin <= σ <= s_tmax (None: no upper
    # bound), added noise × s_noise (> 1 widens the draws; EDM used 1.003-1.007)
    s_tmin: float = 0.0
    s_tmax: float | None = None
    s_noise: float = 1.0
    ic_noise: float = 0.0
    seed: int = 0
    batch_members: int = 10
    format: str = "zarr"
    sigma_max: float | None = None  # sampling grid top level (None = the objective's, 80)
    rho: float | None = None  # Karras ρ of the sampling grid (None = the objective's, 7)
    # with an autoencoder: "decoded" writes physical fields, "latent" the latents only (apps.weather.latent_store)
    store: str = "decoded"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.members < 1 or self.steps < 1:  # 0 members would write an empty store
            raise ValueError(f"members={self.members} and steps={self.steps} must be >= 1")
        self.churn_settings()  # S_churn, S_tmin, S_tmax and S_noise checked here, at construction
        if self.store not in STORES:
            raise ValueError(f"store={self.store!r} is not one of {STORES}")
        if self.store == "latent" and self.format != "zarr":
            raise ValueError("a latent-only store is a zarr folder; decode it to NetCDF with `dualsci-weather decode`")


    def churn_settings(self) -> Churn:
        """The core sampler's churn settings of these options."""
        return Churn(s_churn=self.churn, s_tmin=self.s_tmin, s_tmax=math.inf if self.s_tmax is None else self.s_tmax,
                     s_noise=self.s_noise)


STORES = ("decoded", "latent")


def block_count(lead_hours: int, frames: int, step_hours: int, checkpoint: str | os.PathLike) -> int:
    """Blocks of ``frames`` states ``step_hours`` apart that reach ``lead_hours``; the lead must be a positive
    multiple of the model step (an error naming the checkpoint otherwise)."""
    if lead_hours % step_hours or lead_hours <= 0:
        raise WeatherDataError(checkpoint, f"lead_hours={lead_hours} must be a positive multiple of the model step {step_hours} h")
    return -(-lead_hours // (frames * step_hours))


def parse_inits(spec: str) -> list[np.datetime64]:
    """``"2019-03-20T00,2019-03-20T12"`` (list) or ``"START:END:STEP_HOURS"`` (range, inclusive)."""
    spec = spec.strip()
    if spec.count(":") >= 2 and "," not in spec and spec.split(":")[-1].isdigit() and "T" not in spec.split(":")[-1]:
        start, end, step = spec.rsplit(":", 2)
        out = np.arange(np.datetime64(start, "h"), np.datetime64(end, "h") + np.timedelta64(1, "h"), np.timedelta64(int(step), "h"))
        return [np.datetime64(t, "h") for t in out]
    return [np.datetime64(s.strip(), "h") for s in spec.split(",") if s.strip()]


def member_seed(seed: int, init: np.datetime64, member: int, block: int, stream: int = 0) -> int:
    """Counter-based seed of one (init, member, block) draw; ``stream`` 1 = IC perturbation."""
    hours = int(np.datetime64(init, "h").astype(np.int64))
    return int(np.random.SeedSequence([seed, hours, member, block, stream]).generate_state(1, np.uint64)[0] % (2**63))


def load_checkpoint(path: str | os.PathLike) -> tuple[WeatherForecaster, WeatherEDMObjective, dict]:
    """Rebuild the forecaster (EMA weights when present) and its data description from a checkpoint."""
    if not Path(path).exists():
        raise WeatherDataError(path, "checkpoint not found")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, a pickle, not a torch file: many exception types
        raise WeatherDataError(path, f"cannot read the checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from exc
    meta = ck.get("weather") if isinstance(ck, dict) else None
    if meta is None or "net" not in meta:
        raise WeatherDataError(path, "not a weather forecaster checkpoint (no 'weather' description)")
    net = WeatherForecaster(**meta["net"])
    state = {k[len("net."):]: v for k, v in ck["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    net.eval()
    return net, WeatherEDMObjective(**meta.get("objective", {})), meta


def _template(meta: dict, channels: list[str], inits: Sequence[np.datetime64], leads: np.ndarray, members: int, chunk_m: int, k: int) -> xr.Dataset:
    import dask.array as da

    lat, lon = np.asarray(meta["lat"]), np.asarray(meta["lon"])
    variables: dict[str, list[str]] = {}
    for ch in channels:
        v, _, lv = ch.partition("/")
        variables.setdefault(v, []).append(lv)
    init_arr = np.asarray(inits, dtype="datetime64[ns]")
    lead_td = (leads * NS_PER_HOUR).astype("timedelta64[ns]")
    data_vars = {}
    levels = None
    for v, lvs in variables.items():
        if lvs[0]:
            levels = [float(x) for x in lvs] if levels is None else levels
            shape = (len(inits), members, len(leads), len(lvs), len(lat), len(lon))
            dims = ("time", "realization", "prediction_timedelta", "level", "latitude", "longitude")
            chunks = (1, chunk_m, k, len(lvs), len(lat), len(lon))
        else:
            shape = (len(inits), members, len(leads), len(lat), len(lon))
            dims = ("time", "realization", "prediction_timedelta", "latitude", "longitude")
            chunks = (1, chunk_m, k, len(lat), len(lon))
        arr = xr.DataArray(da.full(shape, np.nan, dtype=np.float32, chunks=chunks), dims=dims)
        units, std = UNITS.get(v, ("1", None))
        arr.attrs.update(units=units, long_name=v.replace("_", " "))
        if std:
            arr.attrs["standard_name"] = std
        data_vars[v] = arr
    coords = {
        "time": ("time", init_arr, {"standard_name": "forecast_reference_time", "long_name": "initialisation time"}),
        "realization": ("realization", np.arange(members, dtype=np.int32), {"standard_name": "realization", "units": "1"}),
        "prediction_timedelta": ("prediction_timedelta", lead_td, {"standard_name": "forecast_period", "long_name": "lead time"}),
        "latitude": ("latitude", lat, {"units": "degrees_north", "standard_name": "latitude", "axis": "Y"}),
        "longitude": ("longitude", lon, {"units": "degrees_east", "standard_name": "longitude", "axis": "X"}),
        "valid_time": (("time", "prediction_timedelta"), init_arr[:, None] + lead_td[None, :], {"standard_name": "time", "long_name": "valid time"}),
    }
    if levels is not None:
        coords["level"] = ("level", np.asarray(levels), {"units": "hPa", "long_name": "pressure level", "positive": "down",
                                                         "standard_name": "air_pressure", "axis": "Z"})
    for name, h in sorted(set(height_coords(variables).values())):
        coords[name] = ((), np.float64(h), HEIGHT_ATTRS)
    return with_cf_coordinates(xr.Dataset(data_vars, coords=coords))


HEIGHT_ATTRS = {"units": "m", "standard_name": "height", "positive": "up", "axis": "Z", "long_name": "height above the surface"}


def height_coords(variables: Iterable[str]) -> dict[str, tuple[str, float]]:
    """``{variable: (scalar coordinate name, height in m)}`` for the near-surface fields among ``variables``.

    CF puts the 2 m of ``2m_temperature`` in a scalar coordinate ``height`` (standard name ``height``). One
    variable can hold one value, so a store with fields at several heights (2 m temperature and 10 m wind)
    gets ``height_2m``, ``height_10m``, ...; a store with one height gets plain ``height``.
    """
    heights = {str(v): h for v in variables if (h := near_surface_height(str(v))) is not None}
    single = len(set(heights.values())) == 1
    return {v: ("height" if single else f"height_{h:g}m", h) for v, h in heights.items()}


def with_cf_coordinates(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` (shallow copy) with every field's CF ``coordinates`` attribute written out explicitly.

    A field names the non-dimension coordinates on its dims (``valid_time``) and, if it is a near-surface
    field, its own height coordinate only: xarray's default would attach every scalar coordinate (``height``)
    to every field, geopotential at 500 hPa included. Called before every write of a forecast store (zarr
    skeleton, NetCDF, calibrated copies), so a store read back and written again keeps the same attributes.
    """
    out = ds.copy()
    heights = {str(c) for c in out.coords if out[c].attrs.get("standard_name") == "height"}
    own = {v: name for v, (name, _) in height_coords(out.data_vars).items()}
    for v in out.data_vars:
        dims = set(out[v].dims)
        aux = sorted(str(c) for c in out.coords if c not in out.dims and set(out[c].dims) <= dims
                     and (c not in heights or c == own.get(str(v))))
        var = out[v].variable
        var.encoding.pop("coordinates", None)  # read back from a store: the attribute sits in the encoding
        var.attrs.pop("coordinates", None)
        if aux:
            var.attrs["coordinates"] = " ".join(aux)
        else:  # None in the encoding: no attribute at all, rather than xarray's default
            var.encoding["coordinates"] = None
    return out


def cf_encoding(ds: xr.Dataset) -> dict:
    """Encoding of a forecast store's coordinates (zarr and NetCDF, raw or calibrated): no ``_FillValue`` on
    float coordinates (CF 2.5.1: coordinates have no missing data; xarray would add NaN to every float
    variable), init/valid times and leads in whole hours."""
    enc = {str(c): {"_FillValue": None} for c in ds.coords if ds[c].dtype.kind == "f"}
    hours = {"prediction_timedelta": "hours", "time": "hours since 1970-01-01", "valid_time": "hours since 1970-01-01"}
    enc.update({c: {"units": u, "dtype": "int64"} for c, u in hours.items() if c in ds.coords})
    return enc


def _encoding(ds: xr.Dataset) -> dict:
    return {**{v: {"chunks": ds[v].data.chunksize} for v in ds.data_vars}, **cf_encoding(ds)}


def _write_block(store: Path, channels: list[str], phys: np.ndarray, i_init: int, m0: int, l0: int, template: xr.Dataset) -> None:
    """phys: (Mb, k, C, H, W) physical values -> zarr regions."""
    mb, k = phys.shape[:2]
    region = {"time": slice(i_init, i_init + 1), "realization": slice(m0, m0 + mb), "prediction_timedelta": slice(l0, l0 + k)}
    out = {}
    for v in template.data_vars:
        idx = [j for j, ch in enumerate(channels) if ch.partition("/")[0] == v]
        arr = phys[:, :, idx]
        if "level" not in template[v].dims:
            arr = arr[:, :, 0]
        out[v] = (template[v].dims, arr[None].astype(np.float32))
    xr.Dataset(out).to_zarr(store, region=region, consolidated=False, zarr_format=3)


def decoder_grid(meta: dict) -> tuple[int, int]:
    return len(meta["lat"]), len(meta["lon"])


# what every net of a multi-model ensemble must share: members of one store are read as draws of one quantity
_SHARED_META = ("stats", "lat", "lon", "frames", "step_hours", "delta_scale", "diurnal", "damping")


def _same(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def load_ensemble(paths: Sequence[str | os.PathLike]) -> list[tuple[WeatherForecaster, WeatherEDMObjective, dict]]:
    """Load the nets of a multi-model ensemble (e.g. one per training seed) and check they are interchangeable.

    Every checkpoint must share the first one's data description (normalisation, grid, block length, step,
    prior terms) and history length, so one initial state means the same to each; the weights may differ.
    """
    if not paths:
        raise ValueError("no checkpoint given")
    nets = [load_checkpoint(p) for p in paths]
    first = nets[0][2]
    for path, (net, _, meta) in zip(paths[1:], nets[1:]):
        for key in _SHARED_META:
            if not _same(first.get(key), meta.get(key)):
                raise WeatherDataError(path, f"its '{key}' differs from the first checkpoint {paths[0]}: "
                                             "the nets of one ensemble must be trained on the same data description")
        if net.history != nets[0][0].history:
            raise WeatherDataError(path, f"history {net.history} differs from the first checkpoint's "
                                         f"{nets[0][0].history} ({paths[0]})")
    return nets


def member_nets(members: int, n_nets: int) -> np.ndarray:
    """(members,) index of the net that draws each member: contiguous, as even as possible (10 over 4: 3,2,3,2)."""
    return np.arange(members) * n_nets // members


def _rows_of(rows: np.ndarray, batch: int):
    """``pick(t)``: rows ``rows`` of a (batch, ...) tensor, None as None; the whole batch (always, with one net)
    passes as it is, uncopied."""
    if len(rows) == batch:
        return lambda t: t
    index = torch.from_numpy(rows)
    return lambda t: None if t is None else t[index]


def forecast(
    checkpoint: str | os.PathLike | Sequence[str | os.PathLike],
    data: str | os.PathLike,
    out: str | os.PathLike,
    options: ForecastOptions,
    progress: bool = True,
    stop_after_units: int | None = None,
    autoencoder: str | os.PathLike | None = None,
) -> Path:
    """Run an ensemble forecast (see the module docstring).

    Args:
        checkpoint: trained forecaster checkpoint, or several (a multi-model ensemble, e.g. one net per
            training seed, checked by :func:`load_ensemble`): member m is drawn by net ``member_nets(M, K)[m]``.
            Seeds follow the member's global index, so the nets' noises are independent.
        data: dataset providing the initial conditions (and statics) on the checkpoint's grid.
        out: output ``.zarr`` folder or ``.nc`` file.
        options: :class:`ForecastOptions`.
        stop_after_units: stop (as if killed) after this many work units — for resume tests.
        autoencoder: for a forecaster trained on a latent zarr (``encode``): decode every block with
            this autoencoder and write physical fields on its grid (``data`` is then the latent zarr); with
            ``options.store == "latent"``, write the latents only and record the autoencoder, for
            :func:`apps.weather.latent_store.open_decoded` to decode lazily.

    Returns:
        The output path (only once complete).
    """
    from tqdm.auto import tqdm

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: output already exists (refusing to overwrite)")
    if options.format not in ("zarr", "netcdf"):
        raise ValueError(f"format={options.format!r} is not one of ('zarr', 'netcdf')")
    if options.store == "latent" and autoencoder is None:
        raise ValueError("store='latent' keeps a latent forecaster's latents for lazy decoding: it needs the autoencoder")
    checkpoints = [checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else list(checkpoint)
    nets = load_ensemble(checkpoints)
    net, objective, meta = nets[0]
    checkpoint = checkpoints[0]  # data description and errors about it: the nets share it
    net_of_member = member_nets(options.members, len(nets))
    stats = NormStats.from_dict(meta["stats"])
    channels = stats.channels
    k, step = int(meta["frames"]), int(meta["step_hours"])
    n_blocks = block_count(options.lead_hours, k, step, checkpoint)
    leads = np.arange(1, n_blocks * k + 1) * step
    ds = open_weather(data, variables=sorted({c.partition('/')[0] for c in channels}), levels=channel_levels(channels))
    src = str(data)
    ds = match_grid(ds, meta["lat"], meta["lon"], src)
    inits = [np.datetime64(t, "h") for t in options.inits]
    times = ds.time.values.astype("datetime64[h]")
    t_index = []
    for t in inits:
        hit = np.flatnonzero(times == t)
        if not len(hit):
            raise WeatherDataError(src, f"init time {t} is not in the data ({times[0]} .. {times[-1]})", "time")
        t_index.append(int(hit[0]))
    statics_np = stats.statics(ds)  # (S, H, W); a missing, unreadable or NaN static field is an error
    lat_t = torch.tensor(meta["lat"], dtype=torch.float64)
    lon_t = torch.tensor(meta["lon"], dtype=torch.float64)
    delta_scale = torch.tensor(meta["delta_scale"], dtype=torch.float32)
    diurnal = meta.get("diurnal")  # (24, C, H, W) tensor when trained with prior="diurnal" or "damped"
    damping = meta.get("damping")  # (k, C) tensor when trained with prior="damped"
    n_hist = int(getattr(net, "history", 0))
    # the history states (n_hist, step h apart, oldest first) are looked up by time: a gap is an error, not a shift
    hist_index = []
    for t in inits:
        wanted = [t - np.timedelta64(step * (n_hist - j), "h") for j in range(n_hist)]
        hits = [np.flatnonzero(times == w) for w in wanted]
        absent = [str(w) for w, h in zip(wanted, hits) if not len(h)]
        if absent:
            raise WeatherDataError(src, f"init {t} needs {n_hist} state(s) {step} h apart before it (history); "
                                        f"missing {', '.join(absent)} (data {times[0]} .. {times[-1]})", "time")
        hist_index.append(np.array([int(h[0]) for h in hits], dtype=int))
    # Read (and check) every state the run starts from before anything is written: bad input leaves no .partial.
    for ti, hi in zip(t_index, hist_index):
        load_block(ds, channels, np.concatenate([hi, [ti]]))

    bm = max(1, min(options.batch_members, options.members))
    partial = out.with_name(out.name + ".partial")
    store = partial / "forecast.zarr"
    hashes = [sha256_file(c) for c in checkpoints]
    signature = json.dumps({"options": asdict(options), "checkpoint": hashes[0] if len(hashes) == 1 else hashes, "data": src},
                           sort_keys=True)
    if partial.exists():
        prev = (partial / "run.json").read_text() if (partial / "run.json").exists() else ""
        if prev != signature:
            raise FileExistsError(f"{partial}: an unfinished run with different options exists; remove it to start over")
    decoder = None
    out_meta, out_channels, out_stats = meta, channels, stats
    out_valid = None  # (I, C_out, H, W) decoded cells holding data in each init state (masked fields); None: all
    if autoencoder is not None:
        from apps.weather.autoencoder import latent_order, latent_validity, load_autoencoder

        decoder, out_meta = load_autoencoder(autoencoder)
        # the decoder reads latent_000, latent_001, ... in that order; the forecaster's channels may be in another
        latent_index = latent_order(channels, int(decoder.init_kwargs["latent_channels"]), str(checkpoint))
        out_stats = NormStats.from_dict(out_meta["stats"])
        out_channels = out_stats.channels
        out_valid = latent_validity(data, out_channels, inits, decoder_grid(out_meta))
    latent_only = options.store == "latent"
    if latent_only:
        template = _template(meta, channels, inits, leads, options.members, bm, k)
    else:
        template = _template(out_meta, out_channels, inits, leads, options.members, bm, k)
    template.attrs.update(
        Conventions="CF-1.8",
        title="dualsci weather ensemble forecast",
        source="apps.weather latent/pixel EDM forecaster (dualsci)",
        model_sha256=",".join(hashes),  # one per net of a multi-model ensemble, in member order
        **({"member_model": "realization r drawn by the net at index floor(r * n_models / n_members) of model_sha256"}
           if len(hashes) > 1 else {}),
        autoencoder_sha256=sha256_file(autoencoder) if autoencoder is not None else "none (pixel space)",
        options=json.dumps(asdict(options), sort_keys=True),
        seed_rule="noise(init, member, block) ~ SeedSequence([seed, init_hours_since_1970, member, block, 0]); IC perturbation stream 1",
        training_data=str(meta.get("data_path", "")),
        frames_per_block=k,
        step_hours=step,
        **({"store": "latent", "autoencoder": str(Path(autoencoder).resolve())} if latent_only else {}),
    )
    if not partial.exists():
        partial.mkdir(parents=True)
        template.to_zarr(store, compute=False, encoding=_encoding(template), consolidated=False, zarr_format=3)
        if latent_only:
            from apps.weather.latent_store import write_validity

            write_validity(store, out_valid, inits, out_channels, out_meta)
        with atomic_write(partial / "run.json", "w") as f:
            f.write(signature)
    manifest = JsonlManifest(partial / "manifest.jsonl", key="unit")
    done = manifest.done_keys()
    units = [(i, m0) for i in range(len(inits)) for m0 in range(0, options.members, bm)]
    todo = [u for u in units if f"{u[0]}:{u[1]}" not in done]
    bar = tqdm(total=len(units), initial=len(units) - len(todo), desc="forecast", unit="unit", disable=not progress)
    finished = 0
    for i_init, m0 in todo:
        members = list(range(m0, min(m0 + bm, options.members)))
        init = inits[i_init]
        x0_phys = load_block(ds, channels, np.array([t_index[i_init]]))[0]
        # valid0 (C, H, W): cells of the init holding data (None: all); a masked field (SST) reads 0 elsewhere,
        # as in training, and its forecast is NaN there
        x0_n, valid0 = fill_masked(stats.normalise(x0_phys))
        x = torch.from_numpy(x0_n).expand(len(members), -1, -1, -1).clone()
        if options.ic_noise > 0:
            x = x + options.ic_noise * per_sample_noise(x.shape, [member_seed(options.seed, init, m, 0, 1) for m in members])
            if valid0 is not None:
                x = torch.where(torch.from_numpy(valid0), x, 0.0)
        statics = torch.from_numpy(statics_np).expand(len(members), -1, -1, -1)
        x_hist = None
        if n_hist:
            hist_n = fill_masked(stats.normalise(load_block(ds, channels, hist_index[i_init])))[0]
            x_hist = torch.from_numpy(hist_n).expand(len(members), -1, -1, -1, -1).clone()
        for b in range(n_blocks):
            block_init = np.datetime64(init, "ns") + np.timedelta64(b * k * step, "h")
            init_ns = torch.full((len(members),), int(block_init.astype(np.int64)), dtype=torch.int64)
            seeds = [member_seed(options.seed, init, m, b) for m in members]
            noise = per_sample_noise((len(members), k, *x.shape[1:]), seeds)
            gens = sample_generators([s + 1 for s in seeds]) if options.churn > 0 else None
            prior = None if diurnal is None else prior_tendency(torch.as_tensor(diurnal), init_ns, k, step, x0=x, damping=damping)
            parts = []
            owner = net_of_member[members]
            for j in np.unique(owner):  # a member batch may straddle two nets of an ensemble
                rows = np.flatnonzero(owner == j)
                pick = _rows_of(rows, len(members))
                part_net, part_objective, _ = nets[int(j)]
                parts.append(part_objective.sample_block(
                    part_net, pick(x), pick(statics), pick(init_ns), lat_t, lon_t, delta_scale, pick(noise), options.sampler,
                    options.steps, options.churn_settings(), None if gens is None else [gens[i] for i in rows],
                    prior=pick(prior), x_hist=pick(x_hist), sigma_max=options.sigma_max, rho=options.rho,
                ))
            y = torch.cat(parts) if len(parts) > 1 else parts[0]
            phys = mask_empty(stats.denormalise(y.numpy()), valid0)  # (Mb, k, C, H, W)
            if decoder is None or latent_only:
                _write_block(store, channels, phys, i_init, m0, b * k, template)
            else:
                with torch.no_grad():
                    # indexing with a list copies into a new contiguous array, in the decoder's channel order
                    z = torch.from_numpy(phys[:, :, latent_index].reshape(-1, *phys.shape[2:]))
                    dec = decoder.decode(z).numpy().reshape(phys.shape[0], k, len(out_channels), *decoder_grid(out_meta))
                valid_out = None if out_valid is None else out_valid[i_init]
                _write_block(store, out_channels, mask_empty(out_stats.denormalise(dec), valid_out), i_init, m0, b * k, template)
            # Continue from the float32 values that were written (identical on resume).
            y_n = torch.from_numpy(fill_masked(stats.normalise(phys))[0])  # (Mb, k, C, H, W)
            if n_hist:  # the h states before the new init: the tail of (history, old init, this block)
                x_hist = torch.cat([x_hist, x[:, None], y_n[:, :-1]], 1)[:, -n_hist:]
            x = y_n[:, -1]
        manifest.append({"unit": f"{i_init}:{m0}", "init": str(init), "members": members})
        bar.update(1)
        finished += 1
        if stop_after_units is not None and finished >= stop_after_units:
            bar.close()
            return partial
    bar.close()
    if options.format == "zarr":
        os.replace(store, out)
    else:
        fc = with_cf_coordinates(xr.open_zarr(store, consolidated=False).load())
        tmp = partial / "forecast.nc"
        fc.to_netcdf(tmp, engine="netcdf4", encoding=cf_encoding(fc))
        os.replace(tmp, out)
    shutil.rmtree(partial)
    return out
