"""A fit stopped before its first validation still leaves a loadable ``last.ckpt`` (EchoCheckpoint)."""

from __future__ import annotations

import pytest
import torch

from apps.echo.callbacks import EchoCheckpoint
from apps.echo.cli import main
from apps.echo.pipeline import load_model


def test_fit_stopped_before_validation_leaves_last_ckpt(camus2023, tmp_path):
    torch.set_num_threads(1)
    root = tmp_path / "fit"
    main(["fit", "--data.init_args.root", str(camus2023), "--data.init_args.image_size", "32",
          "--data.init_args.batch_size", "4", "--model.init_args.net.init_args.widths", "[8, 16]",
          "--model.init_args.net.init_args.stem", "8", "--model.init_args.net.init_args.emb_dim", "32",
          "--trainer.max_steps", "3", "--trainer.val_check_interval", "100", "--trainer.default_root_dir", str(root)])
    found = {p.name: p for p in root.glob("lightning_logs/version_*/checkpoints/*.ckpt")}
    assert "last.ckpt" in found, f"no last.ckpt, got {sorted(found)}"
    state = torch.load(found["last.ckpt"], weights_only=True)
    assert state["global_step"] == 3  # the state at the stop, not an earlier periodic save
    net, objective, config = load_model(found["last.ckpt"])
    assert config["data"]["init_args"]["image_size"] == 32


def test_checkpoint_rejects_negative_interval():
    with pytest.raises(ValueError, match="every_n_train_steps"):
        EchoCheckpoint(every_n_train_steps=-1)


def _boring_fit(tmp_path, callbacks):
    import lightning.pytorch as pl
    from lightning.pytorch.demos.boring_classes import BoringModel

    ckpt = EchoCheckpoint(dirpath=str(tmp_path / "ck"), every_n_train_steps=50)
    trainer = pl.Trainer(max_steps=3, callbacks=[*callbacks, ckpt], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path))
    trainer.fit(BoringModel())
    return ckpt


def test_fallback_save_without_the_core_callback(tmp_path):
    ckpt = _boring_fit(tmp_path, [])
    last = tmp_path / "ck" / "last.ckpt"
    assert last.exists() and ckpt.last_model_path == str(last)
    assert torch.load(last, weights_only=True)["global_step"] == 3


def test_stands_down_when_the_core_writes_last_ckpt(tmp_path):
    from dualsci.training import FinalCheckpoint

    final = FinalCheckpoint()
    ckpt = _boring_fit(tmp_path, [final])
    assert final.last_path == str(tmp_path / "ck" / "last.ckpt")  # the core wrote into our folder
    assert ckpt.last_model_path != final.last_path  # and we did not write it a second time
