"""EMA: the arithmetic of Lightning's EMAWeightAveraging and where it lands in a checkpoint."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
from test_training_module import TinyData, TinyDualNet, TinyFlowObjective, tiny_module, tiny_trainer

from dualsci.training import DiffusionModule, make_ema


class _RecordWeights(pl.Callback):
    """The raw weights after every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def _analytic_ema(steps: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """ema_n = d^(n-1)·θ_1 + Σ_{k=2..n} (1−d)·d^(n−k)·θ_k (the first update copies θ_1)."""
    n = len(steps)
    weights = [decay ** (n - 1)] + [(1 - decay) * decay ** (n - k) for k in range(2, n + 1)]
    return {key: sum(w * step[key] for w, step in zip(weights, steps)) for key in steps[0]}


def test_make_ema_is_lightnings_callback():
    ema = make_ema(0.99, update_every_n_steps=2)
    assert isinstance(ema, EMAWeightAveraging) and ema.update_every_n_steps == 2


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_make_ema_rejects_bad_decay(decay):
    with pytest.raises(ValueError, match="decay must be in"):
        make_ema(decay)


def test_ema_arithmetic_and_checkpoint_layout(tmp_path):
    decay = 0.6
    record = _RecordWeights()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer = tiny_trainer(
        max_epochs=1,  # 64 samples / batch 16 = 4 optimizer steps, checkpoint at the epoch's end
        limit_val_batches=0,
        enable_checkpointing=True,
        callbacks=[make_ema(decay), record, checkpoint],
        default_root_dir=tmp_path,
    )
    module = tiny_module(optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    trainer.fit(module, datamodule=TinyData())
    assert len(record.steps) == 4
    expected = _analytic_ema(record.steps, decay)
    raw = record.steps[-1]
    assert not torch.allclose(expected["net.mlp_a.0.weight"], raw["net.mlp_a.0.weight"])

    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    for key in expected:
        torch.testing.assert_close(ckpt["state_dict"][key], expected[key])
        torch.testing.assert_close(ckpt["current_model_state"][key], raw[key])
    # Training ends with the EMA weights copied into the model.
    for key, value in module.state_dict().items():
        torch.testing.assert_close(value, expected[key])
    # load_from_checkpoint gives the EMA model.
    loaded = DiffusionModule.load_from_checkpoint(
        tmp_path / "last.ckpt", net=TinyDualNet(), objective=TinyFlowObjective(), weights_only=True
    )
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, expected[key])


class _NormNet(TinyDualNet):
    """TinyDualNet with a BatchNorm (running statistics) and a normalisation buffer filled at fit start."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(self.dim, momentum=0.5)
        self.register_buffer("scale", torch.ones(1))

    def forward(self, x_a, x_b, t_a, t_b):
        x_a = self.bn(x_a.flatten(0, 1)).view_as(x_a) * self.scale
        return super().forward(x_a, x_b, t_a, t_b)


class _FillStats(pl.Callback):
    """Sets the normalisation buffer after EMA made its copy (setup), as an app filling data stats would."""

    def on_train_start(self, trainer, pl_module) -> None:
        pl_module.net.scale.fill_(3.0)


def _fit_norm_net(tmp_path, **ema_kwargs):
    record = _RecordWeights()
    trainer = tiny_trainer(
        max_epochs=1, limit_val_batches=0, enable_checkpointing=True, default_root_dir=tmp_path,
        callbacks=[make_ema(0.6, **ema_kwargs), _FillStats(), record, ModelCheckpoint(dirpath=tmp_path, filename="last")],
    )
    torch.manual_seed(0)
    module = DiffusionModule(_NormNet(), TinyFlowObjective(), optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    trainer.fit(module, datamodule=TinyData())
    return record.steps, torch.load(tmp_path / "last.ckpt", weights_only=True), module


def test_ema_copies_buffers_by_default(tmp_path):
    steps, ckpt, module = _fit_norm_net(tmp_path)
    raw = steps[-1]
    expected = _analytic_ema(steps, 0.6)
    buffers = {name for name, _ in module.named_buffers()}
    assert {"net.bn.running_mean", "net.bn.running_var", "net.scale"} <= buffers
    for key, value in ckpt["state_dict"].items():
        if key in buffers:  # copied from the live model
            torch.testing.assert_close(value, raw[key])
            torch.testing.assert_close(module.state_dict()[key], raw[key])
        else:  # averaged
            torch.testing.assert_close(value, expected[key])
    assert ckpt["state_dict"]["net.scale"].item() == 3.0
    # The running mean moved during the 4 steps, so averaging would have given something else.
    assert not torch.allclose(expected["net.bn.running_mean"], raw["net.bn.running_mean"])


def test_ema_buffers_average_keeps_lightnings_behaviour(tmp_path):
    steps, ckpt, _ = _fit_norm_net(tmp_path, buffers="average")
    expected = _analytic_ema(steps, 0.6)
    torch.testing.assert_close(ckpt["state_dict"]["net.bn.running_mean"], expected["net.bn.running_mean"])


def test_ema_buffer_options_are_validated():
    with pytest.raises(ValueError, match="buffers must be one of"):
        make_ema(0.9, buffers="mean")
    with pytest.raises(ValueError, match="contradicts"):
        make_ema(0.9, use_buffers=False, buffers="average")
    assert make_ema(0.9).buffers == "copy"
    assert make_ema(0.9, use_buffers=True).buffers == "average"


def test_ema_decay_warmup_follows_the_warmup_rule(tmp_path):
    """``warmup_power=p``: update n uses d_n = min(decay, 1 − (1 + n)^(−p)); the first update copies θ."""
    decay, power = 0.99, 0.75
    record = _RecordWeights()
    trainer = tiny_trainer(
        max_epochs=1, limit_val_batches=0, enable_checkpointing=True, default_root_dir=tmp_path,
        callbacks=[make_ema(decay, warmup_power=power), record, ModelCheckpoint(dirpath=tmp_path, filename="last")],
    )
    module = tiny_module(optimizer=lambda p: torch.optim.SGD(p, lr=0.5))
    trainer.fit(module, datamodule=TinyData())
    steps = record.steps
    expected = {k: v.clone() for k, v in steps[0].items()}
    for n, weights in enumerate(steps[1:], start=1):
        d = min(decay, 1.0 - (1.0 + n) ** -power)
        expected = {k: d * expected[k] + (1.0 - d) * weights[k] for k in expected}
    fixed = _analytic_ema(steps, decay)
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    for key in expected:
        torch.testing.assert_close(ckpt["state_dict"][key], expected[key])
    # the warm-up follows the trained weights much more closely than the fixed decay on a short run
    key = "net.mlp_a.0.weight"
    assert (expected[key] - steps[-1][key]).norm() < 0.5 * (fixed[key] - steps[-1][key]).norm()
    with pytest.raises(ValueError, match="warmup_power"):
        make_ema(0.99, warmup_power=0.0)
