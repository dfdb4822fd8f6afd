"""Training callbacks: EMA (Lightning's own) and throughput with model-FLOPs utilisation."""

from __future__ import annotations

import math
import time
from typing import Any, Literal, get_args

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging
from torch import Tensor, nn

from dualsci.training.hardware import measure_gemm_peak
from dualsci.training.module import batch_size_of


class _EMAUpdate:
    """``ema ← decay·ema + (1 − decay)·θ`` as a picklable object.

    Lightning's ``EMAWeightAveraging`` stores ``torch.optim.swa_utils.get_ema_avg_fn(decay)``, a
    closure that cannot be pickled, so the callback cannot cross a ``ddp_spawn`` process boundary.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay

    def __call__(self, ema_param: Tensor, current_param: Tensor, num_averaged: Tensor | int) -> Tensor:
        return self.decay * ema_param + (1.0 - self.decay) * current_param


class _WarmupEMAUpdate:
    """``ema ← d_n·ema + (1 − d_n)·θ`` with ``d_n = min(decay, 1 − (1 + n)^(−power))``, n = updates so far.

    The decay warm-up of Diffusion Policy / timm: with a fixed decay the average keeps a weight
    ``decay^n`` on the first update's (near-initial) weights (0.999: 0.37 after 1,000 steps), so on the
    CPU budgets of a few thousand steps the averaged model lags far behind the trained one. Picklable.
    """

    def __init__(self, decay: float, power: float) -> None:
        self.decay, self.power = decay, power

    def __call__(self, ema_param: Tensor, current_param: Tensor, num_averaged: Tensor | int) -> Tensor:
        n = torch.as_tensor(num_averaged, dtype=ema_param.dtype, device=ema_param.device)
        d = (1.0 - (1.0 + n) ** -self.power).clamp(max=self.decay)
        return d * ema_param + (1.0 - d) * current_param


BufferMode = Literal["copy", "average"]
BUFFER_MODES: tuple[str, ...] = get_args(BufferMode)


class EMA(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging``, picklable (works with ``strategy="ddp_spawn"``), buffers copied.

    Parameters are averaged as in the parent. Buffers (running statistics, normalisation constants
    such as an app's data min/max set at the start of fit) are by default **copied** from the live
    model after every training batch instead of averaged: an EMA of running statistics mixes stale
    statistics into the average (and a normalisation buffer filled after the EMA copy was made would
    be averaged with its placeholder), and Lightning's own ``use_buffers=False`` would instead freeze
    the buffers at their values when fit started. Checkpoint layout as the parent; see :func:`make_ema`.

    Args:
        device, decay, update_every_n_steps, update_starting_at_step, update_starting_at_epoch: as
            ``EMAWeightAveraging``.
        use_buffers: kept for compatibility: ``True`` = ``buffers="average"``, ``False`` = ``"copy"``;
            ``None`` (default) = follow ``buffers``.
        buffers: ``"copy"`` (default) or ``"average"`` (the parent's ``use_buffers=True``).
        warmup_power: None (default) = fixed ``decay`` from the first update; a power p > 0 = the
            decay warm-up ``d_n = min(decay, 1 − (1 + n)^(−p))`` (0.75 as Diffusion Policy), which
            short trainings want (see ``_WarmupEMAUpdate``).
    """

    def __init__(
        self,
        device: str | None = None,
        use_buffers: bool | None = None,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        buffers: BufferMode = "copy",
        warmup_power: float | None = None,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA: decay must be in (0, 1), got {decay}")
        if update_every_n_steps < 1:
            raise ValueError(f"EMA: update_every_n_steps must be >= 1, got {update_every_n_steps}")
        if buffers not in BUFFER_MODES:
            raise ValueError(f"EMA: buffers must be one of {BUFFER_MODES}, got {buffers!r}")
        if use_buffers is not None and use_buffers != (buffers == "average"):
            if buffers != "copy":  # an explicit buffers="average" contradicted by use_buffers=False
                raise ValueError(f"EMA: use_buffers={use_buffers} contradicts buffers={buffers!r}")
            buffers = "average" if use_buffers else "copy"
        super().__init__(
            device=device,
            use_buffers=buffers == "average",
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            update_starting_at_epoch=update_starting_at_epoch,
        )
        self.decay = decay
        self.buffers = buffers
        if warmup_power is not None and not warmup_power > 0:
            raise ValueError(f"EMA: warmup_power must be > 0 or None, got {warmup_power}")
        self.warmup_power = warmup_power
        self._kwargs["avg_fn"] = _EMAUpdate(decay) if warmup_power is None else _WarmupEMAUpdate(decay, warmup_power)

    @torch.no_grad()
    def _copy_buffers(self, pl_module: pl.LightningModule) -> None:
        """Average model's buffers ← the live model's (same module tree, so the same order)."""
        if self.buffers != "copy" or self._average_model is None:
            return
        for mine, live in zip(self._average_model.module.buffers(), pl_module.buffers()):
            mine.copy_(live)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._copy_buffers(pl_module)

    # Before every point where the parent moves the average into the model or into a checkpoint,
    # so the buffers there are the live ones even if something changed them since the last batch.
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._copy_buffers(pl_module)
        super().on_validation_epoch_start(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._copy_buffers(pl_module)
        super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self._copy_buffers(pl_module)
        super().on_save_checkpoint(trainer, pl_module, checkpoint)


def make_ema(
    decay: float = 0.999,
    *,
    update_every_n_steps: int = 1,
    update_starting_at_step: int | None = None,
    device: str | None = None,
    use_buffers: bool | None = None,
    buffers: BufferMode = "copy",
    warmup_power: float | None = None,
) -> EMA:
    """An EMA callback: Lightning's ``EMAWeightAveraging`` (as the picklable subclass :class:`EMA`).

    After each optimizer step ``ema ← decay·ema + (1 − decay)·θ`` for every parameter (the first
    update copies θ); buffers are copied from the live model (``buffers="copy"``, default).
    The EMA weights are swapped in for validation, copied into the model when training ends, and
    saved as the checkpoint's ``state_dict`` (raw weights under ``current_model_state``), so
    ``load_from_checkpoint`` yields the EMA model. In YAML::

        trainer:
          callbacks:
            - class_path: dualsci.training.callbacks.EMA
              init_args: {decay: 0.999}

    Args:
        decay: EMA decay per update, in (0, 1).
        update_every_n_steps: update every n optimizer steps.
        update_starting_at_step: first step to update at (None: from the first step).
        device: where to keep the EMA copy (None: the model's device).
        use_buffers: compatibility alias: True = ``buffers="average"``, False = ``"copy"``.
        buffers: ``"copy"`` (buffers follow the live model: running statistics, normalisation
            constants) or ``"average"`` (EMA of buffers too, Lightning's ``use_buffers=True``).
        warmup_power: None = fixed decay; p > 0 = decay warm-up ``min(decay, 1 − (1 + n)^(−p))``.
    """
    return EMA(
        device=device,
        use_buffers=use_buffers,
        decay=decay,
        update_every_n_steps=update_every_n_steps,
        update_starting_at_step=update_starting_at_step,
        buffers=buffers,
        warmup_power=warmup_power,
    )


class ThroughputMFU(Callback):
    """Log training samples/s, achieved FLOP/s and MFU against a GEMM peak measured at start-up.

    FLOPs per step come from, in order: ``flops_per_sample`` × batch size when given; else every
    call of ``pl_module.net`` during the step, costed by the net's analytic
    ``flops_per_forward(batch, L_a, L_b)`` (×3 for calls with gradients: forward + backward, ×1
    without), which counts extra calls such as CFG or self-conditioning exactly; a net with
    ``flops_of_call(*args, **kwargs)`` (``DualStreamTransformer``) is costed from the call's own
    arguments (per-token times, per-stream conditions). A net without
    ``flops_per_forward`` gets samples/s only.

    Logged each training step: ``perf/samples_per_s``, and with FLOPs known ``perf/flops_per_s``
    and ``perf/mfu``. The same numbers are kept in ``self.history`` (one dict per step).

    Args:
        flops_per_sample: training FLOPs per sample (forward + backward), or None to count.
        peak_flops: FLOP/s denominator, or None to measure ``measure_gemm_peak`` for the trainer's
            precision (bf16 for ``bf16-*``, fp32 otherwise) when fitting starts.
    """

    def __init__(self, flops_per_sample: float | None = None, peak_flops: float | None = None) -> None:
        super().__init__()
        if flops_per_sample is not None and not flops_per_sample > 0:
            raise ValueError(f"ThroughputMFU: flops_per_sample must be > 0, got {flops_per_sample}")
        if peak_flops is not None and not peak_flops > 0:
            raise ValueError(f"ThroughputMFU: peak_flops must be > 0, got {peak_flops}")
        self.flops_per_sample = flops_per_sample
        self.peak_flops = peak_flops
        self.history: list[dict[str, float]] = []
        self._step_flops = 0.0
        self._start = 0.0
        self._hook: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.peak_flops is None:
            dtype = torch.bfloat16 if str(trainer.precision).startswith("bf16") else torch.float32
            self.peak_flops = measure_gemm_peak(dtype, device=pl_module.device)
        net = getattr(pl_module, "net", None)
        if self.flops_per_sample is None and isinstance(net, nn.Module) and hasattr(net, "flops_per_forward"):
            self._hook = net.register_forward_hook(self._count_call, with_kwargs=True)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    @torch.compiler.disable  # a Python counter: keep it out of a compiled net's graph
    def _count_call(self, net: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if hasattr(net, "flops_of_call"):  # DualStreamTransformer: per-token times / per-stream conds counted
            flops = net.flops_of_call(*args, **kwargs)
        else:
            x_a = args[0] if len(args) > 0 else kwargs["x_a"]
            x_b = args[1] if len(args) > 1 else kwargs["x_b"]
            flops = net.flops_per_forward(int(x_a.shape[0]), int(x_a.shape[1]), int(x_b.shape[1]))
        self._step_flops += flops * (3 if torch.is_grad_enabled() else 1)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._step_flops = 0.0
        self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        elapsed = time.perf_counter() - self._start
        samples = batch_size_of(batch)
        flops = self.flops_per_sample * samples if self.flops_per_sample is not None else self._step_flops
        record = {"samples_per_s": samples / elapsed}
        if flops > 0:
            record["flops_per_s"] = flops / elapsed
            record["mfu"] = record["flops_per_s"] / self.peak_flops if self.peak_flops else math.nan
        self.history.append(record)
        for key, value in record.items():
            pl_module.log(f"perf/{key}", value, on_step=True, on_epoch=False, batch_size=samples)
