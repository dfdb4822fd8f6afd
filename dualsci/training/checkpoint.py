"""A ``last.ckpt`` at the end of every fit, whatever stopped it.

Lightning's default ``ModelCheckpoint`` (no monitor) saves after a validation run, or at an epoch end
when no validation is scheduled in that epoch. A fit stopped by ``max_time`` or ``max_steps`` before
its first validation (``val_check_interval: 100`` and a loaded machine) therefore leaves no checkpoint
at all. :class:`FinalCheckpoint` writes one when training ends, in a predictable place:

* ``<dirpath>/last.ckpt`` when ``dirpath`` is given;
* else the folder of the trainer's ``ModelCheckpoint`` (Lightning's default one included), which is
  ``<logger.log_dir>/checkpoints`` (``lightning_logs/version_N/checkpoints`` under
  ``trainer.default_root_dir`` with the default logger) or ``<default_root_dir>/checkpoints`` with
  ``logger: false``;
* else (``enable_checkpointing: false`` and no ``ModelCheckpoint``) nothing is written: checkpointing
  was switched off on purpose.

``build_cli`` adds one to every trainer that has none. With EMA the callback must run its
``on_train_end`` before the EMA callback copies the average into the model (Lightning calls callbacks
in list order; ``build_cli`` puts it before the first weight-averaging callback), so the file holds
the EMA weights in ``state_dict`` and the raw ones in ``current_model_state``, like every other
checkpoint, and resumes exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks.weight_averaging import WeightAveraging
from lightning.pytorch.utilities import rank_zero_warn


class FinalCheckpoint(Callback):
    """Save ``<folder>/<filename>.ckpt`` when fit ends (``max_steps``, ``max_time``, ``max_epochs``, early stop).

    Nothing is written when no optimizer step was taken or under ``fast_dev_run``. The file is written
    under a temporary name and renamed, so an interrupted save never leaves a truncated ``last.ckpt``;
    a ``last.ckpt`` symlink (``ModelCheckpoint(save_last="link")``) is replaced, not followed.

    Args:
        dirpath: folder for the file; None = the trainer's ``ModelCheckpoint`` folder (module docstring).
        filename: file name without the ``.ckpt`` extension.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last") -> None:
        super().__init__()
        if not filename or "/" in filename or filename.endswith(".ckpt"):
            raise ValueError(f"FinalCheckpoint: filename must be a bare name without '.ckpt', got {filename!r}")
        self.dirpath = dirpath
        self.filename = filename
        self.last_path: str | None = None

    def folder(self, trainer: pl.Trainer) -> Path | None:
        """Where the file goes for this trainer, or None when checkpointing is off."""
        if self.dirpath is not None:
            return Path(self.dirpath)
        ckpt = trainer.checkpoint_callback
        if ckpt is None:
            return None
        if getattr(ckpt, "dirpath", None):
            return Path(ckpt.dirpath)
        return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self not in trainer.callbacks:
            return
        mine = trainer.callbacks.index(self)
        if any(isinstance(cb, WeightAveraging) for cb in trainer.callbacks[:mine]):
            rank_zero_warn(
                "FinalCheckpoint is listed after a weight-averaging (EMA) callback: at the end of fit the "
                "EMA weights are already copied into the model, so last.ckpt's current_model_state will "
                "hold EMA weights instead of the raw ones. List FinalCheckpoint before EMA."
            )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        folder = self.folder(trainer)
        if folder is None or trainer.fast_dev_run or trainer.global_step == 0:
            return
        path = folder / f"{self.filename}.ckpt"
        tmp = folder / f".{self.filename}.ckpt.tmp"
        # weights_only=False: a full, resumable checkpoint (optimizer, loops); saying so silences
        # Lightning's "weights_only was not set" line, which users read as an unsafe load.
        trainer.save_checkpoint(str(tmp), weights_only=False)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            if path.is_symlink():
                path.unlink()
            os.replace(tmp, path)
        trainer.strategy.barrier("FinalCheckpoint")
        self.last_path = str(path)
