"""`WarmupEMA`: Diffusion Policy's EMA decay warm-up (the averaged policy must not lag on short budgets)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from apps.robotics.train import WarmupEMA
from dualsci.training.callbacks import _WarmupEMAUpdate


def test_warmup_update_rule_and_short_budget_lag():
    upd = _WarmupEMAUpdate(0.999, 0.75)
    ema, theta = torch.zeros(1), torch.ones(1)
    fixed = torch.zeros(1)
    for n in range(1, 401):  # a weight that jumps from 0 (first copy) to 1 and stays there
        d = min(0.999, 1 - (1 + n) ** -0.75)
        want = d * ema + (1 - d) * theta
        ema = upd(ema, theta, torch.tensor(n))
        torch.testing.assert_close(ema, want)
        fixed = 0.999 * fixed + 0.001 * theta
    assert float(ema) > 0.99 and float(fixed) < 0.34  # fixed decay still holds 0.999^400 = 0.67 of the start
    late = upd(torch.zeros(1), torch.ones(1), torch.tensor(10**6))
    torch.testing.assert_close(late, torch.tensor([0.001]))  # capped at the final decay
    with pytest.raises(ValueError, match="power must be > 0"):
        WarmupEMA(0.999, power=0.0)


class _Line(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))

    def training_step(self, batch, _):
        return ((self.w - batch[0]) ** 2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Record(pl.Callback):
    def __init__(self):
        self.trajectory = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.trajectory.append(pl_module.w.detach().clone())


def test_warmup_ema_in_a_lightning_fit_gives_the_averaged_weights(tmp_path):
    torch.manual_seed(0)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(12, 3) + 2.0), batch_size=1)
    rec = _Record()
    model = _Line()
    trainer = pl.Trainer(max_steps=12, callbacks=[rec, WarmupEMA(0.999, 0.75)], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path))
    trainer.fit(model, data)
    ema = rec.trajectory[0].clone()  # the first update copies the weights
    for n, w in enumerate(rec.trajectory[1:], start=1):
        d = min(0.999, 1 - (1 + n) ** -0.75)
        ema = d * ema + (1 - d) * w
    torch.testing.assert_close(model.w.detach(), ema)
    assert not torch.allclose(model.w.detach(), rec.trajectory[-1])  # averaged, not the last weights
