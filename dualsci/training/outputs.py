"""Output folders a Lightning run will create, checked before it creates any."""

from __future__ import annotations

import lightning.pytorch as pl

from dualsci.io import output_dir_problem


def run_output_problem(trainer: pl.Trainer) -> str | None:
    """The first folder the run cannot create, as ``"<folder>: <option> <problem>"``, or None.

    Checks the log folder (``default_root_dir``, every logger's ``save_dir``) and, when fitting, the
    checkpoint folders. Call it from a data module's ``prepare_data``: Lightning runs that before its
    logger makes ``lightning_logs/version_N`` (under a file that raised a bare ``NotADirectoryError``),
    and a bad checkpoint folder would otherwise fail only at the first save, after training.
    """
    dirs = [("--trainer.default_root_dir", trainer.default_root_dir)]
    dirs += [("logger save_dir", lg.save_dir) for lg in trainer.loggers if getattr(lg, "save_dir", None)]
    if trainer.training:
        dirs += [("checkpoint dirpath", cb.dirpath) for cb in trainer.checkpoint_callbacks if cb.dirpath]
    for option, folder in dirs:
        problem = output_dir_problem(folder, option)
        if problem:
            return problem
    return None
