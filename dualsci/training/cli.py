"""The one LightningCLI factory every dualsci command is built with, and the core's own ``dualsci``.

``build_cli`` gives an app ``fit | validate | test | predict`` with YAML ``--config`` files,
``--print_config``, ``PL_*``-style environment variables and model/data chosen by
``class_path`` — plus the app's own verbs (``dualsci-weather forecast ...``), which are plain
functions that receive the rest of the command line and never reach LightningCLI.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Literal, Mapping, Sequence, Union, get_args

import lightning.pytorch as pl
from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.callbacks.weight_averaging import WeightAveraging
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from dualsci.training.checkpoint import FinalCheckpoint
from dualsci.training.hardware import resolve_precision

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
LinkApplyOn = Literal["parse", "instantiate"]
LINK_APPLY_ON: tuple[str, ...] = get_args(LinkApplyOn)
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class EmbedConfigCallback(SaveConfigCallback):
    """Save ``config.yaml`` in the log folder (as Lightning does) and embed it in every checkpoint.

    The YAML text goes to ``checkpoint["dualsci_config"]`` (a string: loads with
    ``weights_only=True``), so a checkpoint alone says how it was trained, trainer included.
    """

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint["dualsci_config"] = self.parser.dump(self.config, skip_none=False)


@dataclass(frozen=True)
class Link:
    """One argument link for :func:`build_cli` (jsonargparse ``parser.link_arguments``).

    The target's value is computed from the source and is no longer an option of its own (setting it
    on the command line or in a YAML is an error; ``--print_config`` shows the computed value for
    ``"parse"`` links).

    Attributes:
        source: a key (or a tuple of keys) of the parsed config, e.g. ``"data.init_args.image_size"``;
            for ``apply_on="instantiate"`` the name of an instantiated object (``"data"``), which
            ``compute_fn`` receives, e.g. to read a shape known only after the data module is built.
        target: the key set, e.g. ``"model.init_args.net.init_args.image_size"``.
        compute_fn: maps the source value(s) (one argument per source key) to the target value; None =
            copy (one source key only).
        apply_on: ``"parse"`` (values in the config, before anything is built) or ``"instantiate"``
            (after the source object is built, before the target's owner is).
    """

    source: str | tuple[str, ...]
    target: str
    compute_fn: Callable[..., Any] | None = None
    apply_on: LinkApplyOn = "parse"

    def __post_init__(self) -> None:
        if self.apply_on not in LINK_APPLY_ON:
            raise ValueError(f"Link: apply_on must be one of {LINK_APPLY_ON}, got {self.apply_on!r}")
        sources = (self.source,) if isinstance(self.source, str) else tuple(self.source)
        if not sources or not all(isinstance(k, str) and k for k in sources) or not self.target:
            raise ValueError(f"Link: source and target must be non-empty keys, got {self.source!r} -> {self.target!r}")
        if len(sources) > 1 and self.compute_fn is None:
            raise ValueError(f"Link: {len(sources)} source keys {sources} need a compute_fn")
        if self.apply_on == "instantiate" and len(sources) != 1:
            raise ValueError(f"Link: apply_on='instantiate' takes one source object, got {sources}")

    @classmethod
    def coerce(cls, link: "Link | Sequence[Any]") -> "Link":
        """A :class:`Link`, or one from a tuple ``(source, target[, compute_fn[, apply_on]])``."""
        return link if isinstance(link, cls) else cls(*link)


def max_time_arg(seconds: float) -> str:
    """A wall-time budget as the ``--trainer.max_time`` string ``DD:HH:MM:SS`` (rounded, at least one
    second: Lightning stops a fit at once on ``00:00:00:00``).

    ``max_time_arg(90.4) == "00:00:01:30"``; ``max_time_arg(90000) == "01:01:00:00"``.
    """
    s = max(1, int(round(float(seconds))))
    m, sec = divmod(s, 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    return f"{d:02d}:{h:02d}:{m:02d}:{sec:02d}"


def add_final_checkpoint(trainer: pl.Trainer) -> None:
    """Give ``trainer`` a :class:`FinalCheckpoint` unless it has one, placed before any EMA callback.

    Before EMA because Lightning calls ``on_train_end`` in list order and EMA's copies the average
    into the model: saving first keeps the raw weights in ``current_model_state``.
    """
    if any(isinstance(cb, FinalCheckpoint) for cb in trainer.callbacks):
        return
    at = next((i for i, cb in enumerate(trainer.callbacks) if isinstance(cb, WeightAveraging)), len(trainer.callbacks))
    trainer.callbacks.insert(at, FinalCheckpoint())


class DualsciTrainer(pl.Trainer):
    """Lightning's ``Trainer`` that also takes ``precision="auto"`` (see :func:`resolve_precision`).

    ``auto`` is resolved once, here, from the machine the trainer runs on: the YAML (and the config
    embedded in a checkpoint) keeps ``auto``, so the same file trains in bf16 on an AMX CPU or a
    recent GPU and in fp32 on an AVX2-only CPU.
    """

    def __init__(self, *args: Any, precision: Any = None, accelerator: Any = "auto", **kwargs: Any) -> None:
        resolved = resolve_precision(precision, accelerator if isinstance(accelerator, str) else "auto")
        super().__init__(*args, precision=resolved, accelerator=accelerator, **kwargs)


def _widen_precision(signature: inspect.Signature) -> inspect.Signature:
    """``Trainer.__init__``'s signature with ``"auto"`` added to ``precision``'s Literal (for jsonargparse)."""
    return signature.replace(
        parameters=[
            p.replace(annotation=Union[p.annotation, Literal["auto"]]) if p.name == "precision" else p
            for p in signature.parameters.values()
        ]
    )


# jsonargparse reads the options of a trainer class from its __init__ signature: expose the parent's
# full signature (every Trainer option typed and documented) with "auto" allowed for precision.
DualsciTrainer.__init__.__signature__ = _widen_precision(inspect.signature(pl.Trainer.__init__))  # type: ignore[attr-defined]


class ConfigError(ValueError):
    """A configured object refused its settings while the CLI built it (its own ``ValueError``)."""


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of ``exc``'s cause/context chain (jsonargparse wraps the class's own error)."""
    seen = {id(exc)}
    while (nxt := exc.__cause__ or exc.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        exc = nxt
    return exc


class _DualsciCLI(LightningCLI):
    """LightningCLI whose trainers always leave a ``last.ckpt`` when fit ends (:class:`FinalCheckpoint`)."""

    def __init__(
        self, *args: Any, final_checkpoint: bool = True, links: Sequence[Link] = (), **kwargs: Any
    ) -> None:
        self._final_checkpoint = final_checkpoint
        self._links = tuple(links)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        """Register the :class:`Link`s on every subcommand's parser."""
        for link in self._links:
            parser.link_arguments(link.source, link.target, compute_fn=link.compute_fn, apply_on=link.apply_on)

    def instantiate_classes(self) -> None:
        """Build model, data and trainer; a class's own ``ValueError`` (a setting it refuses, e.g.
        ``dim`` not divisible by ``num_heads``) becomes a :class:`ConfigError` with that message, so a
        console script shows one line instead of jsonargparse's nested traceback."""
        try:
            super().instantiate_classes()
        except Exception as exc:  # noqa: BLE001 -- re-raised unless the root cause is a ValueError
            root = _root_cause(exc)  # an error that reached here unwrapped keeps its own type
            if root is not exc and isinstance(root, ValueError) and not isinstance(root, ConfigError):
                raise ConfigError(f"{self.subcommand or 'config'}: {root}") from exc
            raise

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
    links: Sequence[Link | Sequence[Any]] = (),
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
        links: argument links (:class:`Link` or tuples ``(source, target[, compute_fn[, apply_on]])``),
            e.g. ``Link("data.init_args.image_size", "model.init_args.net.init_args.image_size")``
            so a data-derived size is set once; applied to every Lightning subcommand.
        cli_kwargs: more LightningCLI arguments (e.g. ``trainer_defaults``), passed through. The
            trainer class defaults to :class:`DualsciTrainer`, so ``--trainer.precision auto`` works.

    Returns:
        The verb's return value, or the ``LightningCLI`` object.
    """
    clash = set(extra_subcommands) & set(LIGHTNING_SUBCOMMANDS)
    if clash:
        raise ValueError(f"build_cli: extra_subcommands may not reuse Lightning's names {sorted(clash)}")
    link_list = [Link.coerce(link) for link in links]
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
        "trainer_class": DualsciTrainer,
    }
    options.update(cli_kwargs)
    return _DualsciCLI(model_class, datamodule_class, final_checkpoint=final_checkpoint, links=link_list, **options)


def console_exit(result: Any, args: Sequence[str] | None) -> Any:
    """Give a Python caller `result`; end a console-script run with the right exit status.

    Console scripts run ``sys.exit(main())``, and a returned object that is neither an int nor None
    makes Python print it and exit with status 1, so a successful verb (returning a path, a dict or the
    LightningCLI object) would look failed. With ``args=None`` (the process's own command line) this
    exits with the verb's int status, 0 for any other result; with explicit ``args`` it returns `result`.
    """
    if args is not None:
        return result
    sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)


def console_main(run: Callable[[], Any], args: Sequence[str] | None,
                 input_errors: tuple[type[BaseException], ...] = ()) -> Any:
    """Run an app's command line (``run``, usually ``lambda: build_cli(...)``) as console scripts need it.

    As a console script (``args=None``) an exception of ``input_errors`` (bad input; its message names
    the file and the problem) or a :class:`ConfigError` (a configured class refused its settings) becomes
    one ``error:`` line on stderr and exit status 2, and the result an
    exit status (`console_exit`). From Python (explicit ``args``) exceptions propagate and the result is
    returned.
    """
    try:
        result = run()
    except (*input_errors, ConfigError) as exc:
        if args is not None:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return console_exit(result, args)


def main(args: Sequence[str] | None = None) -> Any:
    """``dualsci``: the core's toy problem (two coupled streams) through the standard CLI."""
    from dualsci.training.module import DiffusionModule
    from dualsci.training.toy import ToyDualDataModule

    return console_main(lambda: build_cli(DiffusionModule, ToyDualDataModule, args=args,
                                          default_config_files=[CONFIG_DIR / "toy.yaml"], prog="dualsci"), args)


if __name__ == "__main__":
    main()
