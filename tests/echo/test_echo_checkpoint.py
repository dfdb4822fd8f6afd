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
