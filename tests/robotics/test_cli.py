from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.robotics.cli import main

CONFIG = Path(__file__).resolve().parents[2] / "apps/robotics/configs"


def test_fit_then_rollout(tmp_path):
    main(["fit", "--config", str(CONFIG / "demo.yaml"), "--trainer.max_steps", "2",
          "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false",
          "--data.init_args.toy_episodes", "6", "--data.init_args.toy_res", "16", "--data.init_args.val_episodes", "1",
          "--model.init_args.net.init_args.image_size", "16", "--model.init_args.net.init_args.dim", "32",
          "--model.init_args.net.init_args.depth_dual", "1", "--model.init_args.net.init_args.enc_channels", "8"])
    ckpt = next((tmp_path / "run").rglob("last.ckpt"))
    from apps.robotics.train import load_policy_net

    assert load_policy_net(ckpt)[0].obs_field_shapes == {"state": [4]}  # the toy task's state, for Policy's check
    common = ["--config", str(CONFIG / "demo.yaml"), "--trainer.default_root_dir", str(tmp_path / "run2"),
              "--trainer.enable_progress_bar", "false", "--data.init_args.toy_episodes", "6",
              "--data.init_args.toy_res", "16", "--data.init_args.val_episodes", "1",
              "--model.init_args.net.init_args.image_size", "16", "--model.init_args.net.init_args.dim", "32",
              "--model.init_args.net.init_args.depth_dual", "1", "--model.init_args.net.init_args.enc_channels", "8",
              "--ckpt_path", str(ckpt)]
    val = main(["validate"] + common)
    assert "val/loss" in val.trainer.callback_metrics
    pred = main(["predict"] + common)
    chunks = pred.trainer.predict_loop.predictions
    assert chunks and chunks[0]["action"].shape[1:] == (16, 2)
    out = tmp_path / "eval"
    rc = main(["rollout", "--ckpt", str(ckpt), "--env", "toy_push", "--res", "16", "--episodes", "2",
               "--max-steps", "4", "--videos", "1", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["n_episodes"] == 2 and res["episode_steps"] == [4, 4]
    assert Path(res["videos"][0]).exists()
    # planning scores imagined states: this image-target policy has none -> clear error, nothing written
    rc = main(["rollout", "--ckpt", str(ckpt), "--env", "toy_push", "--plan-samples", "4", "--out", str(tmp_path / "p")])
    assert rc == 2 and not (tmp_path / "p").exists()
    # the same for drawing the imagined future into the videos
    rc = main(["rollout", "--ckpt", str(ckpt), "--env", "toy_push", "--show-imagined", "--out", str(tmp_path / "s")])
    assert rc == 2 and not (tmp_path / "s").exists()


def test_rollout_bad_checkpoint_writes_nothing(tmp_path, capsys):
    rc = main(["rollout", "--ckpt", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "missing.ckpt" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()


def test_image_size_mismatch_is_reported(tmp_path):
    from apps.robotics.data import DataError

    # a DataError, so the console script prints one line (exit 2); a plain ValueError was a traceback
    with pytest.raises(DataError, match=r"images are \(16, 16\), the model expects \(32, 32\)"):
        main(["fit", "--config", str(CONFIG / "demo.yaml"), "--trainer.max_steps", "1",
              "--trainer.default_root_dir", str(tmp_path), "--data.init_args.toy_episodes", "3",
              "--data.init_args.toy_res", "16", "--model.init_args.net.init_args.dim", "32"])


def test_make_toy(tmp_path):
    from apps.robotics.data import load_episodes

    assert main(["make-toy", str(tmp_path / "t.zarr"), "--episodes", "3", "--video-only", "1", "--res", "16"]) == 0
    eps = load_episodes(tmp_path / "t.zarr")
    assert eps.n_episodes == 4 and eps.has_action.tolist() == [True, True, True, False]


def test_short_episodes_are_rejected(tmp_path):
    from apps.robotics.data.builtin import generate_toy_push
    from apps.robotics.data.episodes import DataError
    from apps.robotics.data.module import RoboticsDataModule
    from apps.robotics.data.zarr_io import write_replay_zarr

    eps = generate_toy_push(3, res=16, min_length=1, hold=0, max_steps=10)
    path = write_replay_zarr(eps, tmp_path / "short.zarr")
    dm = RoboticsDataModule(str(path), state_keys=["state"], horizon=16, val_episodes=0)
    with pytest.raises(DataError, match=r"short\.zarr, episode \d+: episode has \d+ frames, shorter than the required horizon of 16"):
        dm.setup("fit")


@pytest.mark.parametrize("argv", [
    ["rollout", "--ckpt", "x.pt", "--out", "o", "--max-steps", "0"],
    ["rollout", "--ckpt", "x.pt", "--out", "o", "--max-steps", "-1"],
    ["rollout", "--ckpt", "x.pt", "--out", "o", "--episodes", "0"],
    ["rollout", "--ckpt", "x.pt", "--out", "o", "--temporal-ensemble", "nan"],
    ["rollout", "--ckpt", "x.pt", "--out", "o", "--temporal-ensemble", "-0.1"],
    ["convert", "a.zarr", "b.zarr", "--to", "zarr", "--episodes", "0"],
    ["convert", "a.zarr", "b.zarr", "--to", "zarr", "--episodes", "-2"],
    ["make-toy", "t.zarr", "--episodes", "0"],
    # were silently different runs or tracebacks deep inside: --videos -1 recorded all episodes but the last,
    # --video-only -1 dropped a demonstration, negative seeds and ports out of range raised from numpy/gym/socket
    ["rollout", "--ckpt", "x.pt", "--out", "o", "--videos", "-1"],
    ["rollout", "--ckpt", "x.pt", "--out", "o", "--seed0", "-5"],
    ["make-toy", "t.zarr", "--video-only", "-1"],
    ["make-toy", "t.zarr", "--res", "0"],
    ["make-toy", "t.zarr", "--seed", "-1"],
    ["serve", "--ckpt", "x.pt", "--port", "70000"],
])
def test_out_of_range_arguments_are_usage_errors(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "must be" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


def test_existing_output_or_a_file_on_the_path_is_one_line(tmp_path, capsys):
    """make-toy onto an existing store was a FileExistsError traceback; an output below a file said
    "[Errno 17] File exists" (rollout added "pass --overwrite", which cannot help)."""
    assert main(["make-toy", str(tmp_path / "t.zarr"), "--episodes", "1", "--res", "8"]) == 0
    capsys.readouterr()
    assert main(["make-toy", str(tmp_path / "t.zarr"), "--episodes", "1", "--res", "8"]) == 2
    assert "t.zarr" in capsys.readouterr().out
    (tmp_path / "f").write_text("x")
    for argv in (["make-toy", str(tmp_path / "f" / "t.zarr")],
                 ["rollout", "--ckpt", str(_policy_file(tmp_path / "p.pt")), "--out", str(tmp_path / "f" / "o")]):
        assert main(argv) == 2
        assert f"{tmp_path / 'f'} is a file, not a folder" in capsys.readouterr().out
    for argv in (["make-toy", str(tmp_path / "f"), "--overwrite"],  # were NotADirectoryError tracebacks
                 ["rollout", "--ckpt", str(tmp_path / "p.pt"), "--env", "toy_push", "--res", "16", "--episodes", "1",
                  "--max-steps", "1", "--videos", "0", "--out", str(tmp_path / "f"), "--overwrite"]):
        assert main(argv) == 2
        out = capsys.readouterr().out
        assert out.startswith("error:") and "f" in out and len(out.splitlines()) == 1
    assert (tmp_path / "f").read_text() == "x"


def _policy_file(path, **net):
    """A `save_policy`-format checkpoint of an untrained tiny net (no training needed)."""
    import torch

    from tests.robotics.conftest import tiny_net

    kw = dict(action_dim=2, state_dim=4, horizon=8, n_obs=2, image_size=16, crop_size=12, dim=32, num_heads=2,
              depth_dual=1, depth_tail=1, enc_channels=8, grid=2, future_target="ema")
    kw.update(net)
    torch.save({"format": "dualsci-robotics-policy/1", "net_kwargs": kw, "objective_kwargs": {},
                "data_kwargs": {"state_keys": ["state"]}, "state_dict": tiny_net(**kw).state_dict()}, path)
    return path


def test_rollout_clean_errors(tmp_path, capsys):
    good = _policy_file(tmp_path / "p.pt")
    (tmp_path / "taken").mkdir()
    rc = main(["rollout", "--ckpt", str(good), "--env", "toy_push", "--out", str(tmp_path / "taken")])
    assert rc == 2 and "taken" in capsys.readouterr().out and not any((tmp_path / "taken").iterdir())
    (tmp_path / "g.pt").write_text("garbage\n")
    (tmp_path / "t.pt").write_bytes(good.read_bytes()[:200])
    for bad in ("g.pt", "t.pt"):
        rc = main(["rollout", "--ckpt", str(tmp_path / bad), "--out", str(tmp_path / "o")])
        out = capsys.readouterr().out
        assert rc == 2 and out.startswith("error:") and bad in out and not (tmp_path / "o").exists()
    five = _policy_file(tmp_path / "five.pt", state_dim=5)  # PushT-width state on the 4-column toy task
    rc = main(["rollout", "--ckpt", str(five), "--env", "toy_push", "--res", "16", "--episodes", "1",
               "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert rc == 2 and "five.pt" in out and "toy_push" in out and "state_dim=5" in out
    assert not (tmp_path / "o").exists()


def test_fit_on_missing_data_is_one_line_and_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    """As a console script a data error is one line, exit 2; data is read in prepare_data, before the
    logger creates lightning_logs/version_0."""
    logs = tmp_path / "logs"
    monkeypatch.setattr("sys.argv", ["dualsci-robotics", "fit", "--config", str(CONFIG / "demo.yaml"),
                                     "--data.init_args.path", str(tmp_path / "missing.zarr"),
                                     "--trainer.max_steps", "1", "--trainer.default_root_dir", str(logs)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"error: {tmp_path / 'missing.zarr'}: file not found" in err
    assert "Traceback" not in err and not logs.exists()


def test_damaged_policy_checkpoints_are_one_line_naming_the_file(tmp_path, capsys):
    """Missing entries, unknown settings and weights of another size were tracebacks (TypeError), a
    bare "error: 'net_kwargs'" or a 78-line state_dict report."""
    import torch

    good = torch.load(_policy_file(tmp_path / "p.pt"), weights_only=True)
    cases = {"no_kwargs.pt": ({k: v for k, v in good.items() if k != "net_kwargs"}, "KeyError: 'net_kwargs'"),
             "bogus.pt": ({**good, "net_kwargs": {**good["net_kwargs"], "bogus": 1}}, "unexpected keyword argument 'bogus'"),
             "size.pt": ({**good, "net_kwargs": {**good["net_kwargs"], "dim": 64}}, "size mismatch for"),
             "shapes.pt": ({**good, "obs_field_shapes": {"state": "x"}}, "invalid literal")}
    for name, (blob, detail) in cases.items():
        torch.save(blob, tmp_path / name)
        for argv in (["rollout", "--ckpt", str(tmp_path / name), "--out", str(tmp_path / "o")],
                     ["serve", "--ckpt", str(tmp_path / name)]):
            assert main(argv) == 2
            out = capsys.readouterr().out
            assert len(out.splitlines()) == 1 and name in out and detail in out, out
    assert not (tmp_path / "o").exists()
