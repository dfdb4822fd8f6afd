"""Checkpointing for echo fits: a usable ``last.ckpt`` whenever training stops.

Lightning's default ``ModelCheckpoint`` (no monitor) writes only after a validation run or at an epoch
end; with ``val_check_interval: 100`` a fit stopped by ``max_time`` before step 100 (a loaded machine)
left no checkpoint at all, and ``segment`` had nothing to load. :class:`EchoCheckpoint` is a
``ModelCheckpoint`` that also saves every ``every_n_train_steps`` steps and writes ``last.ckpt`` at the
end of fit, whatever stopped it (``max_time``, ``max_steps``, ``max_epochs``).

The core's ``dualsci.training.FinalCheckpoint`` (added by ``build_cli`` to every trainer, placed
before EMA) writes the same ``last.ckpt`` into this callback's folder. When it is present this
callback's end-of-fit save stands down: written after EMA's ``on_train_end`` (Lightning runs
checkpoint callbacks last), it would replace the raw weights in ``current_model_state`` by the EMA ones.
The end-of-fit save here is the fallback for trainers built without ``build_cli``; with EMA its file
holds EMA weights in both ``state_dict`` and ``current_model_state`` (fine for ``segment``, which loads
``state_dict``; a resumed fit would continue from the EMA weights).
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
        if _core_final_checkpoint(trainer):
            return  # the core writes last.ckpt here, before EMA's copy (module docstring)
        path = Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        trainer.save_checkpoint(str(path), weights_only=False)  # full and resumable; silences Lightning's "not set" line
        self.last_model_path = str(path)


def _core_final_checkpoint(trainer: "pl.Trainer") -> bool:
    """True when the trainer has the core's end-of-fit ``FinalCheckpoint`` (absent in older cores)."""
    import dualsci.training as training

    core = getattr(training, "FinalCheckpoint", None)
    return core is not None and any(isinstance(cb, core) for cb in trainer.callbacks)
