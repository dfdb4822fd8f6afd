"""Programmatic training (demo, benchmark, tests): the same classes the CLI configures from YAML."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from dualsci.training import DiffusionModule
from dualsci.training.callbacks import EMA

from apps.robotics.data.module import RoboticsDataModule
from apps.robotics.model import DustPolicyNet
from apps.robotics.objective import DustObjective


def build_module(net_kwargs: dict, objective_kwargs: dict, lr: float = 1e-4, weight_decay: float = 1e-5,
                 warmup_steps: int = 0, total_steps: int | None = None) -> DiffusionModule:
    """`DiffusionModule` with AdamW (betas 0.95, 0.999 -- the DUST/GR00T recipe) and an optional
    linear warm-up + cosine decay over `total_steps`."""
    net = DustPolicyNet(**net_kwargs)
    objective = DustObjective(**objective_kwargs)
    opt = functools.partial(torch.optim.AdamW, lr=lr, betas=(0.95, 0.999), eps=1e-8, weight_decay=weight_decay)
    sched = None
    if total_steps:
        def lr_lambda(step: int) -> float:
            import math

            if step < warmup_steps:
                return (step + 1) / max(1, warmup_steps)
            frac = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
            return 0.5 * (1 + math.cos(math.pi * frac)) * 0.9 + 0.1

        sched = functools.partial(torch.optim.lr_scheduler.LambdaLR, lr_lambda=lr_lambda)
    return DiffusionModule(net, objective, optimizer=opt, lr_scheduler=sched)


class WarmupEMA(EMA):
    """The core `EMA` callback with Diffusion Policy's decay warm-up on by default (guide robotics.md §5).

    A fixed decay of 0.999 keeps a weight of 0.999^n on the first update's (near-initial) weights:
    0.37 after 1,000 steps, 0.06 after 2,800 -- on CPU budgets of a few thousand steps the averaged
    policy lags far behind the trained one (measured: held-out action error 0.78 after 400 steps while
    the training loss was 0.11), and a variant that makes fewer steps per minute is penalised twice.
    With the warm-up the effective averaging window grows like ``(1 + n)^power`` until ``decay`` is
    reached (≈ 10k steps for 0.999, power 0.75). The update rule lives in the core
    (``EMA(warmup_power=...)``); this name keeps the robotics configs short and stable.

    Args:
        decay: the final (maximal) decay, in (0, 1). power: warm-up exponent (> 0; 0.75 as DP).
        Other arguments as `dualsci.training.callbacks.EMA`.
    """

    def __init__(self, decay: float = 0.999, power: float = 0.75, **kwargs) -> None:
        if power <= 0:
            raise ValueError(f"WarmupEMA: power must be > 0, got {power}")
        super().__init__(decay=decay, warmup_power=power, **kwargs)
        self.power = power


class LossHistory(pl.Callback):
    """Record ``(step, loss, loss_action, loss_vision)`` every `every` optimizer steps (for reports)."""

    def __init__(self, every: int = 10):
        self.every, self.rows = every, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step % self.every == 0 or step == 1:
            m = trainer.callback_metrics
            self.rows.append([step] + [float(m[k]) if k in m else float("nan")
                                       for k in ("train/loss", "train/loss_action", "train/loss_vision")])


def fit(module: DiffusionModule, data: RoboticsDataModule, max_steps: int = -1, max_minutes: float | None = None,
        out_dir: str | Path | None = None, ema_decay: float | None = 0.999, seed: int = 0,
        accelerator: str = "cpu", precision: str = "32-true", log_every: int = 10,
        ema_warmup: float | None = 0.75) -> dict:
    """Train with Lightning (no logger, no checkpoints); returns timing, steps and the loss history.

    ``max_minutes`` bounds the wall time (Lightning ``max_time``); with both limits the first one hit
    stops training. EMA (``ema_decay``) weights are copied into the model at the end; ``ema_warmup``
    is the `WarmupEMA` power (None = fixed decay from the first step).
    """
    pl.seed_everything(seed, workers=True, verbose=False)
    history = LossHistory(log_every)
    callbacks = [history]
    if ema_decay:
        from dualsci.training import make_ema

        callbacks.append(WarmupEMA(ema_decay, ema_warmup) if ema_warmup else make_ema(ema_decay))
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, max_steps=max_steps,
        max_time={"minutes": max_minutes} if max_minutes else None, precision=precision,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks, limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=log_every,
        default_root_dir=str(out_dir) if out_dir else None, max_epochs=-1 if max_steps > 0 or max_minutes else 1)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=data)
    return {"train_seconds": time.perf_counter() - t0, "steps": int(trainer.global_step), "loss_history": history.rows}


def save_policy(path: str | Path, module: DiffusionModule, net_kwargs: dict, objective_kwargs: dict,
                data_kwargs: dict, extra: dict | None = None) -> Path:
    """Save a self-describing policy checkpoint (plain dicts + tensors; loads with weights_only=True)."""
    from dualsci.io import atomic_write

    state = {k: v.detach().cpu() for k, v in module.net.state_dict().items()}
    blob = {"format": "dualsci-robotics-policy/1", "net_kwargs": net_kwargs, "objective_kwargs": objective_kwargs,
            "data_kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in data_kwargs.items()},
            "state_dict": state, "extra": extra or {},
            "obs_field_shapes": getattr(module.net, "obs_field_shapes", None)}
    with atomic_write(path, "wb") as fh:
        torch.save(blob, fh)
    return Path(path)


def load_policy_net(path: str | Path) -> tuple[DustPolicyNet, dict]:
    """Rebuild the net from `save_policy` output or a LightningCLI checkpoint (``weights_only=True``).

    Returns ``(net, info)`` with ``info["state_keys"]`` when known; ``net.obs_field_shapes`` holds the
    training data's per-frame observation shapes when the checkpoint records them (None for older ones).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # garbage, truncated or foreign pickles raise many types
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {_first_line(exc)})") from exc
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: not a robotics policy checkpoint (holds a {type(blob).__name__})")
    policy_file = blob.get("format") == "dualsci-robotics-policy/1"
    spec = {}
    if not policy_file:
        hp = blob.get("hyper_parameters")
        spec = hp.get("net") if isinstance(hp, dict) else None
        if not isinstance(spec, dict) or not str(spec.get("class_path", "")).endswith("DustPolicyNet"):
            raise ValueError(f"{path}: not a robotics policy checkpoint (no DustPolicyNet in hyper_parameters)")
    try:  # a damaged or hand-edited checkpoint: missing entries, bad settings, weights of another shape
        if policy_file:
            net = DustPolicyNet(**blob["net_kwargs"])
            net.load_state_dict(blob["state_dict"])
            shapes, info = blob.get("obs_field_shapes"), {"state_keys": blob["data_kwargs"].get("state_keys", ["state"]),
                                                          **blob}
        else:
            net = DustPolicyNet(**spec.get("init_args", {}))
            net.load_state_dict({k[len("net."):]: v for k, v in blob["state_dict"].items() if k.startswith("net.")})
            shapes = (blob.get("RoboticsDataModule") or {}).get("obs_field_shapes")
            info = {"state_keys": list((blob.get("datamodule_hyper_parameters") or {}).get("state_keys", ["state"]))}
        net.obs_field_shapes = {str(k): [int(d) for d in v] for k, v in shapes.items()} if shapes else None
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a usable robotics policy checkpoint ({type(exc).__name__}: "
                         f"{_first_line(exc)})") from exc
    return net.eval(), info


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's go on for pages: advice, one line per tensor)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    first = lines[0].split(". ")[0]
    if first.endswith(":") and len(lines) > 1:  # "Error(s) in loading state_dict for X:" + the first of them
        first += " " + lines[1].split(". ")[0]
    return first[:240]
