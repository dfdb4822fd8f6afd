"""The thin LightningModule: a network, an objective object, an optimizer. The maths lives elsewhere.

The objective owns the method (how to corrupt a batch, what to regress, how to sample); this module
only wires it into Lightning: logging, optimizers, the opt-in compilation of the inner network and
hyper-parameters that load back without pickles.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import Tensor, nn


@runtime_checkable
class Objective(Protocol):
    """What :class:`DiffusionModule` needs from a training objective.

    ``loss(net, batch)`` returns a dict of scalar tensors with at least ``"loss"`` (the value to
    minimise); every other key is logged too (e.g. per-stream losses ``"loss_a"``, ``"loss_b"``).
    An objective may also define ``sample(net, batch, **kwargs)``, used by ``predict``.
    Objectives with learnable or buffered state can be ``nn.Module``s; their state is then saved
    with the model.
    """

    def loss(self, net: nn.Module, batch: Any) -> dict[str, Tensor]: ...


_PLAIN = (type(None), bool, int, float, str)


def _is_plain(value: Any) -> bool:
    """True for values that survive YAML and ``torch.load(weights_only=True)`` unchanged."""
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def batch_size_of(batch: Any) -> int:
    """Leading size of the first tensor met in ``batch`` (tensor, mapping or sequence); 1 if none.

    Lightning's own inference warns when a batch also holds per-position tensors such as
    ``pos: (L, n_axes)``; the first tensor is, by the convention of every dualsci dataset, a
    ``(B, ...)`` sample tensor.
    """
    found = _first_leading_size(batch)
    return 1 if found is None else found


def _first_leading_size(batch: Any) -> int | None:
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim > 0 else None
    children = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for child in children:
        found = _first_leading_size(child)
        if found is not None:
            return found
    return None


class DiffusionModule(pl.LightningModule):
    """Train ``net`` with ``objective``; log every loss term; sample through the objective.

    Args:
        net: the network, e.g. a ``dualsci.nn.DualStreamTransformer``.
        objective: an :class:`Objective`; ``objective.loss(net, batch)`` is one training step's maths.
        optimizer: callable ``params -> Optimizer`` (a class such as ``torch.optim.AdamW`` or, from
            YAML, ``{class_path: torch.optim.AdamW, init_args: {lr: 3e-4}}``).
        lr_scheduler: optional callable ``optimizer -> scheduler``. Stepped every optimizer step
            (diffusion warm-ups and decays count steps), except ``ReduceLROnPlateau``, which is
            stepped per epoch on ``val/loss``.
        compile: compile ``self.net`` in place with ``nn.Module.compile`` (state-dict keys stay the
            same, so compiled and eager checkpoints are interchangeable). Never the LightningModule
            itself: dynamo fails on ``self.log`` with torch 2.13 + lightning 2.6.6 (Lightning #21836).
            Opt-in: on 2-thread CPUs compilation is often slower than eager (guide core.md §9).

    Hyper-parameters: built by ``dualsci.training.build_cli`` the whole parsed model config is
    saved (so ``DiffusionModule.load_from_checkpoint(path)`` rebuilds net and objective); built in
    Python, only the plain arguments are (pass ``net=``/``objective=`` to ``load_from_checkpoint``).
    """

    def __init__(
        self,
        net: nn.Module,
        objective: Objective,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"DiffusionModule: net must be an nn.Module, got {type(net).__name__}")
        if not callable(getattr(objective, "loss", None)):
            raise TypeError(
                f"DiffusionModule: objective must have a loss(net, batch) method, got {type(objective).__name__}"
            )
        if _given_hyperparameters.get() is not None:
            # Built by LightningCLI: the parsed config (class_path/init_args dicts) is what we save.
            self.save_hyperparameters()
        else:
            # Built in Python: keep only plain values; modules and callables would need pickles.
            given = {"net": net, "objective": objective, "optimizer": optimizer, "lr_scheduler": lr_scheduler}
            self.save_hyperparameters(ignore=[k for k, v in given.items() if not _is_plain(v)])
        self.net = net
        self.objective = objective
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.compile_net = bool(compile)
        if self.compile_net:
            self.net.compile()

    # ------------------------------------------------------------------ steps

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the network."""
        return self.net(*args, **kwargs)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step("train", batch)

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step("test", batch)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        """Delegate to ``objective.sample(net, batch)``."""
        sample = getattr(self.objective, "sample", None)
        if sample is None:
            raise NotImplementedError(
                f"{type(self.objective).__name__} has no sample(net, batch) method, so predict cannot run"
            )
        return sample(self.net, batch)

    def _step(self, stage: str, batch: Any) -> Tensor:
        losses = self.objective.loss(self.net, batch)
        if not isinstance(losses, dict) or "loss" not in losses:
            raise KeyError(
                f"{type(self.objective).__name__}.loss must return a dict with key 'loss', "
                f"got {type(losses).__name__} {list(losses) if isinstance(losses, dict) else ''}"
            )
        batch_size = batch_size_of(batch)
        on_epoch = stage != "train"
        for key, value in losses.items():
            self.log(
                f"{stage}/{key}",
                value.detach() if isinstance(value, Tensor) else value,
                prog_bar=key == "loss",
                on_step=not on_epoch,
                on_epoch=on_epoch,
                sync_dist=on_epoch,
                batch_size=batch_size,
            )
        return losses["loss"]

    # ------------------------------------------------------------ optimizers

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config = {"scheduler": scheduler, "monitor": "val/loss", "interval": "epoch"}
        else:
            config = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": config}
