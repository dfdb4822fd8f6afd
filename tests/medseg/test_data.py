from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from apps.medseg.data import DataError, PatchDataset3D, SliceDataset, fit_square, load_case, require_nonempty
from apps.medseg.labels import LabelDict, LabelError
from apps.medseg.layouts import DatasetWriter, LayoutError, read_dataset
from apps.medseg.phantom import PHANTOM_LABELS, make_volume, write_phantom_msd
from apps.medseg.prompts import PromptVocab

from .conftest import MR, MR_SEG, LABELS_JSON, ORGANS


def test_phantom_is_deterministic_and_labelled():
    a = make_volume(np.random.default_rng([3, 1]), "MR", (32, 32, 8))
    b = make_volume(np.random.default_rng([3, 1]), "MR", (32, 32, 8))
    c = make_volume(np.random.default_rng([3, 2]), "MR", (32, 32, 8))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    for i in range(1, 6):  # every organ appears
        assert (a[1] == i).sum() > 0
    # CT contrast: liver brighter than stomach on average
    img, lab = make_volume(np.random.default_rng(0), "CT", (32, 32, 8))
    assert img[lab == 1].mean() > img[lab == 5].mean() + 50


def test_phantom_msd_roundtrip_through_monai(phantom_dir):
    idx = read_dataset(phantom_dir)
    assert idx.layout == "msd" and len(idx.cases) == 3 and idx.modality == "CT"
    lab, lut = idx.labels.select(list(PHANTOM_LABELS.foreground))
    vol = load_case(idx.cases[0].image, idx.cases[0].label, idx.labels, lut, lab, "CT")
    assert vol.image.shape == (32, 32, 8) and -1 <= vol.image.min() and vol.image.max() <= 1
    raw = np.asarray(nib.load(idx.cases[0].label).dataobj)
    assert nib.load(idx.cases[0].label).get_data_dtype() == np.uint8
    assert np.array_equal(vol.label, raw)  # identity selection keeps ids
    with pytest.raises(FileExistsError):
        write_phantom_msd(phantom_dir, n_cases=1)


def test_real_ct_reading_selection_and_slices(totalseg_ct):
    img, seg, src = totalseg_ct
    lab, lut = src.select(ORGANS)
    vol = load_case(img, seg, src, lut, lab, "CT")
    counts = lab.present(vol.label)
    assert set(counts) == set(ORGANS) and counts["liver"] > 30000
    vocab = PromptVocab(labels=lab.foreground)
    ds = SliceDataset([vol], vocab, size=64, z_range=(0.0, 0.5))
    item = ds[0]
    assert item["image"].shape == (1, 64, 64) and item["mask"].dtype == torch.long
    assert set(item["mask"].unique().tolist()) <= set(range(6))
    ds25 = SliceDataset([vol], vocab, size=32, context=1)
    assert ds25[0]["image"].shape == (3, 32, 32)
    assert max(it.z for it in ds.items) < 15  # z-range split respected
    p3 = PatchDataset3D([vol], vocab, patch=(32, 32, 16), samples=2)
    assert p3[0]["image"].shape == (1, 32, 32, 16) and p3[1]["mask"].shape == (32, 32, 16)
    # resampling with Spacingd keeps labels integer and in the dictionary
    vol4 = load_case(img, seg, src, lut, lab, "CT", spacing=(6.0, 6.0, 6.0))
    assert vol4.image.shape[0] in (61, 62) and vol4.spacing == pytest.approx((6.0, 6.0, 6.0))
    lab.check_map(vol4.label)


def test_real_mr_is_reoriented_to_ras(shared_file):
    src = LabelDict.from_json(shared_file(LABELS_JSON), key="total_mr")
    lab, lut = src.select(["liver", "spleen"])
    vol = load_case(shared_file(MR), shared_file(MR_SEG), src, lut, lab, "MR")
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    raw = nib.load(shared_file(MR))
    assert nib.aff2axcodes(raw.affine) == ("L", "P", "S")
    assert np.isclose(vol.image.max(), 1.0) and lab.present(vol.label)["liver"] > 1000


def test_bad_pairs_are_refused(tmp_path):
    aff = np.eye(4)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), aff), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 5), np.uint8), aff), tmp_path / "lab_shape.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.diag([2, 1, 1, 1.0])), tmp_path / "lab_aff.nii.gz")
    lab8 = np.zeros((8, 8, 4), np.uint8)
    lab8[2, 2, 2] = 9
    nib.save(nib.Nifti1Image(lab8, aff), tmp_path / "lab_bad.nii.gz")
    src = LabelDict.from_mapping({"1": "liver"})
    lab, lut = src.select(["liver"])
    with pytest.raises(DataError, match="lab_shape.nii.gz: shape"):
        load_case(tmp_path / "img.nii.gz", tmp_path / "lab_shape.nii.gz", src, lut, lab)
    with pytest.raises(DataError, match=r"lab_aff.nii.gz: affine \[\[2.0, .*\]\] differs from image .*img.nii.gz affine \[\[1.0"):
        load_case(tmp_path / "img.nii.gz", tmp_path / "lab_aff.nii.gz", src, lut, lab)
    with pytest.raises(LabelError, match="lab_bad.nii.gz: label values \\[9\\]"):
        load_case(tmp_path / "img.nii.gz", tmp_path / "lab_bad.nii.gz", src, lut, lab)
    with pytest.raises(DataError, match="empty mask"):
        require_nonempty(np.zeros((4, 4)), "m.nii.gz")


