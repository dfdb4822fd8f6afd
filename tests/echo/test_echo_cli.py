"""`dualsci-echo fit` through LightningCLI on phantom files, then `dualsci-echo segment` end to end."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from apps.echo import camus
from apps.echo.cli import main, segment_main


@pytest.fixture(scope="module")
def ckpt(camus2023, tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fit")
    main(["fit", "--data.init_args.root", str(camus2023), "--data.init_args.image_size", "32",
          "--data.init_args.batch_size", "4", "--model.init_args.net.init_args.widths", "[8, 16]",
          "--model.init_args.net.init_args.stem", "8", "--model.init_args.net.init_args.emb_dim", "32",
          "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "1",
          "--trainer.default_root_dir", str(root)])
    found = sorted(root.glob("lightning_logs/version_*/checkpoints/*.ckpt"))
    assert found, "fit wrote no checkpoint"
    return found[-1]


def test_checkpoint_loads_weights_only(ckpt):
    state = torch.load(ckpt, weights_only=True)
    assert "dualsci_config" in state and any(k.startswith("net.gauss.") for k in state["state_dict"])


def test_segment_end_to_end(ckpt, camus2023, echonet_root, tmp_path):
    pid = camus.official_split(camus2023)["testing"][0]
    folder = camus2023 / "database_nifti" / pid
    files = [folder / f"{pid}_{v}_{p}.nii.gz" for v in ("2CH", "4CH") for p in ("ED", "ES")]
    files += [folder / f"{pid}_2CH_half_sequence.nii.gz", next((echonet_root / "Videos").glob("*.avi"))]
    from PIL import Image

    Image.fromarray(camus.read_image(files[0])[0]).save(tmp_path / "frame.png")
    files.append(tmp_path / "frame.png")
    out = tmp_path / "seg"
    rc = segment_main([*map(str, files), "--ckpt", str(ckpt), "--out", str(out), "--steps", "2", "--members", "2",
                      "--weights", "0.5", "1", "1", "--bootstrap", "200"])
    assert rc == 0 and "0.5 1 1" in (out / "report.html").read_text()
    assert (out / "report.html").exists() and (out / "cases.csv").exists()
    rows = list(csv.DictReader(open(out / "cases.csv")))
    data = json.load(open(out / "cases.json"))
    video = [c for c in data["cases"] if c["file"].endswith(".avi")][0]
    # the video: beats from the screened area curve, one EF per beat, ED/ES of every beat segmented
    assert video["beats"] and video["beat_detection"]["distance_frames"] == 20  # the phantom videos are 50 fps
    assert len(video["frame_indices"]) == 2 * len(video["beats"]) and len(video["ef_members"]) <= 2
    assert 0 <= video["temporal_consistency"]["frame_dice_mean"] <= 1
    name = next((echonet_root / "Videos").glob("*.avi")).stem
    assert video["mp4"] == f"{name}/sequence.mp4" and (out / name / "sequence.mp4").exists()
    assert len(rows) == 4 + 2 + len(video["frame_indices"]) + 1 and all(r["dice"] for r in rows[:6]) and not rows[-1]["dice"]
    assert rows[-1]["area_px"] and not rows[-1]["area_mm2"]  # a PNG has no spacing: pixels, flagged
    assert data["biplane"] and data["biplane"][0]["patient"] == pid and len(data["biplane"][0]["ef_members"]) <= 2
    seq = [c for c in data["cases"] if c["name"].endswith("half_sequence")][0]
    assert seq["roles"] == ["ED", "ES"] and len(seq["screen_areas"]) == seq["frames"]
    assert seq["beat_detection"]["method"] in ("find_peaks", "global extremes")  # untrained model: either
    # NIfTI outputs keep the native grid and spacing
    mask, spacing = camus.read_image(out / f"{pid}_2CH_ED" / "mask.nii.gz")
    image, spacing_in = camus.read_image(files[0])
    assert mask.shape == image.shape and spacing == pytest.approx(spacing_in, rel=1e-5)
    prob, _ = camus.read_image(out / f"{pid}_2CH_ED" / "prob.nii.gz")
    assert prob.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1
    assert (out / next((echonet_root / "Videos").glob("*.avi")).stem / "sequence.gif").exists()
    # clinical statistics: agreement with ICC, patient bootstrap, strata, volume errors; in JSON, CSV and the page
    agg = json.load(open(out / "aggregate.json"))
    assert agg["agreement_ef"]["n"] == 1 and "icc_2_1" in agg["agreement_ef"]
    assert {"dice_mean", "dice_pooled", "ef_mae"} <= set(agg["bootstrap"])
    strata = {r["stratum"]: r for r in agg["strata"]}
    assert strata["phase=ED"]["n_images"] == 3 and strata["phase=ES"]["n_images"] == 3  # 2 views + the half sequence
    quality = camus.read_info(folder / "Info_2CH.cfg")["ImageQuality"]
    assert strata[f"quality={quality}"]["n_images"] >= 2
    assert rows[0]["image_quality"] == quality and rows[0]["patient"] == pid
    assert "edv" in agg["volumes"] and data["biplane"][0]["edv_reference_source"] == "reference masks"
    assert any(r["section"] == "bootstrap" for r in csv.DictReader(open(out / "aggregate.csv")))
    assert "ICC(2,1)" in (out / "report.html").read_text() and (out / "patients.csv").exists()


def test_segment_bad_input_writes_nothing(ckpt, camus2019, tmp_path, capsys):
    raw = tmp_path / "p_2CH_ED.raw"
    mhd = camus2019 / "training" / "patient0001" / "patient0001_2CH_ED.mhd"
    (tmp_path / "p_2CH_ED.mhd").write_text(mhd.read_text().replace("patient0001_2CH_ED.raw", raw.name))
    raw.write_bytes(b"\0" * 10)
    out = tmp_path / "seg"
    rc = segment_main([str(tmp_path / "p_2CH_ED.mhd"), "--ckpt", str(ckpt), "--out", str(out)])
    assert rc == 2 and not out.exists()
    assert "p_2CH_ED.raw: has 10 bytes" in capsys.readouterr().err
    rc = segment_main([str(tmp_path / "missing.nii.gz"), "--ckpt", str(ckpt), "--out", str(out)])
    assert rc == 2 and not out.exists()
    bad_video = tmp_path / "clip.avi"
    bad_video.write_bytes(b"")
    assert segment_main([str(bad_video), "--ckpt", str(ckpt), "--out", str(out)]) == 2 and not out.exists()
    # a CAMUS image whose Info cfg is malformed (read for ImageQuality / FrameRate) stops the run too
    folder = tmp_path / "patient0009"
    folder.mkdir()
    src = camus2019 / "training" / "patient0001"
    for ext in (".mhd", ".raw"):
        (folder / f"patient0009_2CH_ED{ext}").write_bytes((src / f"patient0001_2CH_ED{ext}").read_bytes())
    (folder / "patient0009_2CH_ED.mhd").write_text((src / "patient0001_2CH_ED.mhd").read_text()
                                                   .replace("patient0001_2CH_ED.raw", "patient0009_2CH_ED.raw"))
    (folder / "Info_2CH.cfg").write_text("ED: 1\nES: 12\nImageQuality: Splendid\n")
    capsys.readouterr()
    assert segment_main([str(folder / "patient0009_2CH_ED.mhd"), "--ckpt", str(ckpt), "--out", str(out)]) == 2
    assert not out.exists() and "Info_2CH.cfg" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["demo", "camus", "echonet"])
def test_configs_parse(name, capsys):
    from apps.echo.cli import CONFIG_DIR

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIG_DIR / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "apps.echo.model.EchoDNDNet" in capsys.readouterr().out


def test_segment_bad_checkpoint_names_it(ckpt, tmp_path, capsys):
    """A truncated checkpoint, or another app's (medseg's MedSegNet has no ``encode``), is an input error."""
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    truncated = tmp_path / "trunc.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:5000])
    state = torch.load(ckpt, weights_only=True)
    state["dualsci_config"] = state["dualsci_config"].replace("apps.echo.model.EchoDNDNet", "apps.medseg.model.MedSegNet")
    other = tmp_path / "other.ckpt"
    torch.save(state, other)
    out = tmp_path / "seg"
    for bad, problem in ((truncated, "cannot read checkpoint"), (other, "not a `dualsci-echo fit` checkpoint")):
        capsys.readouterr()
        assert segment_main([str(image), "--ckpt", str(bad), "--out", str(out)]) == 2 and not out.exists()
        err = capsys.readouterr().err
        assert f"{bad}: " in err and problem in err


def test_segment_refuses_two_inputs_with_one_case_name(ckpt, tmp_path, capsys):
    from PIL import Image

    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / sub / "x.png")
    out = tmp_path / "seg"
    rc = segment_main([str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), "--ckpt", str(ckpt),
                       "--out", str(out)])
    assert rc == 2 and not out.exists() and "same case name 'x'" in capsys.readouterr().err


def test_fit_on_bad_data_exits_2_and_leaves_no_version_folder(tmp_path, monkeypatch, capsys):
    """As a console script (args None) a data error is one line and exit 2; the data is read in
    prepare_data, before Lightning's logger creates lightning_logs/version_0."""
    from apps.echo.writers import write_camus_2023

    root = write_camus_2023(tmp_path / "CAMUS_public", n_patients=2, seed=3, shape=(48, 40))
    gt = next(root.glob("database_nifti/*/*_2CH_ED_gt.nii.gz"))
    gt.unlink()
    logs = tmp_path / "logs"
    monkeypatch.setattr("sys.argv", ["dualsci-echo", "fit", "--data.init_args.source", "camus",
                                     "--data.init_args.root", str(root), "--trainer.max_steps", "1",
                                     "--trainer.default_root_dir", str(logs)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {gt}: ground truth (_gt) missing" in err and "Traceback" not in err
    assert not logs.exists()


def test_empty_split_is_a_data_error(tmp_path):
    """An empty training split is the source's own error (printed as one line by the CLI), naming the root."""
    from apps.echo.camus import CamusError
    from apps.echo.data import EchoDataModule
    from apps.echo.writers import write_camus_2023

    root = write_camus_2023(tmp_path / "CAMUS_public", n_patients=2, seed=3, shape=(48, 40))
    (root / "database_split").mkdir(exist_ok=True)
    for group in ("training", "validation", "testing"):
        (root / "database_split" / f"subgroup_{group}.txt").write_text("")
    with pytest.raises(CamusError, match=f"{root}: the training split is empty"):
        EchoDataModule(source="camus", root=str(root)).setup("fit")


def test_unusable_out_folders_are_one_line_exit_2_before_any_work(ckpt, tmp_path, monkeypatch, capsys):
    """`--out a_file/sub/deeper` raised a raw NotADirectoryError after the whole segmentation (segment),
    at once (synth), or from Lightning's logger / the first checkpoint save (fit); `--out a_file
    --overwrite` raised one when replacing the "folder"; `--overwrite` deleted any folder, e.g. `--out .`."""
    from PIL import Image

    from apps.echo.cli import synth_main
    from apps.echo.demo import main as demo_main

    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    deep = a_file / "sub" / "deeper"
    runs = [([deep], f"{deep}: --out cannot be created: {a_file} is a file, not a folder"),
            ([a_file, "--overwrite"], f"{a_file}: --out exists and is not a folder"),
            ([keep, "--overwrite"], f"{keep}: --overwrite replaces only an earlier segment output")]
    for (out, *rest), problem in runs:
        assert segment_main([str(image), "--ckpt", str(ckpt), "--out", str(out), *rest]) == 2
        assert problem in capsys.readouterr().err
        assert synth_main(["--out", str(deep), "--patients", "1"]) == 2
        assert f"{a_file} is a file, not a folder" in capsys.readouterr().err
        assert demo_main(["--out", str(deep)]) == 2
        assert f"{a_file} is a file, not a folder" in capsys.readouterr().err
    for option in ("--trainer.default_root_dir", "--data.init_args.root"):
        monkeypatch.setattr("sys.argv", ["dualsci-echo", "fit", option, str(deep), "--trainer.max_steps", "1"])
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"error: {deep}: {option} cannot be created" in err
        assert "Traceback" not in err
    assert a_file.read_text() == "x" and [p.name for p in keep.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "keep", "x.png"]


def test_segment_refuses_nan_pixels_and_gives_no_ef_for_a_flat_sequence(ckpt, tmp_path, capsys):
    """NaN/inf pixels were min-max scaled into a black image and segmented; a sequence whose frames do
    not change gave ED = ES = frame 0 and reported EF 0 % with the interval [0, 0]."""
    import nibabel as nib

    img = np.random.default_rng(0).integers(0, 60000, (40, 48)).astype(np.float32)  # (W, H), 16-bit range
    img[:3] = np.nan
    nib.save(nib.Nifti1Image(img, np.diag([0.3, 0.3, 1, 1])), tmp_path / "nan.nii.gz")
    out = tmp_path / "seg"
    assert segment_main([str(tmp_path / "nan.nii.gz"), "--ckpt", str(ckpt), "--out", str(out)]) == 2
    assert not out.exists() and "nan.nii.gz: 144 of 1920 pixel values are NaN or infinite" in capsys.readouterr().err
    img[:3] = 0
    nib.save(nib.Nifti1Image(np.stack([img, img, img], -1), np.diag([0.3, 0.3, 1, 1])), tmp_path / "flat.nii.gz")
    assert segment_main([str(tmp_path / "flat.nii.gz"), "--ckpt", str(ckpt), "--out", str(out), "--steps", "1",
                         "--members", "2", "--bootstrap", "10"]) == 0
    case = json.load(open(out / "cases.json"))["cases"][0]
    assert case["beat_detection"]["method"] == "flat area curve"
    assert case["ef_single_plane"] is None and case["beats"][0]["ef"] is None and case["ef_members"] == []


def test_biplane_uses_each_images_own_spacing(ckpt, camus2023, tmp_path):
    """The 2CH/4CH ES volumes were computed with the ED image's pixel spacing: an ES file stored at half
    the resolution (twice the spacing) gave the reference-mask EF of a heart with an eighth of its ESV."""
    import nibabel as nib

    pid = camus.official_split(camus2023)["testing"][0]
    src = camus2023 / "database_nifti" / pid
    other = tmp_path / "patient9999"
    other.mkdir()
    files = []
    for view in ("2CH", "4CH"):
        for phase in ("ED", "ES"):
            for suffix in ("", "_gt"):
                img = nib.load(src / f"{pid}_{view}_{phase}{suffix}.nii.gz")
                data, zooms = np.asarray(img.dataobj), img.header.get_zooms()
                if phase == "ES":  # half the pixels, twice the spacing: the same heart in mm
                    data, zooms = data[::2, ::2], (zooms[0] * 2, zooms[1] * 2)
                nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1, 1])), other / f"patient9999_{view}_{phase}{suffix}.nii.gz")
            files += [src / f"{pid}_{view}_{phase}.nii.gz", other / f"patient9999_{view}_{phase}.nii.gz"]
    out = tmp_path / "seg"
    assert segment_main([*map(str, files), "--ckpt", str(ckpt), "--out", str(out), "--steps", "1", "--members", "1",
                         "--bootstrap", "10"]) == 0
    ef = {p["patient"]: p["ef_from_gt_masks"] for p in json.load(open(out / "cases.json"))["biplane"]}
    assert abs(ef["patient9999"] - ef[pid]) < 6, ef  # coarser ES masks (48 x 40 px) cost a few points; was 38


@pytest.mark.parametrize("option", [["--patients", "0"], ["--patients", "-1"], ["--height", "0"], ["--width", "4"]])
def test_synth_bad_sizes_are_one_line_exit_2(tmp_path, capsys, option):
    """--patients 0 wrote an empty dataset (fit then failed on it), --height 0 was a ZeroDivisionError."""
    from apps.echo.cli import synth_main

    assert synth_main(["--out", str(tmp_path / "ph"), "--layout", "camus2019", *option]) == 2
    assert "--patients must be >= 1 and --height/--width >= 16" in capsys.readouterr().err
    assert not (tmp_path / "ph").exists()


@pytest.mark.parametrize("weights", [["nan", "1", "1"], ["1", "inf", "1"]])
def test_segment_refuses_non_finite_fusion_weights(ckpt, tmp_path, capsys, weights):
    """--weights nan 1 1 passed the check (nan < 0 is False) and wrote all-NaN probability maps."""
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "x.png")
    out = tmp_path / "seg"
    assert segment_main([str(tmp_path / "x.png"), "--ckpt", str(ckpt), "--out", str(out), "--weights", *weights]) == 2
    assert "weights must be 3 finite non-negative numbers" in capsys.readouterr().err and not out.exists()
