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
