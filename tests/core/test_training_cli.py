"""build_cli: --print_config round trip, default configs, app verbs, checkpoints that rebuild themselves."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
import yaml

from dualsci.training import DiffusionModule, DualsciTrainer, build_cli, console_exit, resolve_precision

from test_training_module import TinyData


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch):
    """LightningCLI warns when both ``args`` and a real command line are present."""
    monkeypatch.setattr("sys.argv", ["dualsci-test"])


CONFIG = """
model:
  class_path: dualsci.training.DiffusionModule
  init_args:
    net:
      class_path: test_training_module.TinyDualNet
      init_args: {dim: 4, hidden: 8}
    objective:
      class_path: test_training_module.TinyFlowObjective
      init_args: {steps: 3}
    optimizer:
      class_path: torch.optim.AdamW
      init_args: {lr: 0.01}
data:
  class_path: test_training_module.TinyData
  init_args: {n: 32, batch_size: 8}
trainer:
  max_steps: 2
  accelerator: cpu
  enable_progress_bar: false
  enable_model_summary: false
"""


def _print_config(args: list[str], **kwargs) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        build_cli(DiffusionModule, TinyData, args=args, **kwargs)
    assert exit_info.value.code in (0, None)
    return out.getvalue()


def test_print_config_round_trip(tmp_path):
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    first = _print_config(["fit", "--config", str(tmp_path / "cfg.yaml"), "--print_config"])
    parsed = yaml.safe_load(first)
    assert parsed["model"]["init_args"]["net"]["init_args"] == {"dim": 4, "hidden": 8}
    assert parsed["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.01
    assert parsed["trainer"]["max_steps"] == 2
    (tmp_path / "printed.yaml").write_text(first)
    second = _print_config(["fit", "--config", str(tmp_path / "printed.yaml"), "--print_config"])
    assert second == first


def test_default_config_files_apply_to_the_subcommands(tmp_path):
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    for subcommand in ("fit", "predict"):
        printed = yaml.safe_load(
            _print_config(
                [subcommand, "--model.init_args.compile", "true", "--print_config"],
                default_config_files=[tmp_path / "cfg.yaml"],
            )
        )
        assert printed["model"]["init_args"]["net"]["class_path"] == "test_training_module.TinyDualNet"
        assert printed["model"]["init_args"]["compile"] is True


def test_fit_writes_a_checkpoint_that_rebuilds_itself(tmp_path):
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    args = [
        "fit",
        "--config",
        str(tmp_path / "cfg.yaml"),
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=dualsci.training.callbacks.EMA",
        "--trainer.callbacks.decay=0.9",
    ]
    cli = build_cli(DiffusionModule, TinyData, args=args)
    assert cli.trainer.global_step == 2
    # A second run in the same log folder overwrites config.yaml instead of failing.
    build_cli(DiffusionModule, TinyData, args=args)
    ckpt_dir = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    (path,) = ckpt_dir.glob("epoch=*.ckpt")  # Lightning's default ModelCheckpoint
    assert (ckpt_dir / "last.ckpt").is_file()  # build_cli's FinalCheckpoint
    ckpt = torch.load(path, weights_only=True)
    embedded = yaml.safe_load(ckpt["dualsci_config"])
    assert embedded["model"]["init_args"]["net"]["init_args"]["hidden"] == 8
    assert embedded["trainer"]["callbacks"][0]["init_args"]["decay"] == 0.9
    assert "current_model_state" in ckpt  # the EMA callback ran: state_dict holds EMA weights
    assert ckpt["hyper_parameters"]["net"]["class_path"] == "test_training_module.TinyDualNet"
    # No net/objective needed: the saved model config rebuilds them.
    loaded = DiffusionModule.load_from_checkpoint(path, weights_only=True)
    assert loaded.net.hidden == 8 and loaded.objective.steps == 3
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, ckpt["state_dict"][key])


def _hello(argv: list[str]) -> str:
    """Say hello to the arguments."""
    return "hello " + " ".join(argv)


def test_app_verbs_are_dispatched_before_lightning():
    result = build_cli(DiffusionModule, TinyData, extra_subcommands={"hello": _hello}, args=["hello", "--x", "1"])
    assert result == "hello --x 1"


def test_help_lists_the_app_verbs():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_cli(DiffusionModule, TinyData, extra_subcommands={"hello": _hello}, args=["--help"], prog="dualsci-x")
    text = out.getvalue()
    assert "dualsci-x" in text and "fit" in text
    assert "hello  Say hello to the arguments." in text


def test_verbs_may_not_shadow_lightning_subcommands():
    with pytest.raises(ValueError, match=r"reuse Lightning's names \['fit'\]"):
        build_cli(DiffusionModule, TinyData, extra_subcommands={"fit": _hello}, args=["fit"])


@pytest.mark.parametrize("native_bf16, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_precision_auto_follows_the_machine(tmp_path, monkeypatch, native_bf16, expected):
    # bf16_supported is what decides; pretend both kinds of CPU (AMX and AVX2-only).
    monkeypatch.setattr("dualsci.training.hardware.bf16_supported", lambda device="cpu": native_bf16)
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    cli = build_cli(
        DiffusionModule, TinyData, run=False,
        args=["--config", str(tmp_path / "cfg.yaml"), "--trainer.precision", "auto", f"--trainer.default_root_dir={tmp_path}"],
    )
    assert isinstance(cli.trainer, DualsciTrainer)
    assert cli.trainer.precision == expected
    # The config keeps "auto": a checkpoint's embedded config resolves again on the next machine.
    assert cli.config["trainer"]["precision"] == "auto"


def test_precision_other_values_pass_through_and_bad_ones_are_rejected(tmp_path):
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    cli = build_cli(DiffusionModule, TinyData, run=False, args=["--config", str(tmp_path / "cfg.yaml"), "--trainer.precision", "64-true"])
    assert cli.trainer.precision == "64-true"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        build_cli(DiffusionModule, TinyData, run=False, args=["--config", str(tmp_path / "cfg.yaml"), "--trainer.precision", "fp8"])
    assert "precision" in err.getvalue() and "fp8" in err.getvalue()


def test_resolve_precision_on_cuda_asks_cuda(monkeypatch):
    asked = []
    monkeypatch.setattr("dualsci.training.hardware.bf16_supported", lambda device="cpu": asked.append(device) or True)
    assert resolve_precision("auto", "gpu") == "bf16-mixed" and asked == ["cuda"]
    assert resolve_precision("16-mixed", "gpu") == "16-mixed" and asked == ["cuda"]
    assert resolve_precision("auto", "cpu") == "bf16-mixed" and asked == ["cuda", "cpu"]


def test_console_exit_gives_a_status_to_console_scripts_and_results_to_python():
    assert console_exit({"rmse": 1.0}, ["evaluate"]) == {"rmse": 1.0}
    assert console_exit(2, []) == 2
    # console scripts run sys.exit(main()): any non-int result would otherwise exit 1 after success
    for result, status in [({"rmse": 1.0}, 0), ("out.zarr", 0), (None, 0), (0, 0), (2, 2), (True, 0)]:
        with pytest.raises(SystemExit) as exit_info:
            console_exit(result, None)
        assert exit_info.value.code == status


def test_a_setting_a_class_refuses_is_one_error_line(monkeypatch, capsys):
    """``--...config.dim 30`` with 4 heads: DualStreamConfig's ValueError came out of jsonargparse as a
    60-line nested traceback with exit 1; it is a ConfigError naming the setting, one line and exit 2."""
    from dualsci.training.cli import ConfigError, main

    bad = ["fit", "--model.init_args.net.init_args.config.dim", "30", "--trainer.logger", "false"]
    with pytest.raises(ConfigError, match=r"fit: DualStreamConfig: dim \(30\) must be divisible by num_heads \(4\)"):
        main(bad)
    monkeypatch.setattr("sys.argv", ["dualsci", *bad])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: fit: DualStreamConfig: dim (30) must be divisible by num_heads (4)" and "Traceback" not in "".join(err)


def test_max_time_arg_formats_lightning_budgets():
    from lightning.pytorch.callbacks import Timer

    from dualsci.training import max_time_arg

    assert max_time_arg(90.4) == "00:00:01:30"
    assert max_time_arg(90000) == "01:01:00:00"
    assert max_time_arg(0) == max_time_arg(0.2) == "00:00:00:01"  # never a budget that stops at once
    for seconds in (1, 59, 3599, 86401, 12345.6):  # Lightning reads the string back as the same duration
        assert Timer(duration=max_time_arg(seconds))._duration == round(seconds)
