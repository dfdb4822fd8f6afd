"""The one LightningCLI factory every dualsci command is built with, and the core's own ``dualsci``.

``build_cli`` gives an app ``fit | validate | test | predict`` with YAML ``--config`` files,
``--print_config``, ``PL_*``-style environment variables and model/data chosen by
``class_path`` — plus the app's own verbs (``dualsci-weather forecast ...``), which are plain
functions that receive the rest of the command line and never reach LightningCLI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import lightning.pytorch as pl
from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.callbacks.weight_averaging import WeightAveraging
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from dualsci.training.checkpoint import FinalCheckpoint

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class EmbedConfigCallback(SaveConfigCallback):
    """Save ``config.yaml`` in the log folder (as Lightning does) and embed it in every checkpoint.

    The YAML text goes to ``checkpoint["dualsci_config"]`` (a string: loads with
    ``weights_only=True``), so a checkpoint alone says how it was trained, trainer included.
    """

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint["dualsci_config"] = self.parser.dump(self.config, skip_none=False)


def add_final_checkpoint(trainer: pl.Trainer) -> None:
    """Give ``trainer`` a :class:`FinalCheckpoint` unless it has one, placed before any EMA callback.

    Before EMA because Lightning calls ``on_train_end`` in list order and EMA's copies the average
    into the model: saving first keeps the raw weights in ``current_model_state``.
    """
    if any(isinstance(cb, FinalCheckpoint) for cb in trainer.callbacks):
        return
    at = next((i for i, cb in enumerate(trainer.callbacks) if isinstance(cb, WeightAveraging)), len(trainer.callbacks))
    trainer.callbacks.insert(at, FinalCheckpoint())


class _DualsciCLI(LightningCLI):
    """LightningCLI whose trainers always leave a ``last.ckpt`` when fit ends (:class:`FinalCheckpoint`)."""

    def __init__(self, *args: Any, final_checkpoint: bool = True, **kwargs: Any) -> None:
        self._final_checkpoint = final_checkpoint
        super().__init__(*args, **kwargs)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if self._final_checkpoint:
            add_final_checkpoint(trainer)
        return trainer


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's formatter that keeps the epilog's line breaks (the list of app verbs)."""


def _verb_summary(fn: Callable) -> str:
    doc = (fn.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def build_cli(
    model_class: type[pl.LightningModule] | None,
    datamodule_class: type[pl.LightningDataModule] | None,
    *,
    extra_subcommands: Mapping[str, Callable[[list[str]], Any]] = MappingProxyType({}),
    args: Sequence[str] | None = None,
    default_config_files: Sequence[str | Path] | None = None,
    prog: str | None = None,
    run: bool = True,
    final_checkpoint: bool = True,
    **cli_kwargs: Any,
) -> Any:
    """Run (or build) an app's command line.

    ``prog VERB ...`` with VERB in ``extra_subcommands`` calls ``extra_subcommands[VERB](rest)``
    with the remaining arguments (a ``list[str]``; the function parses them itself with argparse or
    jsonargparse, prints its own ``--help``) and returns its result. Anything else goes to
    LightningCLI: ``prog fit --config cfg.yaml --trainer.max_steps 10``, ``prog fit --print_config``.

    Args:
        model_class: base LightningModule class (usually ``DiffusionModule``); subclass mode, so a
            config names the concrete class with ``class_path``.
        datamodule_class: base LightningDataModule class (subclass mode too), or None.
        extra_subcommands: app verbs, name -> ``fn(argv: list[str])``; the first docstring line is
            the verb's summary in ``prog --help``.
        args: the arguments (default ``sys.argv[1:]``).
        default_config_files: YAML files applied, in order, before ``--config`` to every Lightning
            subcommand (e.g. the app's ``configs/demo.yaml``).
        prog: program name in help and for environment variables (``default_env``).
        run: False to build the CLI (parse, instantiate) without running the subcommand; then
            ``args`` must not name a subcommand (LightningCLI's ``run=False`` mode).
        final_checkpoint: add a :class:`~dualsci.training.checkpoint.FinalCheckpoint` to the trainer
            (unless its callbacks already hold one), so every fit leaves ``last.ckpt`` in the
            ``ModelCheckpoint`` folder (``<default_root_dir>/lightning_logs/version_N/checkpoints`` with the
            default logger), even when ``max_time``/``max_steps`` stop it before any validation.
        cli_kwargs: more LightningCLI arguments (e.g. ``trainer_defaults``), passed through.

    Returns:
        The verb's return value, or the ``LightningCLI`` object.
    """
    clash = set(extra_subcommands) & set(LIGHTNING_SUBCOMMANDS)
    if clash:
        raise ValueError(f"build_cli: extra_subcommands may not reuse Lightning's names {sorted(clash)}")
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in extra_subcommands:
        return extra_subcommands[argv[0]](argv[1:])

    epilog = None
    if extra_subcommands:
        width = max(len(name) for name in extra_subcommands)
        lines = [f"  {name:<{width}}  {_verb_summary(fn)}" for name, fn in extra_subcommands.items()]
        epilog = "app commands (run `VERB --help` for their options):\n" + "\n".join(lines)
    main_kwargs: dict[str, Any] = {"default_env": True, "epilog": epilog, "formatter_class": _HelpFormatter}
    if prog is not None:
        main_kwargs["prog"] = prog
    sub_kwargs: dict[str, Any] = {"default_env": True}
    if default_config_files:
        sub_kwargs["default_config_files"] = [str(path) for path in default_config_files]
    parser_kwargs = {**main_kwargs, **{name: dict(sub_kwargs) for name in LIGHTNING_SUBCOMMANDS}}
    if not run:
        parser_kwargs = {**main_kwargs, **sub_kwargs}

    options: dict[str, Any] = {
        "save_config_callback": EmbedConfigCallback,
        # A second run in the same log folder must not fail on the existing config.yaml.
        "save_config_kwargs": {"overwrite": True},
        "subclass_mode_model": True,
        "subclass_mode_data": True,
        # DiffusionModule takes its optimizer and scheduler as arguments (model.optimizer in YAML);
        # LightningCLI's extra top-level --optimizer would be a second way to say the same thing.
        "auto_configure_optimizers": False,
        "seed_everything_default": 0,
        "parser_kwargs": parser_kwargs,
        # None lets LightningCLI read sys.argv itself (a list would make it warn about both).
        "args": None if args is None else argv,
        "run": run,
    }
    options.update(cli_kwargs)
    return _DualsciCLI(model_class, datamodule_class, final_checkpoint=final_checkpoint, **options)


def main(args: Sequence[str] | None = None) -> None:
    """``dualsci``: the core's toy problem (two coupled streams) through the standard CLI."""
    from dualsci.training.module import DiffusionModule
    from dualsci.training.toy import ToyDualDataModule

    build_cli(
        DiffusionModule,
        ToyDualDataModule,
        args=args,
        default_config_files=[CONFIG_DIR / "toy.yaml"],
        prog="dualsci",
    )


if __name__ == "__main__":
    main()
