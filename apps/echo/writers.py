"""Write phantom patients in the exact on-disk layouts users have: CAMUS 2019, CAMUS 2023, EchoNet-Dynamic.

Each writer builds its tree in a temporary sibling folder and renames it at the end
(``dualsci.io.atomic_dir``), and adds ``phantom_truth.csv`` (exact EDV/ESV/EF of the phantom) next to
the dataset files; the readers never need it.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from apps.echo.mhd import write_mhd
from apps.echo.phantom import (Grid, PatientSpec, axis_frame, cycle_phase, half_sequence, make_patient, render,
                               tissue_texture)
from apps.echo.splits import fold_lists, official_split_lists
from dualsci.io import atomic_dir

VIEWS = ("2CH", "4CH")


def _pid(index: int) -> str:
    return f"patient{index:04d}"


def _info_text(spec: PatientSpec, release: str) -> str:
    lines = [f"ED: 1", f"ES: {spec.n_half}", f"NbFrame: {spec.n_half}", f"Sex: {spec.sex}", f"Age: {spec.age}",
             f"ImageQuality: {spec.quality}"]
    if release == "2019":
        lines += [f"LVedv: {spec.edv:.1f}", f"LVesv: {spec.esv:.1f}", f"LVef: {spec.ef:.1f}"]
    else:
        lines += [f"EF: {spec.ef:.1f}", f"FrameRate: {spec.frame_rate}"]
    return "\n".join(lines) + "\n"


def _write_truth(path: Path, specs: Sequence[PatientSpec]) -> None:
    with open(path, "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["patient", "EDV_ml", "ESV_ml", "EF", "ImageQuality", "n_half"])
        for s in specs:
            w.writerow([_pid(s.index), f"{s.edv:.4f}", f"{s.esv:.4f}", f"{s.ef:.4f}", s.quality, s.n_half])


def _write_lists(folder: Path, lists: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, patients in lists.items():
        (folder / name).write_text("".join(p + "\n" for p in patients))


def write_camus_2019(root: str | os.PathLike, n_patients: int = 20, seed: int = 0,
                     shape: tuple[int, int] = (256, 208), n_testing: int = 0, overwrite: bool = False) -> Path:
    """CAMUS 2019 (MetaImage) layout.

    ``root/training/patientXXXX/patientXXXX_{2CH,4CH}_{ED,ES}[_gt].{mhd,raw}``,
    ``patientXXXX_{2CH,4CH}_sequence.{mhd,raw}`` (ED → ES → back towards ED), ``Info_{2CH,4CH}.cfg``;
    ``root/testing/`` holds ``n_testing`` further patients without ``_gt``;
    ``root/listSubGroups/subGroup{1..10}_{training,validation,testing}.txt`` (our fold rule, see
    :mod:`apps.echo.splits`).
    """
    grid = Grid.for_depth(shape)
    specs = [make_patient(i, seed) for i in range(1, n_patients + n_testing + 1)]
    with atomic_dir(root, overwrite=overwrite) as tmp:
        for spec in specs:
            testing = spec.index > n_patients
            folder = tmp / ("testing" if testing else "training") / _pid(spec.index)
            folder.mkdir(parents=True)
            for view in VIEWS:
                imgs, labs = half_sequence(spec, view, grid)
                stem = folder / f"{_pid(spec.index)}_{view}"
                # Full cycle: the half sequence and its way back (without repeating ES and ED).
                seq = np.concatenate([imgs, imgs[-2:0:-1]]) if len(imgs) > 2 else imgs
                write_mhd(f"{stem}_sequence.mhd", seq, (1.0, *grid.spacing))
                for phase, k in (("ED", 0), ("ES", len(imgs) - 1)):
                    write_mhd(f"{stem}_{phase}.mhd", imgs[k], grid.spacing)
                    if not testing:
                        write_mhd(f"{stem}_{phase}_gt.mhd", labs[k], grid.spacing)
                (folder / f"Info_{view}.cfg").write_text(_info_text(spec, "2019"))
        train_specs = specs[:n_patients]
        for k, lists in enumerate(fold_lists([_pid(s.index) for s in train_specs], [s.ef for s in train_specs],
                                              [s.quality for s in train_specs]), start=1):
            _write_lists(tmp / "listSubGroups", {f"subGroup{k}_{name}.txt": v for name, v in lists.items()})
        _write_truth(tmp / "phantom_truth.csv", specs)
    return Path(root)


def write_camus_2023(root: str | os.PathLike, n_patients: int = 20, seed: int = 0,
                     shape: tuple[int, int] = (256, 208), overwrite: bool = False) -> Path:
    """CAMUS 2023 (NIfTI) layout.

    ``root/database_nifti/patientXXXX/patientXXXX_{2CH,4CH}_{ED,ES}[_gt].nii.gz``,
    ``patientXXXX_{2CH,4CH}_half_sequence[_gt].nii.gz`` (ED → ES, GT on every frame), ``Info_*.cfg``;
    ``root/database_split/subgroup_{training,validation,testing}.txt``. Arrays are stored as the
    release does, ``(W, H[, N])`` with zooms ``(dx, dy[, 1])``.
    """
    import nibabel as nib

    grid = Grid.for_depth(shape)
    specs = [make_patient(i, seed) for i in range(1, n_patients + 1)]

    def save(path: Path, arr: np.ndarray) -> None:
        data = np.ascontiguousarray(np.moveaxis(arr, -1, 0) if arr.ndim == 2 else arr.transpose(2, 1, 0))
        affine = np.diag([grid.spacing[1], grid.spacing[0], 1.0, 1.0])
        img = nib.Nifti1Image(data, affine)
        img.header.set_zooms((grid.spacing[1], grid.spacing[0], 1.0)[: data.ndim])
        nib.save(img, str(path))

    with atomic_dir(root, overwrite=overwrite) as tmp:
        for spec in specs:
            folder = tmp / "database_nifti" / _pid(spec.index)
            folder.mkdir(parents=True)
            for view in VIEWS:
                imgs, labs = half_sequence(spec, view, grid)
                stem = folder / f"{_pid(spec.index)}_{view}"
                save(Path(f"{stem}_half_sequence.nii.gz"), imgs)
                save(Path(f"{stem}_half_sequence_gt.nii.gz"), labs)
                for phase, k in (("ED", 0), ("ES", len(imgs) - 1)):
                    save(Path(f"{stem}_{phase}.nii.gz"), imgs[k])
                    save(Path(f"{stem}_{phase}_gt.nii.gz"), labs[k])
                (folder / f"Info_{view}.cfg").write_text(_info_text(spec, "2023"))
        lists = official_split_lists([_pid(s.index) for s in specs], [s.ef for s in specs], [s.quality for s in specs])
        _write_lists(tmp / "database_split", {f"subgroup_{k}.txt": v for k, v in lists.items()})
        _write_truth(tmp / "phantom_truth.csv", specs)
    return Path(root)


def _encode_avi(path: Path, frames: np.ndarray, fps: float) -> None:
    """``frames: (N, H, W)`` uint8 grey → 3-channel MJPEG AVI, as EchoNet ships them."""
    import av

    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mjpeg", rate=int(round(fps)))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj444p"
        stream.options = {"qscale": "2"}
        for frame in frames:
            rgb = np.repeat(frame[:, :, None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def tracing_rows(spec: PatientSpec, phase: float, grid: Grid, n_chords: int = 20) -> list[tuple[float, float, float, float]]:
    """EchoNet-style tracing of the 4CH LV at ``phase``: the long axis (apex → base), then ``n_chords``
    short-axis chords perpendicular to it, in pixel (x = column, y = row) coordinates."""
    f = axis_frame(spec, "4CH", phase)
    apex, base, e, n = f["apex"], f["base"], f["e"], f["n"]
    length, radius = f["length"], f["radius"]

    def px(p: np.ndarray) -> tuple[float, float]:
        r, c = grid.to_pixel(float(p[0]), float(p[1]))
        return c, r

    rows = [(*px(apex), *px(base))]
    for i in range(n_chords):
        u = length * i / n_chords  # from the mitral plane towards the apex
        half = radius * math.sqrt(max(0.0, 1.0 - (u / length) ** 2))
        centre = base - u * e
        rows.append((*px(centre - half * n), *px(centre + half * n)))
    return rows


def write_echonet(root: str | os.PathLike, n_videos: int = 10, seed: int = 0, size: int = 112,
                  splits: Sequence[str] = ("TRAIN", "VAL", "TEST"), overwrite: bool = False) -> Path:
    """EchoNet-Dynamic layout: ``Videos/<FileName>.avi`` (112×112, 3-channel), ``FileList.csv``,
    ``VolumeTracings.csv`` (ES frame listed first, ED last, 21 rows each)."""
    grid = Grid.for_depth((size, size), depth_mm=160.0)
    grid = Grid((size, size), (grid.spacing[0], grid.spacing[0]))  # EchoNet frames are square, isotropic
    with atomic_dir(root, overwrite=overwrite) as tmp:
        (tmp / "Videos").mkdir()
        filelist, tracings = [], []
        for i in range(n_videos):
            spec = make_patient(10_000 + i, seed)
            name = f"0X{(spec.seed * 2654435761) % (16**15):015X}"
            rng = np.random.default_rng([spec.seed, 7])
            period = int(rng.integers(20, 27))
            n_frames = 2 * period + 4
            tissue = tissue_texture(grid, rng)
            frames = np.stack([render(spec, "4CH", cycle_phase(k, period), grid, rng, tissue)[0] for k in range(n_frames)])
            fps = 50.0
            _encode_avi(tmp / "Videos" / f"{name}.avi", frames, fps)
            es_frame = period + int(round(0.38 * period))
            ed_frame = period
            # EchoNet lists the "small" (ES) trace first and the "large" (ED) last.
            for frame in (es_frame, ed_frame):
                phase = cycle_phase(frame, period)
                for x1, y1, x2, y2 in tracing_rows(spec, phase, grid):
                    tracings.append([f"{name}.avi", f"{x1:.4f}", f"{y1:.4f}", f"{x2:.4f}", f"{y2:.4f}", frame])
            split = splits[i % len(splits)]
            edv, esv = spec.volume_ml(cycle_phase(ed_frame, period)), spec.volume_ml(cycle_phase(es_frame, period))
            filelist.append([name, f"{100 * (edv - esv) / edv:.4f}", f"{esv:.4f}", f"{edv:.4f}", size, size, fps, n_frames, split])
        with open(tmp / "FileList.csv", "w", newline="") as handle:
            w = csv.writer(handle)
            w.writerow(["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"])
            w.writerows(filelist)
        with open(tmp / "VolumeTracings.csv", "w", newline="") as handle:
            w = csv.writer(handle)
            w.writerow(["FileName", "X1", "Y1", "X2", "Y2", "Frame"])
            w.writerows(tracings)
    return Path(root)
