from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from apps.medseg.generate import GenerateError, generate, load_generator
from apps.medseg.layouts import read_dataset
from apps.medseg.prompts import PromptError

PROMPTS = ["CT abdomen with liver and spleen", "modality=CT; labels=kidney_left"]


def test_generate_writes_both_layouts_manifest_and_card(tiny_generator, tmp_path):
    out = tmp_path / "gen"
    res = generate(tiny_generator, PROMPTS, out, n=2, steps=3, batch=3, spacing=(1.5, 1.5, 3.0), progress=False)
    assert res["pairs"] == 4
    recs = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in recs) == [0, 1, 2, 3]
    r = recs[0]
    for key in ("seed", "prompt", "realised_labels", "checkpoint_sha256", "sampler", "sha256", "requested_labels"):
        assert key in r
    assert r["sampler"]["steps"] == 3 and len(r["checkpoint_sha256"]) == 64
    for layout in ("nnunet", "msd"):
        root = next((out / layout).iterdir())
        idx = read_dataset(root)
        assert idx.layout == layout and len(idx.cases) == 4
        lab = nib.load(idx.cases[0].label)
        assert lab.get_data_dtype() == np.uint8 and lab.header.get_zooms() == (1.5, 1.5, 3.0)
        assert np.asarray(lab.dataobj).shape == (16, 16, 1)
        realised = {k: v for k, v in recs[[x["id"] for x in recs].index(idx.cases[0].case_id)]["realised_labels"].items()}
        counts = np.bincount(np.asarray(lab.dataobj).ravel(), minlength=4)
        assert realised == {n: int(c) for n, c in zip(["liver", "spleen", "kidney_left"], counts[1:]) if c > 0}
    assert "Synthetic data" in (out / "DATASET_CARD.md").read_text()


def test_resume_skips_done_pairs_and_refuses_other_settings(tiny_generator, tmp_path):
    out = tmp_path / "gen"
    generate(tiny_generator, PROMPTS, out, n=2, steps=2, progress=False, max_pairs=3)
    first = (out / "manifest.jsonl").read_text().splitlines()
    assert len(first) == 3
    generate(tiny_generator, PROMPTS, out, n=2, steps=2, progress=False)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 4 and lines[:3] == first
    again = generate(tiny_generator, PROMPTS, out, n=2, steps=2, progress=False)  # nothing left to do
    assert again["new_pairs"] == 0 and again["pairs_per_second"] is None
    json.dumps(again, allow_nan=False)  # the CLI prints it: valid JSON (NaN is not)
    with pytest.raises(GenerateError, match="other settings \\(\\['steps'\\]\\)"):
        generate(tiny_generator, PROMPTS, out, n=2, steps=5, progress=False)


def test_folder_left_by_a_kill_before_the_config_counts_as_empty(tiny_generator, tmp_path):
    out = tmp_path / "gen"
    out.mkdir()
    (out / ".generate_config.json.k3x9q1.tmp").write_text('{"half": ')  # killed before the rename
    res = generate(tiny_generator, PROMPTS, out, n=1, steps=2, progress=False)
    assert res["pairs"] == 2 and (out / "generate_config.json").is_file()
    assert not list(out.rglob(".*.tmp"))


