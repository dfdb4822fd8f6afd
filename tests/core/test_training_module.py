"""DiffusionModule: fitting lowers the loss, every loss key is logged, predict goes to the objective.

The tiny dual network, objective and data module below are shared by the other
``test_training_*`` modules (imported by name; they are also the ``class_path`` targets of the CLI
tests), so the training tests do not depend on ``dualsci.nn`` / ``dualsci.diffusion``.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from dualsci.training import DiffusionModule, Objective, ThroughputMFU


class TinyDualNet(nn.Module):
    """Per-token MLP on both streams: ``x_s: (B, L_s, dim)``, ``t_s: (B,)`` -> ``(B, L_s, dim)`` each."""

    def __init__(self, dim: int = 4, hidden: int = 32) -> None:
        super().__init__()
        self.dim = dim
        self.hidden = hidden
        self.mlp_a = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        self.mlp_b = nn.Sequential(nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x_a: Tensor, x_b: Tensor, t_a: Tensor, t_b: Tensor) -> tuple[Tensor, Tensor]:
        ta = t_a[:, None, None].expand(-1, x_a.shape[1], 1)
        tb = t_b[:, None, None].expand(-1, x_b.shape[1], 1)
        return self.mlp_a(torch.cat([x_a, ta], -1)), self.mlp_b(torch.cat([x_b, tb], -1))

    def flops_per_forward(self, batch: int, L_a: int, L_b: int) -> int:
        per_token = 2 * ((self.dim + 1) * self.hidden + self.hidden * self.dim)
        return batch * (L_a + L_b) * per_token


class TinyFlowObjective:
    """Rectified flow on both streams with one shared t: ``x_t = (1−t)·x0 + t·ε``, target ``ε − x0``."""

    def __init__(self, steps: int = 8) -> None:
        self.steps = steps

    def loss(self, net: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x_a, x_b = batch["a"], batch["b"]
        t = torch.rand(x_a.shape[0], device=x_a.device)
        eps_a, eps_b = torch.randn_like(x_a), torch.randn_like(x_b)
        xt_a = (1 - t[:, None, None]) * x_a + t[:, None, None] * eps_a
        xt_b = (1 - t[:, None, None]) * x_b + t[:, None, None] * eps_b
        v_a, v_b = net(xt_a, xt_b, t, t)
        loss_a = (v_a - (eps_a - x_a)).pow(2).mean()
        loss_b = (v_b - (eps_b - x_b)).pow(2).mean()
        return {"loss": loss_a + loss_b, "loss_a": loss_a, "loss_b": loss_b}

    def sample(self, net: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x_a, x_b = torch.randn_like(batch["a"]), torch.randn_like(batch["b"])
        ts = torch.linspace(1.0, 0.0, self.steps + 1)
        for t, s in zip(ts[:-1], ts[1:]):
            tt = t.expand(x_a.shape[0])
            v_a, v_b = net(x_a, x_b, tt, tt)
            x_a, x_b = x_a + (s - t) * v_a, x_b + (s - t) * v_b
        return {"a": x_a, "b": x_b}


class _CoupledPairs(Dataset):
    """Stream a: a fixed pattern plus small noise; stream b: its negative (perfectly coupled)."""

    def __init__(self, n: int, length: int, dim: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        pattern = torch.linspace(-1.0, 1.0, length * dim).reshape(length, dim)
        self.a = pattern + 0.1 * torch.randn(n, length, dim, generator=g)
        self.b = -self.a

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"a": self.a[i], "b": self.b[i]}


class TinyData(pl.LightningDataModule):
    """Tiny coupled-pairs data module (``a, b: (B, length, dim)``)."""

    def __init__(self, n: int = 64, length: int = 4, dim: int = 4, batch_size: int = 16) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.n, self.length, self.dim, self.batch_size = n, length, dim, batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_CoupledPairs(self.n, self.length, self.dim, 0), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_CoupledPairs(self.batch_size, self.length, self.dim, 1), batch_size=self.batch_size)

    test_dataloader = val_dataloader
    predict_dataloader = val_dataloader


def tiny_trainer(**kwargs) -> pl.Trainer:
    options = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def tiny_module(**kwargs) -> DiffusionModule:
    torch.manual_seed(0)
    return DiffusionModule(TinyDualNet(), TinyFlowObjective(), **kwargs)


class _RecordLosses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def test_tiny_objective_satisfies_the_protocol():
    assert isinstance(TinyFlowObjective(), Objective)


def _val_loss(trainer: pl.Trainer, module: DiffusionModule) -> float:
    torch.manual_seed(1)  # the same t and noise draws before and after training
    return trainer.validate(module, datamodule=TinyData(), verbose=False)[0]["val/loss"]


def test_fit_lowers_the_loss_and_logs_every_key():
    module = tiny_module(optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    before = _val_loss(tiny_trainer(), module)
    trainer = tiny_trainer(max_epochs=8, limit_val_batches=1)
    trainer.fit(module, datamodule=TinyData())
    logged = set(trainer.logged_metrics)
    assert {"train/loss", "train/loss_a", "train/loss_b", "val/loss", "val/loss_a", "val/loss_b"} <= logged
    after = _val_loss(trainer, module)
    assert after < 0.6 * before, (before, after)


def test_validate_and_test_log_their_stage():
    trainer = tiny_trainer()
    module = tiny_module()
    (val,) = trainer.validate(module, datamodule=TinyData())
    (test,) = trainer.test(module, datamodule=TinyData())
    assert set(val) == {"val/loss", "val/loss_a", "val/loss_b"}
    assert set(test) == {"test/loss", "test/loss_a", "test/loss_b"}
    assert all(math.isfinite(v) for v in [*val.values(), *test.values()])


def test_predict_delegates_to_objective_sample():
    out = tiny_trainer().predict(tiny_module(), datamodule=TinyData(batch_size=3))
    assert out[0]["a"].shape == (3, 4, 4) and out[0]["b"].shape == (3, 4, 4)


def test_predict_without_sample_names_the_objective():
    class NoSample:
        def loss(self, net, batch):
            return {"loss": torch.zeros(())}

    module = DiffusionModule(TinyDualNet(), NoSample())
    with pytest.raises(NotImplementedError, match="NoSample has no sample"):
        module.predict_step({"a": torch.zeros(1, 2, 4), "b": torch.zeros(1, 2, 4)}, 0)


def test_loss_without_loss_key_is_a_clear_error():
    class Bad:
        def loss(self, net, batch):
            return {"mse": torch.zeros(())}

    module = DiffusionModule(TinyDualNet(), Bad())
    with pytest.raises(KeyError, match="Bad.loss must return a dict with key 'loss'"):
        module.training_step({"a": torch.zeros(1, 2, 4)}, 0)


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="net must be an nn.Module"):
        DiffusionModule("not a net", TinyFlowObjective())
    with pytest.raises(TypeError, match="objective must have a loss"):
        DiffusionModule(TinyDualNet(), object())


def test_scheduler_steps_every_optimizer_step():
    module = tiny_module(
        optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step),
    )
    trainer = tiny_trainer(max_steps=3, limit_val_batches=0)
    trainer.fit(module, datamodule=TinyData())
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.5**3)


def test_hparams_hold_only_plain_values_in_python():
    module = tiny_module(compile=False)
    assert dict(module.hparams) == {"lr_scheduler": None, "compile": False}


def test_bf16_mixed_precision_fits_on_cpu():
    record = _RecordLosses()
    trainer = tiny_trainer(max_steps=4, precision="bf16-mixed", callbacks=[record], limit_val_batches=0)
    trainer.fit(tiny_module(), datamodule=TinyData())
    assert len(record.losses) == 4 and all(math.isfinite(v) for v in record.losses)
    assert trainer.precision == "bf16-mixed"


def test_compile_switch_compiles_the_net_only():
    module = tiny_module(compile=True)
    assert module.net._compiled_call_impl is not None
    assert module._compiled_call_impl is None
    # In-place compilation keeps the state-dict keys of the eager module.
    assert set(module.state_dict()) == set(tiny_module().state_dict())


@pytest.mark.slow  # compiles C++ kernels: 20-25 s for the two tests on a cold inductor cache
def test_compiled_net_trains_logs_and_is_metered():
    record, meter = _RecordLosses(), ThroughputMFU(peak_flops=1e9)
    trainer = tiny_trainer(max_steps=3, callbacks=[record, meter], limit_val_batches=1)
    module = tiny_module(compile=True)
    trainer.fit(module, datamodule=TinyData())
    (val,) = trainer.validate(module, datamodule=TinyData(), verbose=False)
    assert len(record.losses) == 3 and math.isfinite(val["val/loss"])
    # The FLOP-counting forward hook still fires on the compiled net.
    assert all(step["flops_per_s"] > 0 for step in meter.history)