def test_nearest_resize_never_invents_labels():
    m = torch.zeros(1, 30, 20, dtype=torch.long)
    m[0, :, :7], m[0, :, 7:14] = 1, 5  # classes 1 and 5 side by side: no 2,3,4 may appear
    out = fit_square(m, 64, "nearest")
    assert set(out.unique().tolist()) == {0, 1, 5}


def test_writer_both_layouts_readable(tmp_path):
    lab = PHANTOM_LABELS
    w = DatasetWriter(tmp_path / "out", lab, "CT", name="T", dataset_id=7)
    img, seg = make_volume(np.random.default_rng(0), "CT", (16, 16, 4))
    w.add_case("c0", img, seg, np.diag([2.0, 2.0, 3.0, 1.0]))
    w.finalize(["c0"])
    for layout in ("msd", "nnunet"):
        idx = read_dataset(w.roots[layout])
        assert idx.layout == layout and [c.case_id for c in idx.cases] == ["c0"]
        assert idx.labels.as_dict().names == lab.names
        nii = nib.load(idx.cases[0].label)
        assert nii.header.get_zooms() == (2.0, 2.0, 3.0) and nii.get_data_dtype() == np.uint8
    meta = json.loads((w.roots["nnunet"] / "dataset.json").read_text())
    assert meta["labels"]["liver"] == 1 and meta["numTraining"] == 1 and meta["channel_names"] == {"0": "CT"}
    with pytest.raises(LabelError):
        w.add_case("c1", img, seg + 7, np.eye(4))
    with pytest.raises(LayoutError, match="allowed"):
        DatasetWriter(tmp_path / "x", lab, "CT", layouts=("coco",))


def test_empty_slices_kept_only_when_asked():
    from apps.medseg.data import Volume

    lab = np.zeros((8, 8, 2), np.int64)
    lab[2:5, 2:5, 0] = 1
    vol = Volume(np.zeros((8, 8, 2), np.float32), lab, np.eye(4), "CT", "c", labels=LabelDict(("background", "liver")))
    vocab = PromptVocab(labels=("liver",))
    assert len(SliceDataset([vol], vocab, size=8)) == 1
    both = SliceDataset([vol], vocab, size=8, min_foreground=0)
    assert len(both) == 2 and both.items[1].prompt.labels == ()
    with pytest.raises(DataError, match="no slice with labelled foreground"):
        SliceDataset([Volume(vol.image, lab * 0, vol.affine, "CT", "c", labels=vol.labels)], vocab, size=8)


def test_unreadable_2d_and_empty_volumes_name_the_file(tmp_path):
    """Truncated files (MONAI's RuntimeError), 2-D NIfTIs (IndexError in SliceDataset) and masks without
    a labelled slice used to fail without naming the file."""
    src = LabelDict.from_mapping({"1": "liver"})
    lab, lut = src.select(["liver"])
    label = np.zeros((32, 32, 4), np.uint8)
    label[2:5, 2:5, 1] = 1
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 4), np.float32), np.eye(4)), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), tmp_path / "lab.nii.gz")
    noise = np.random.default_rng(0).random((32, 32, 4)).astype(np.float32)  # incompressible: header stays whole
    nib.save(nib.Nifti1Image(noise, np.eye(4)), tmp_path / "noise.nii.gz")
    blob = (tmp_path / "noise.nii.gz").read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(DataError, match=r"trunc.nii.gz: unreadable NIfTI \(EOFError"):
        load_case(tmp_path / "trunc.nii.gz", tmp_path / "lab.nii.gz", src, lut, lab)
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), tmp_path / "img2d.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.uint8), np.eye(4)), tmp_path / "lab2d.nii.gz")
    with pytest.raises(DataError, match=r"img2d.nii.gz: expected a 3-D volume .* got shape \(8, 8\)"):
        load_case(tmp_path / "img2d.nii.gz", tmp_path / "lab2d.nii.gz", src, lut, lab)
    vol = load_case(tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz", src, lut, lab)
    with pytest.raises(DataError, match=r"lab.nii.gz: empty mask: no slice with labelled foreground"):
        SliceDataset([vol], PromptVocab(labels=("liver",)), size=8, z_range=(0.5, 1.0))


def test_fit_console_script_on_bad_data_exits_2_without_version_folder(tmp_path, monkeypatch, capsys):
    """The datamodule reads the data in prepare_data, before Lightning's logger creates version_0."""
    from apps.medseg.cli import CONFIG_DIR, main

    root = write_phantom_msd(tmp_path / "real", n_cases=1, seed=0, shape=(16, 16, 4))
    label = next((root / "labelsTr").glob("*.nii.gz"))
    img = nib.load(label)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), label)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["dualsci-medseg", "fit", "--config", str(CONFIG_DIR / "demo.yaml"),
                                     "--data.init_args.root", str(root), "--trainer.max_steps", "1",
                                     "--trainer.default_root_dir", str(tmp_path / "fit")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"error: {label}: empty mask" in err and "Traceback" not in err
    assert not (tmp_path / "fit").exists() and not (tmp_path / "outputs").exists()
