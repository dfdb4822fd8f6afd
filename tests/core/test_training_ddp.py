"""A 2-process ``ddp_spawn`` fit on CPU (gloo): gradients are averaged, weights come back to the parent."""

from __future__ import annotations

import math

import torch
from test_training_module import TinyData, tiny_module, tiny_trainer

from dualsci.training import make_ema


def test_ddp_spawn_two_processes_fit_on_cpu():
    module = tiny_module()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer = tiny_trainer(
        strategy="ddp_spawn", devices=2, max_steps=3, limit_val_batches=1, callbacks=[make_ema(0.9)]
    )
    trainer.fit(module, datamodule=TinyData())
    assert trainer.world_size == 2
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    after = module.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the parent's weights were not updated"
