"""Checkpointing for echo fits: a usable ``last.ckpt`` whenever training stops.

Lightning's default ``ModelCheckpoint`` (no monitor) writes only after a validation run or at an epoch
end; with ``val_check_interval: 100`` a fit stopped by ``max_time`` before step 100 (a loaded machine)
left no checkpoint at all, and ``segment`` had nothing to load. :class:`EchoCheckpoint` is a
``ModelCheckpoint`` that also saves every ``every_n_train_steps`` steps and writes ``last.ckpt`` at the
end of fit, whatever stopped it (``max_time``, ``max_steps``, ``max_epochs``).

It does not conflict with a core default that writes ``last.ckpt`` when fit ends: both write the same
trainer state at the same step to the same name in the same ``checkpoints/`` folder, so whichever runs
second rewrites an identical file. EMA (``dualsci.training.callbacks.EMA``) runs its ``on_train_end``
first (Lightning puts checkpoint callbacks last), so the saved ``state_dict`` holds the EMA weights.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class EchoCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with ``save_last=True`` by default and a save when fit ends.

    Args:
        every_n_train_steps: periodic save (0 = none); the newest ``save_top_k`` (default 1) are kept.
        **kwargs: any other ``ModelCheckpoint`` argument.
    """

    def __init__(self, every_n_train_steps: int = 50, save_last: bool = True, **kwargs) -> None:
        if every_n_train_steps < 0:
            raise ValueError(f"EchoCheckpoint: every_n_train_steps must be >= 0, got {every_n_train_steps}")
        super().__init__(every_n_train_steps=every_n_train_steps, save_last=save_last, **kwargs)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        super().on_train_end(trainer, pl_module)
        if trainer.fast_dev_run or trainer.global_step == 0 or self.dirpath is None:
            return  # nothing trained: no checkpoint is better than an untrained one
        path = Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        trainer.save_checkpoint(str(path))
        self.last_model_path = str(path)