def test_refuses_folder_with_other_data_and_bad_prompts(tiny_generator, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(GenerateError, match="holds other data"):
        generate(tiny_generator, PROMPTS, other, n=1, steps=2, progress=False)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    with pytest.raises(PromptError, match="allowed: \\['liver', 'spleen', 'kidney_left'\\]"):
        generate(tiny_generator, ["modality=CT; labels=heart"], tmp_path / "x", n=1, steps=2, progress=False)
    assert not (tmp_path / "x").exists()
    with pytest.raises(GenerateError, match="not found"):
        load_generator(tmp_path / "missing.pt")


def test_cli_fit_then_generate_from_lightning_checkpoint(tmp_path):
    from apps.medseg.cli import CONFIG_DIR, main

    ckpt_dir = tmp_path / "ckpt"
    main(["fit", "--config", str(CONFIG_DIR / "demo.yaml"), "--trainer.max_steps", "2",
          "--trainer.default_root_dir", str(tmp_path / "fit"),
          "--trainer.callbacks.init_args.dirpath", str(ckpt_dir),
          "--model.init_args.net.init_args.image_size", "16", "--model.init_args.net.init_args.dim", "32",
          "--model.init_args.net.init_args.depth", "1", "--data.init_args.size", "16",
          "--data.init_args.phantom_cases", "2", "--data.init_args.root_cache", str(tmp_path / "phantom")])
    ckpt = ckpt_dir / "last.ckpt"
    assert ckpt.exists()
    # the config's EMA callback: the checkpoint's weights are the average, the raw ones are kept beside
    import torch

    blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    raw, avg = blob["current_model_state"], blob["state_dict"]
    assert any(not torch.equal(raw[k], avg[k]) for k in avg if k.startswith("net.transformer"))
    net, _ = load_generator(ckpt)
    assert net.image_size == 16 and net.label_dict.foreground[0] == "liver"
    res = main(["generate", "--ckpt", str(ckpt), "--prompt", "CT liver", "--n", "2", "--steps", "2",
                "--out", str(tmp_path / "g"), "--no-progress"])
    assert res["pairs"] == 2


def test_mask_to_image_from_user_label_maps(tiny_generator, tmp_path):
    from apps.medseg.data import DataError
    from apps.medseg.phantom import write_phantom_msd

    masks = write_phantom_msd(tmp_path / "masks", n_cases=1, seed=3, shape=(16, 16, 3))
    out = tmp_path / "m2i"
    res = generate(tiny_generator, [], out, n=1, steps=2, masks=masks, progress=False)
    recs = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert res["pairs"] == len(recs) >= 1 and all(r["sampler"]["mode"] == "mask2image" for r in recs)
    # the written mask is the given one (ids remapped to the model's dictionary), so the prompt matches it
    assert all(r["missing_labels"] == [] and r["extra_labels"] == [] for r in recs)
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.uint8), np.eye(4)), empty)
    with pytest.raises(DataError, match="empty mask"):
        generate(tiny_generator, [], tmp_path / "e", n=1, steps=2, masks=empty, progress=False)
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("config, shape", [("totalseg_ct.yaml", (128, 128)), ("totalseg_ct_3d.yaml", (64, 64, 16))])
def test_totalseg_config_trains_on_the_real_ct(shared_file, tmp_path, config, shape):
    from apps.medseg.cli import CONFIG_DIR, main

    shared_file("medseg/totalseg_ct_abdomen_3mm.nii.gz")  # skips without the real data
    main(["fit", "--config", str(CONFIG_DIR / config), "--trainer.max_steps", "1",
          "--trainer.default_root_dir", str(tmp_path / "fit"),
          "--trainer.callbacks.init_args.dirpath", str(tmp_path / "ckpt"),
          "--model.init_args.net.init_args.depth", "1", "--data.init_args.batch_size", "2"])
    net, _ = load_generator(tmp_path / "ckpt" / "last.ckpt")
    assert net.spatial_shape == shape
    assert net.label_dict.foreground == ("liver", "spleen", "kidney_left", "kidney_right", "stomach")
    res = generate(tmp_path / "ckpt" / "last.ckpt", ["CT abdomen with liver and stomach"], tmp_path / "g", n=1,
                   steps=1, progress=False)
    rec = json.loads((tmp_path / "g" / "manifest.jsonl").read_text().splitlines()[0])
    assert res["pairs"] == 1 and rec["shape"] == [*shape, 1][:3]


def test_cli_predict_writes_pairs_previews_and_manifest(tmp_path):
    """fit (2 steps) -> predict through the CLI: files via the generate writer, in a folder made atomically."""
    from PIL import Image

    from apps.medseg.cli import CONFIG_DIR, main

    small = ["--model.init_args.net.init_args.image_size", "16", "--model.init_args.net.init_args.dim", "32",
             "--model.init_args.net.init_args.depth", "1", "--data.init_args.size", "16",
             "--data.init_args.phantom_cases", "2", "--data.init_args.root_cache", str(tmp_path / "phantom"),
             "--trainer.default_root_dir", str(tmp_path / "run")]
    # predict's sampler settings are objective arguments; a checkpoint's hyper-parameters override the
    # command line under LightningCLI, so they are set at fit time here.
    main(["fit", "--config", str(CONFIG_DIR / "demo.yaml"), "--trainer.max_steps", "2",
          "--model.init_args.objective.init_args.sample_steps", "2",
          "--trainer.callbacks.init_args.dirpath", str(tmp_path / "ckpt"), *small])
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    assert ckpt.exists() and not (tmp_path / "run" / "predict").exists()  # fit writes no predictions
    predict = ["predict", "--config", str(CONFIG_DIR / "demo.yaml"), "--ckpt_path", str(ckpt), *small]
    main(predict)
    out = tmp_path / "run" / "predict"
    recs = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(recs) >= 1 and len({r["id"] for r in recs}) == len(recs)
    assert all(r["sampler"]["steps"] == 2 and r["prompt"]["modality"] == "CT" for r in recs)
    assert len({r["seed"] for r in recs}) == len(recs)  # one seed per pair, not 0..B-1 per batch
    for layout in ("nnunet", "msd"):
        idx = read_dataset(next((out / layout).iterdir()))
        assert len(idx.cases) == len(recs)
        assert np.asarray(nib.load(idx.cases[0].label).dataobj).shape == (16, 16, 1)
    png = out / recs[0]["files"]["preview"]["png"]
    assert Image.open(png).size == (32, 16)
    assert recs[0]["sha256"]["msd"]["label"] and "Synthetic data" in (out / "DATASET_CARD.md").read_text()
    # an existing output folder is refused and left as it was; no temporary folder stays behind
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(Exception, match="already exists"):
        main(predict)
    assert sorted(p.name for p in out.rglob("*")) == before
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".predict")] == []


