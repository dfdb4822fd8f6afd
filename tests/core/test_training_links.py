"""build_cli(links=...): data-derived values linked into the model, on parse and on instantiate."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
import yaml

from dualsci.training import DiffusionModule, build_cli
from dualsci.training.cli import CONFIG_DIR, Link
from dualsci.training.toy import ToyDualDataModule

from test_training_cli import CONFIG
from test_training_module import TinyData


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["dualsci-test"])


@pytest.fixture
def tiny_cfg(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(CONFIG)  # net dim 4 = data dim 4 (TinyData's default)
    return str(path)


def test_parse_link_sets_the_model_from_the_data(tiny_cfg):
    links = [("data.init_args.dim", "model.init_args.net.init_args.dim")]  # tuple form
    cli = build_cli(DiffusionModule, TinyData, args=["--config", tiny_cfg, "--data.init_args.dim", "6"],
                    run=False, links=links)
    assert cli.datamodule.dim == 6 and cli.model.net.dim == 6
    assert cli.model.net.mlp_a[0].in_features == 7  # dim + 1 time feature
    # Without the link the YAML's net dim (4) would stay and the shapes would disagree.
    unlinked = build_cli(DiffusionModule, TinyData, args=["--config", tiny_cfg, "--data.init_args.dim", "6"], run=False)
    assert unlinked.model.net.dim == 4


def test_parse_link_with_several_sources_and_print_config(tiny_cfg):
    link = Link(("data.init_args.length", "data.init_args.dim"), "model.init_args.net.init_args.hidden",
                compute_fn=lambda length, dim: length * dim)
    args = ["--config", tiny_cfg, "--data.init_args.length", "5"]
    cli = build_cli(DiffusionModule, TinyData, args=args, run=False, links=[link])
    assert cli.model.net.hidden == 20
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_cli(DiffusionModule, TinyData, args=["fit", *args, "--print_config"], links=[link])
    printed = yaml.safe_load(out.getvalue())
    # A linked target is computed, not configured: the printed config leaves it out, so it round-trips.
    assert "hidden" not in printed["model"]["init_args"]["net"]["init_args"]
    assert printed["data"]["init_args"]["length"] == 5


def test_instantiate_link_on_the_toy_config_fits_and_reloads(tmp_path):
    links = [
        Link("data", "model.init_args.net.init_args.config.in_dim_a", lambda dm: dm.in_dim_a, "instantiate"),
        Link("data", "model.init_args.net.init_args.config.in_dim_b", lambda dm: dm.in_dim_b, "instantiate"),
    ]
    args = [
        "fit", "--config", str(CONFIG_DIR / "toy.yaml"), "--model.init_args.net.init_args.config.in_dim_a", "7",
        "--data.init_args.n_train", "32", "--data.init_args.n_val", "8", "--data.init_args.L_a", "4",
        "--data.init_args.L_b", "4", "--data.init_args.batch_size", "16", "--trainer.max_steps", "1",
        "--trainer.max_time", "null", "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0",
        "--trainer.logger", "false", f"--trainer.default_root_dir={tmp_path}",
    ]
    cli = build_cli(DiffusionModule, ToyDualDataModule, args=args, links=links)
    # The linked value wins over the (wrong) 7 given for the target.
    assert cli.model.net.config.in_dim_a == 2 and cli.model.net.embed_a.in_features == 2
    assert cli.trainer.global_step == 1
    (path,) = tmp_path.rglob("last.ckpt")
    loaded = DiffusionModule.load_from_checkpoint(path, weights_only=True)
    assert loaded.net.config.in_dim_a == 2 and loaded.net.config.in_dim_b == 1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(source="a", target="b", apply_on="later"), "apply_on must be one of"),
        (dict(source=("a", "c"), target="b"), "need a compute_fn"),
        (dict(source=("a", "c"), target="b", compute_fn=max, apply_on="instantiate"), "one source object"),
        (dict(source="", target="b"), "non-empty keys"),
    ],
)
def test_link_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Link(**kwargs)
