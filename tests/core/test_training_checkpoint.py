"""FinalCheckpoint / build_cli: every fit leaves a loadable last.ckpt, even when stopped before validation."""

from __future__ import annotations

import pytest
import torch

from dualsci.training import DiffusionModule, FinalCheckpoint, build_cli

from test_training_cli import CONFIG
from test_training_module import TinyData


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["dualsci-test"])


def _fit(tmp_path, *extra: str, **kwargs):
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    # 64 samples / batch 8 = 8 steps per epoch; validation only every 100 steps: it never runs.
    args = [
        "fit", "--config", str(tmp_path / "cfg.yaml"), f"--trainer.default_root_dir={tmp_path}",
        "--data.init_args.n=64", "--trainer.val_check_interval=100", "--trainer.check_val_every_n_epoch=null",
        *extra,
    ]
    return build_cli(DiffusionModule, TinyData, args=args, **kwargs)


def _ckpts(tmp_path):
    return sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.ckpt"))


def test_without_it_a_fit_stopped_before_validation_leaves_no_checkpoint(tmp_path):
    """The gap FinalCheckpoint closes (Lightning's default ModelCheckpoint saves after validation)."""
    cli = _fit(tmp_path, "--trainer.max_steps=3", final_checkpoint=False)
    assert cli.trainer.global_step == 3
    assert _ckpts(tmp_path) == []


def test_max_steps_before_validation_leaves_last_ckpt_with_ema(tmp_path):
    cli = _fit(
        tmp_path, "--trainer.max_steps=3",
        "--trainer.callbacks+=dualsci.training.callbacks.EMA", "--trainer.callbacks.decay=0.5",
    )
    assert cli.trainer.global_step == 3
    assert _ckpts(tmp_path) == ["lightning_logs/version_0/checkpoints/last.ckpt"]
    path = tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["global_step"] == 3 and "dualsci_config" in ckpt
    # Saved before EMA copied its average into the model: raw and EMA weights differ.
    raw, ema = ckpt["current_model_state"], ckpt["state_dict"]
    assert any(not torch.equal(raw[k], ema[k]) for k in ema)
    loaded = DiffusionModule.load_from_checkpoint(path, weights_only=True)
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, ema[key])
    # The trained module (EMA copied in at train end) is what the file's state_dict holds.
    for key, value in cli.model.state_dict().items():
        torch.testing.assert_close(value, ema[key])


def test_max_time_stop_leaves_last_ckpt(tmp_path):
    cli = _fit(tmp_path, "--trainer.max_steps=100000", "--trainer.max_time=00:00:00:01", "--data.init_args.n=100000")
    step = cli.trainer.global_step
    assert 0 < step < 100000
    ckpt = torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == step


def test_no_logger_puts_it_under_default_root_dir(tmp_path):
    _fit(tmp_path, "--trainer.max_steps=2", "--trainer.logger=false")
    assert _ckpts(tmp_path) == ["checkpoints/last.ckpt"]


def test_checkpointing_off_writes_nothing(tmp_path):
    _fit(tmp_path, "--trainer.max_steps=2", "--trainer.enable_checkpointing=false")
    assert _ckpts(tmp_path) == []


def test_a_configured_final_checkpoint_is_not_duplicated(tmp_path):
    cli = _fit(
        tmp_path, "--trainer.max_steps=2",
        "--trainer.callbacks+=dualsci.training.FinalCheckpoint", f"--trainer.callbacks.dirpath={tmp_path / 'mine'}",
    )
    finals = [cb for cb in cli.trainer.callbacks if isinstance(cb, FinalCheckpoint)]
    assert len(finals) == 1
    assert _ckpts(tmp_path) == ["mine/last.ckpt"]


def test_follows_a_configured_model_checkpoint_folder_and_replaces_a_last_link(tmp_path):
    ckdir = tmp_path / "ck"
    cli = _fit(
        tmp_path, "--trainer.max_steps=5",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={ckdir}", "--trainer.callbacks.every_n_train_steps=2",
        "--trainer.callbacks.save_last=link", "--trainer.callbacks.save_top_k=-1",
    )
    assert cli.trainer.global_step == 5
    last = ckdir / "last.ckpt"
    assert last.is_file() and not last.is_symlink()
    assert torch.load(last, weights_only=True)["global_step"] == 5
    # The periodic file the link pointed to was not overwritten through the link.
    assert torch.load(ckdir / "epoch=0-step=4.ckpt", weights_only=True)["global_step"] == 4


def test_filename_is_validated():
    with pytest.raises(ValueError, match="filename"):
        FinalCheckpoint(filename="last.ckpt")


def test_warns_when_listed_after_ema(tmp_path):
    from lightning.pytorch import Trainer

    from dualsci.training import make_ema
    from test_training_module import tiny_module

    trainer = Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=tmp_path, callbacks=[make_ema(0.9), FinalCheckpoint()])
    with pytest.warns(UserWarning, match="List FinalCheckpoint before EMA"):
        trainer.fit(tiny_module(), datamodule=TinyData(n=16, batch_size=8))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