def test_masks_map_the_shared_labels_and_record_the_absent_ones(tiny_generator, tmp_path):
    """A real dataset without one of the model's labels used to be refused ("label ... not in the dictionary")."""
    from apps.medseg.phantom import write_phantom_msd

    masks = write_phantom_msd(tmp_path / "masks", n_cases=1, seed=3, shape=(16, 16, 3))
    meta = json.loads((masks / "dataset.json").read_text())
    meta["labels"] = {k: ("stomach_wall" if v == "spleen" else v) for k, v in meta["labels"].items()}
    (masks / "dataset.json").write_text(json.dumps(meta))
    res = generate(tiny_generator, [], tmp_path / "m2i", n=1, steps=2, masks=masks, progress=False)
    recs = [json.loads(line) for line in (tmp_path / "m2i" / "manifest.jsonl").read_text().splitlines()]
    assert res["mask_labels_absent"] == ["spleen"] and recs and all(r["mask_labels_absent"] == ["spleen"] for r in recs)
    assert all("spleen" not in r["realised_labels"] for r in recs)  # the source's "spleen" id is background now
    meta["labels"] = {"0": "background", "1": "heart"}
    (masks / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(GenerateError, match="none of the model's labels"):
        generate(tiny_generator, [], tmp_path / "none", n=1, steps=2, masks=masks, progress=False)
    assert not (tmp_path / "none").exists()


def test_masks_resume_with_another_spelling_of_the_folder(tiny_generator, tmp_path, monkeypatch):
    from apps.medseg.phantom import write_phantom_msd

    write_phantom_msd(tmp_path / "masks", n_cases=1, seed=3, shape=(16, 16, 3))
    monkeypatch.chdir(tmp_path)
    generate(tiny_generator, [], tmp_path / "g", n=1, steps=2, masks="masks", progress=False, max_pairs=1)
    res = generate(tiny_generator, [], tmp_path / "g", n=1, steps=2, masks=f"{tmp_path}/masks/", progress=False)
    assert res["new_pairs"] >= 1 and res["pairs"] == res["new_pairs"] + 1


@pytest.mark.parametrize("options, problem", [
    (["--cfg", "abc"], "--cfg: expected 1 or 2"), (["--steps", "0"], "--steps must be >= 1"),
    (["--spacing", "0,1,1"], "--spacing must be positive"), (["--layouts", "bogus"], "--layouts: unknown ['bogus']"),
    (["--n", "0"], "--n must be >= 1"), (["--n", "-2"], "--n must be >= 1"), (["--batch", "0"], "--batch must be"),
    # were accepted: nnunet/evil/ (outside the Dataset folder), Dataset-01_..., Dataset1000_...
    (["--name", "../evil"], "--name must be letters"), (["--name", ""], "--name must be letters"),
    (["--dataset-id", "-1"], "--dataset-id must be 1..999"), (["--dataset-id", "1000"], "--dataset-id must be")])
def test_cli_bad_options_exit_2_and_write_nothing(tiny_generator, tmp_path, capsys, options, problem):
    from apps.medseg.generate import main

    out = tmp_path / "g"
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(tiny_generator), "--prompt", "CT liver", "--out", str(out), "--no-progress", *options])
    assert exit_info.value.code == 2 and not out.exists() and problem in capsys.readouterr().err


