"""Phantom writers and the CAMUS / EchoNet readers, including every bad-input error of issue 4."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from apps.echo import camus, echonet
from apps.echo.mhd import MetaImageError, read_mhd, write_mhd
from apps.echo.phantom import Grid, make_patient, labels, half_sequence
from apps.echo.splits import check_disjoint, official_split_lists


def test_mhd_round_trip(tmp_path):
    arr = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3)
    write_mhd(tmp_path / "a.mhd", arr, (1.0, 0.3, 0.15))
    back, spacing = read_mhd(tmp_path / "a.mhd")
    assert np.array_equal(back, arr) and spacing == pytest.approx((1.0, 0.3, 0.15))
    assert "ElementSpacing = 0.15 0.3 1" in (tmp_path / "a.mhd").read_text()  # header order is x y z


def test_mhd_wrong_byte_count_names_file(tmp_path):
    write_mhd(tmp_path / "a.mhd", np.zeros((4, 4), np.uint8), (1.0, 1.0))
    (tmp_path / "a.raw").write_bytes(b"\0" * 15)
    with pytest.raises(MetaImageError, match=r"a\.raw.*15 bytes.*needs 16"):
        read_mhd(tmp_path / "a.mhd")


def test_phantom_is_deterministic_and_has_exact_ef():
    a, b = make_patient(3, 7), make_patient(3, 7)
    assert a == b and make_patient(4, 7) != a
    assert 100 * (a.edv - a.esv) / a.edv == pytest.approx(a.ef, abs=1e-9)
    g = Grid.for_depth((96, 80))
    im1, lab1 = half_sequence(a, "4CH", g)
    im2, lab2 = half_sequence(b, "4CH", g)
    assert np.array_equal(im1, im2) and np.array_equal(lab1, lab2)
    assert set(np.unique(lab1[0]).tolist()) == {0, 1, 2, 3}
    # LV area shrinks from ED to ES; the rasterised area tracks the analytic half-ellipse area.
    area = [(l == 1).sum() * g.spacing[0] * g.spacing[1] for l in lab1]
    assert area[-1] < area[0]
    length, r2, r4 = a.shape_at(0.0)
    assert area[0] == pytest.approx(np.pi * length * r4 / 2, rel=0.06)


@pytest.mark.parametrize("release", ["2019", "2023"])
def test_camus_reader_both_releases(release, camus2019, camus2023):
    root = camus2019 if release == "2019" else camus2023
    assert camus.detect_release(root) == release
    samples = camus.scan(root)
    labelled = [s for s in samples if s.gt is not None]
    assert {s.view for s in samples} == {"2CH", "4CH"} and {s.phase for s in samples} == {"ED", "ES"}
    s = labelled[0]
    image, label, spacing = camus.load_sample(s)
    assert image.shape == (96, 80) and label.shape == (96, 80)
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 3}
    g = Grid.for_depth((96, 80))
    assert spacing == pytest.approx(g.spacing, rel=1e-5)
    # apex up: the LV (label 1) starts near the top and the atrium (3) lies below it
    rows_lv = np.nonzero(label == 1)[0]
    rows_la = np.nonzero(label == 3)[0]
    assert rows_lv.mean() < rows_la.mean()
    spec = make_patient(int(s.patient[-4:]), 1)
    assert np.array_equal(label, labels(spec, s.view, 0.0 if s.phase == "ED" else 1.0, g))
    assert s.info["ImageQuality"] == spec.quality and s.info["ED"] == 0 and s.info["ES"] == spec.n_half - 1
    assert s.info["EF"] == pytest.approx(spec.ef, abs=0.06)


def test_camus_2019_testing_patients_have_no_gt(camus2019):
    unl = [s for s in camus.scan(camus2019) if s.gt is None]
    assert unl and all(s.patient == "patient0005" for s in unl)


def test_camus_2023_half_sequence_has_gt_on_every_frame(camus2023):
    seq = [s for s in camus.scan(camus2023, half_sequence=True) if s.patient == "patient0001" and s.view == "2CH"]
    spec = make_patient(1, 1)
    assert len(seq) == spec.n_half
    areas = [int((camus.load_sample(s)[1] == 1).sum()) for s in seq]
    assert areas[0] == max(areas) and areas[-1] == min(areas)  # ED largest, ES smallest


def test_splits_official_and_folds(camus2019, camus2023):
    split = camus.official_split(camus2023)
    assert sum(map(len, split.values())) == 10 and split["validation"] and split["testing"]
    check_disjoint(split)
    folds = [camus.legacy_fold(camus2019, k) for k in range(1, 11)]
    tested = [p for f in folds for p in f["testing"]]
    assert sorted(tested) == [f"patient{i:04d}" for i in range(1, 5)]  # every patient tested exactly once
    # the rule yields exactly 400/50/50 for 500 patients, balanced over quality
    pids = [f"patient{i:04d}" for i in range(1, 501)]
    rng = np.random.default_rng(0)
    sizes = {k: len(v) for k, v in official_split_lists(pids, rng.uniform(20, 70, 500), ["Good", "Medium", "Poor"] * 166 + ["Good", "Good"]).items()}
    assert sizes == {"training": 400, "validation": 50, "testing": 50}


def test_split_overlap_is_rejected():
    with pytest.raises(ValueError, match="patient0001 is in both"):
        check_disjoint({"training": ["patient0001"], "testing": ["patient0001"]})


def _copy(root, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def test_camus_bad_inputs(camus2019, camus2023, tmp_path):
    root = _copy(camus2023, tmp_path)
    p = root / "database_nifti" / "patient0002"
    (p / "patient0002_4CH_ES_gt.nii.gz").unlink()
    with pytest.raises(camus.CamusError, match=r"patient0002_4CH_ES_gt\.nii\.gz: ground truth \(_gt\) missing"):
        camus.scan(root)
    # shape mismatch
    import nibabel as nib

    gt = p / "patient0002_2CH_ED_gt.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 12), np.uint8), np.eye(4)), str(gt))
    with pytest.raises(camus.CamusError, match=r"patient0002_2CH_ED_gt\.nii\.gz: label shape \(12, 10\) differs"):
        camus.read_pair(p / "patient0002_2CH_ED.nii.gz", gt)
    # unknown labels
    image, spacing = camus.read_image(p / "patient0002_2CH_ES.nii.gz")
    bad = np.zeros(image.shape, np.uint8)
    bad[0, 0] = 7
    nib.save(nib.Nifti1Image(bad.T.copy(), np.eye(4)), str(gt))
    with pytest.raises(camus.CamusError, match=r"unknown label values \[7\]"):
        camus.read_pair(p / "patient0002_2CH_ED.nii.gz", gt)
    # wrong raw byte count (2019)
    root19 = _copy(camus2019, tmp_path / "b")
    raw = root19 / "training" / "patient0001" / "patient0001_2CH_ED.raw"
    raw.write_bytes(raw.read_bytes()[:-3])
    with pytest.raises(camus.CamusError, match=r"patient0001_2CH_ED\.raw: has \d+ bytes"):
        camus.read_image(raw.with_suffix(".mhd"))


def test_echonet_reader_and_rasterisation(echonet_root):
    videos = echonet.scan(echonet_root)
    assert len(videos) == 3 and {v.split for v in videos} == {"TRAIN", "VAL", "TEST"}
    v = videos[0]
    frames = echonet.read_video(v.path)
    assert frames.shape == (v.n_frames, 112, 112) and frames.dtype == np.uint8
    assert v.es.frame != v.ed.frame and len(v.ed.coords) == 21  # ES listed first, ED last
    (_, _, ed_mask), (_, _, es_mask) = echonet.traced_frames(v)
    assert ed_mask.sum() > es_mask.sum() > 50
    # method of disks on the tracings reproduces FileList EF (the phantom wrote both from one geometry)
    ef = 100 * (1 - echonet.disks_volume(v.es) / echonet.disks_volume(v.ed))
    assert ef == pytest.approx(v.ef, abs=0.05)


def test_echonet_rasterisation_matches_the_reference_rule():
    # a 2-chord square: polygon x=[X1_2,X1_3,X2_3,X2_2], y=[Y1_2,Y1_3,Y2_3,Y2_2]
    coords = np.array([[5, 0, 5, 9], [2.2, 2, 7.4, 2], [2, 6, 8, 6]], float)
    m = echonet.Tracing(0, coords).mask((10, 10))
    from skimage.draw import polygon

    rr, cc = polygon(np.array([2, 6, 6, 2]), np.array([2, 2, 8, 7]), (10, 10))
    ref = np.zeros((10, 10), np.uint8)
    ref[rr, cc] = 1
    assert np.array_equal(m, ref)


def test_echonet_bad_inputs(echonet_root, tmp_path):
    root = _copy(echonet_root, tmp_path)
    lines = (root / "VolumeTracings.csv").read_text().splitlines()
    name = lines[1].split(",")[0]
    lines.insert(1, f"{name},1,1,2,2,999")
    lines.insert(1, f"{name},1,1,2,2,999")
    lines.insert(1, f"{name},1,1,2,2,999")
    (root / "VolumeTracings.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(echonet.EchoNetError, match=r"traced frame 999 does not exist"):
        echonet.scan(root)
    empty = root / "Videos" / "empty.avi"
    empty.write_bytes(b"")
    with pytest.raises(echonet.EchoNetError, match=r"empty\.avi: empty video"):
        echonet.read_video(empty)
    junk = root / "Videos" / "junk.avi"
    junk.write_bytes(b"RIFF not a video at all" * 10)
    with pytest.raises(echonet.EchoNetError, match=r"junk\.avi: unreadable video"):
        echonet.read_video(junk)


def test_echonet_duplicate_tracings_keep_first_block(echonet_root, tmp_path):
    root = _copy(echonet_root, tmp_path)
    lines = (root / "VolumeTracings.csv").read_text().splitlines()
    name = lines[1].split(",")[0]
    first_frame = lines[1].split(",")[-1]
    block = [l for l in lines[1:] if l.startswith(name + ",") and l.endswith("," + first_frame)]
    (root / "VolumeTracings.csv").write_text("\n".join(lines + [l.replace(",", ",9", 1) for l in block]) + "\n")
    tracings, dups = echonet.read_tracings(root)
    assert dups == 1 and len(tracings[name.removesuffix(".avi")][int(first_frame)]) == 21


def test_png_16bit_keeps_its_grey_levels(tmp_path):
    """A 16-bit PNG used to go through convert("L"), which clips it to 0/255 (black and white)."""
    from PIL import Image

    from apps.echo.pipeline import read_input

    ramp = np.tile(np.linspace(0, 60000, 64).astype(np.uint16), (32, 1))
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I;16")
    frames = read_input(tmp_path / "grey16.png").frames
    assert frames.dtype == np.uint8 and frames.shape == (1, 32, 64)
    assert len(np.unique(frames)) > 50 and frames.min() == 0 and frames.max() == 255  # min–max scaled, graded
    assert np.all(np.diff(frames[0, 0].astype(int)) >= 0)  # the ramp stays a ramp
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(tmp_path / "grey8.png")
    assert np.all(read_input(tmp_path / "grey8.png").frames == 200)  # 8-bit images are not rescaled


def test_duplicate_case_names_are_refused(tmp_path):
    """a/x.png and b/x.png would write one output folder and two indistinguishable cases.csv rows."""
    from PIL import Image

    from apps.echo.pipeline import InputError, check_unique_names, read_input

    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / sub / "x.png")
    a, b = read_input(tmp_path / "a" / "x.png"), read_input(tmp_path / "b" / "x.png")
    check_unique_names([a])
    with pytest.raises(InputError, match=r"b/x.png: has the same case name 'x' as .*a/x.png"):
        check_unique_names([a, b])
    with pytest.raises(InputError, match="is given twice"):
        check_unique_names([a, read_input(tmp_path / "a" / ".." / "a" / "x.png")])
