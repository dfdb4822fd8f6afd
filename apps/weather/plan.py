"""Dry run of a forecast: what it would compute and write, with one block timed, before anything runs.

Method card §15.1 asks for a dry run that prints compute and storage first: a 50-member, 10-day rollout of a big
net on a CPU can take hours, and its store can fill a disk. :func:`plan_forecast` loads the checkpoint(s), opens
the data lazily (grid and init times checked as the forecast checks them), counts the work, and times one block
of one member batch on random inputs of the real shapes with the real sampler. It writes nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from apps.weather.data import WeatherDataError, channel_levels, match_grid, open_weather
from apps.weather.dataset import NormStats
from apps.weather.model import WeatherForecaster
from apps.weather.objective import WeatherEDMObjective
from apps.weather.sampling import ForecastOptions, block_count, decoder_grid, load_ensemble
from dualsci.diffusion import sample_generators

FLOAT32_BYTES = 4


def plan_forecast(
    checkpoint: str | os.PathLike | Sequence[str | os.PathLike],
    data: str | os.PathLike,
    options: ForecastOptions,
    autoencoder: str | os.PathLike | None = None,
    time_block: bool = True,
) -> dict:
    """What :func:`apps.weather.sampling.forecast` would do with these arguments, without doing it.

    Returns:
        ``inits``, ``members``, ``batch_members``, ``nets``, ``blocks_per_init``, ``frames_per_block``, ``leads``,
        ``work_units`` (init × member batch), ``output_shape`` (init, member, lead, channel, lat, lon) and
        ``output_bytes`` (float32, before compression); with ``time_block``: ``network_calls_per_block`` (counted),
        ``network_calls`` (all blocks of all member batches), ``seconds_per_block`` (one block of one full member
        batch, decoding included; measured here, on random inputs) and ``estimated_seconds`` (sampling and
        decoding; reading and writing not counted).
    """
    checkpoints = [checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else list(checkpoint)
    nets = load_ensemble(checkpoints)
    net, objective, meta = nets[0]
    stats = NormStats.from_dict(meta["stats"])
    channels = stats.channels
    k = int(meta["frames"])
    n_blocks = block_count(options.lead_hours, k, int(meta["step_hours"]), checkpoints[0])
    ds = open_weather(data, variables=sorted({c.partition("/")[0] for c in channels}), levels=channel_levels(channels))
    ds = match_grid(ds, meta["lat"], meta["lon"], str(data))
    times = set(ds.time.values.astype("datetime64[h]").tolist())
    inits = [np.datetime64(t, "h") for t in options.inits]
    absent = [str(t) for t in inits if t.tolist() not in times]
    if absent:
        raise WeatherDataError(str(data), f"init time(s) {', '.join(absent)} not in the data", "time")
    batch = max(1, min(options.batch_members, options.members))
    units = len(inits) * -(-options.members // batch)
    decoder, out_channels, out_grid = None, len(channels), (len(meta["lat"]), len(meta["lon"]))
    if autoencoder is not None and options.store == "decoded":  # a latent-only store keeps the latents: no decoding
        from apps.weather.autoencoder import load_autoencoder

        decoder, out_meta = load_autoencoder(autoencoder)
        out_channels, out_grid = len(NormStats.from_dict(out_meta["stats"]).channels), decoder_grid(out_meta)
    shape = [len(inits), options.members, n_blocks * k, out_channels, *out_grid]
    plan = {
        "inits": len(inits), "members": options.members, "batch_members": batch, "nets": len(nets),
        "blocks_per_init": n_blocks, "frames_per_block": k, "leads": n_blocks * k, "work_units": units,
        "output_shape": shape, "output_bytes": int(np.prod(shape)) * FLOAT32_BYTES,
    }
    if time_block:
        calls, seconds = _time_one_block(net, objective, meta, stats, options, batch, decoder)
        plan.update(network_calls_per_block=calls, network_calls=calls * units * n_blocks, seconds_per_block=seconds,
                    estimated_seconds=seconds * units * n_blocks)
    return plan


def _time_one_block(net: WeatherForecaster, objective: WeatherEDMObjective, meta: dict, stats: NormStats,
                    options: ForecastOptions, batch: int, decoder: torch.nn.Module | None) -> tuple[int, float]:
    """(network calls, wall seconds) of one block of ``batch`` members on random normalised inputs.

    The values are meaningless; the shapes, the sampler, its levels and churn are the run's, so the cost is.
    """
    c, k = len(stats.channels), int(meta["frames"])
    h, w = len(meta["lat"]), len(meta["lon"])
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, c, h, w, generator=gen)
    noise = torch.randn(batch, k, c, h, w, generator=gen)
    n_hist = int(getattr(net, "history", 0))
    calls: list[int] = []
    handle = net.register_forward_pre_hook(lambda *_: calls.append(1))
    start = time.perf_counter()
    try:
        y = objective.sample_block(
            net, x0, torch.zeros(batch, len(stats.static_names), h, w), torch.zeros(batch, dtype=torch.int64),
            torch.tensor(meta["lat"], dtype=torch.float64), torch.tensor(meta["lon"], dtype=torch.float64),
            torch.as_tensor(meta["delta_scale"], dtype=torch.float32), noise, options.sampler, options.steps, options.churn_settings(),
            sample_generators(range(batch)) if options.churn > 0 else None,
            prior=torch.zeros_like(noise) if meta.get("diurnal") is not None else None,
            x_hist=torch.zeros(batch, n_hist, c, h, w) if n_hist else None, sigma_max=options.sigma_max, rho=options.rho,
        )
        if decoder is not None:
            with torch.no_grad():
                decoder.decode(y.reshape(-1, *y.shape[2:]))
    finally:
        handle.remove()
    return len(calls), time.perf_counter() - start


def describe_plan(plan: dict, out: str | os.PathLike) -> str:
    """The plan in a few lines for the terminal."""
    i, m, lead, ch, h, w = plan["output_shape"]
    lines = [
        f"dry run: nothing written (the forecast would write {Path(out)})",
        f"work: {i} init(s) x {m} member(s) in batches of {plan['batch_members']} = {plan['work_units']} unit(s), "
        f"each {plan['blocks_per_init']} block(s) of {plan['frames_per_block']} frame(s); {plan['nets']} net(s)",
        f"output: {i} x {m} x {lead} leads x {ch} channel(s) x {h} x {w} float32 = {plan['output_bytes'] / 1e6:.1f} MB "
        "before compression",
    ]
    if "seconds_per_block" in plan:
        lines += [
            f"network calls: {plan['network_calls_per_block']} per block, {plan['network_calls']} in all",
            f"time: one block of {plan['batch_members']} member(s) took {plan['seconds_per_block']:.2f} s here, so about "
            f"{plan['estimated_seconds'] / 60:.1f} min of sampling (reading and writing not counted)",
        ]
    return "\n".join(lines)