def test_cli_bad_out_and_mask_files_name_them(tiny_generator, tmp_path, capsys):
    from apps.medseg.generate import main

    a_file = tmp_path / "file"
    a_file.write_text("x")
    trunc = tmp_path / "trunc.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 2), np.uint8), np.eye(4)), trunc)
    trunc.write_bytes(trunc.read_bytes()[:-40])
    runs = [(["--prompt", "CT liver", "--out", str(a_file)], f"{a_file}: --out exists and is not a folder"),
            (["--masks", str(tmp_path / "nope.nii.gz"), "--out", str(tmp_path / "g")], "nope.nii.gz: --masks file"),
            (["--masks", str(trunc), "--out", str(tmp_path / "g")], f"{trunc}: unreadable label NIfTI")]
    for options, problem in runs:
        with pytest.raises(SystemExit) as exit_info:
            main(["--ckpt", str(tiny_generator), "--no-progress", "--steps", "1", *options])
        assert exit_info.value.code == 2 and problem in capsys.readouterr().err
    assert not (tmp_path / "g").exists() and a_file.read_text() == "x"


def test_out_under_a_file_is_one_line_exit_2_before_any_work(tiny_generator, tmp_path, capsys):
    """`--out a_file/sub[/deeper]` used to end in a raw NotADirectoryError / FileExistsError traceback
    from mkdir (Path.exists() is False there, so the existing check let it through)."""
    from apps.medseg.demo import run as demo_run
    from apps.medseg.evaluate import main as evaluate_main
    from apps.medseg.generate import main

    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out in (a_file / "sub", a_file / "sub" / "deeper"):
        with pytest.raises(SystemExit) as exit_info:
            main(["--ckpt", str(tiny_generator), "--prompt", "CT liver", "--out", str(out), "--no-progress"])
        assert exit_info.value.code == 2
        assert f"{out}: --out cannot be created: {a_file} is a file, not a folder" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exit_info:  # checked before the datasets are read
            evaluate_main(["--real", str(tmp_path / "r"), "--synthetic", str(tmp_path / "s"), "--out", str(out)])
        assert exit_info.value.code == 2 and f"{a_file} is a file, not a folder" in capsys.readouterr().err
        with pytest.raises(SystemExit) as exit_info:  # the demo too
            demo_run(out)
        assert exit_info.value.code == 2 and f"{a_file} is a file, not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["file", "gen.pt"]


def test_resume_removes_a_killed_runs_temporary_files(tiny_generator, tmp_path):
    """A run killed inside atomic_write leaves `.<name>.<random>.tmp`; the resumed run used to keep it
    in imagesTr/labelsTr next to the finished dataset."""
    out = tmp_path / "gen"
    generate(tiny_generator, PROMPTS, out, n=1, steps=2, progress=False, max_pairs=1)
    stale = next((out / "nnunet").iterdir()) / "imagesTr" / ".p01_s000001_0000.nii.gz.k1ll3d.tmp"
    stale.write_bytes(b"half a file")
    res = generate(tiny_generator, PROMPTS, out, n=1, steps=2, progress=False)
    assert res["pairs"] == 2 and not stale.exists() and not list(out.rglob(".*"))


def test_predict_and_fit_refuse_unusable_output_folders_before_writing(tmp_path, monkeypatch, capsys):
    """A log/checkpoint/predict folder under a file raised a raw NotADirectoryError from Lightning's logger
    (predict, fit) or failed at the first checkpoint save; an existing predict folder was a traceback
    (exit 1) that left a new lightning_logs/version_N behind. Now: one line, exit 2, nothing written."""
    import sys

    from apps.medseg.cli import CONFIG_DIR, main

    a_file = tmp_path / "file"
    a_file.write_text("x")
    small = ["--config", str(CONFIG_DIR / "demo.yaml"), "--model.init_args.net.init_args.image_size", "16",
             "--model.init_args.net.init_args.dim", "32", "--model.init_args.net.init_args.depth", "1",
             "--data.init_args.size", "16", "--data.init_args.phantom_cases", "2",
             "--data.init_args.root_cache", str(tmp_path / "phantom"), "--trainer.max_steps", "1"]
    (tmp_path / "run" / "predict").mkdir(parents=True)
    runs = [(["predict", "--trainer.default_root_dir", str(a_file / "run")],
             f"{a_file / 'run'}: --trainer.default_root_dir cannot be created: {a_file} is a file"),
            (["predict", "--trainer.default_root_dir", str(tmp_path / "run")],
             f"{tmp_path / 'run' / 'predict'}: predict output folder already exists"),
            (["fit", "--trainer.default_root_dir", str(tmp_path / "fit"),
              "--trainer.callbacks.init_args.dirpath", str(a_file / "ckpt")],
             f"{a_file / 'ckpt'}: checkpoint dirpath cannot be created: {a_file} is a file")]
    for verb, problem in runs:
        monkeypatch.setattr(sys, "argv", ["dualsci-medseg", verb[0], *small, *verb[1:]])
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"error: {problem}" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["predict"]  # no lightning_logs/version_N
    assert not (tmp_path / "fit").exists() and a_file.read_text() == "x"
