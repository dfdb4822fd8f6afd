"""CAMUS reader, both releases: 2019 MetaImage (``training/``, ``testing/``) and 2023 NIfTI (``database_nifti/``).

Every image is returned as ``(H, W)`` (or ``(N, H, W)`` for sequences), apex up, with spacing
``(dy, dx)`` in mm. Labels: 0 background, 1 LV cavity (endocardium), 2 myocardium, 3 left atrium.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from apps.echo.mhd import MetaImageError, read_mhd
from apps.echo.splits import check_disjoint, fold_lists, official_split_lists, read_list

CAMUS_LABELS = {0: "background", 1: "LV endocardium", 2: "myocardium", 3: "left atrium"}
VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")


class CamusError(ValueError):
    """Bad CAMUS input; the message names the file and the problem."""


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float]]:
    """Read one CAMUS image or label file (``.mhd`` or ``.nii[.gz]``).

    Returns:
        array ``(H, W)`` or ``(N, H, W)``; spacing ``(dy, dx)`` mm.
    """
    path = Path(path)
    if not path.exists():
        raise CamusError(f"{path}: file not found")
    name = path.name.lower()
    if name.endswith(".mhd"):
        try:
            arr, spacing = read_mhd(path)
        except MetaImageError as err:
            raise CamusError(str(err)) from err
        return arr, (float(spacing[-2]), float(spacing[-1]))
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        import nibabel as nib

        try:
            img = nib.load(str(path))
            data = np.asarray(img.dataobj)
        except Exception as err:  # nibabel raises several types for corrupt files
            raise CamusError(f"{path}: unreadable NIfTI ({err})") from err
        zooms = img.header.get_zooms()
        # The 2023 release stores (W, H[, N]); transpose to apex-up (H, W) / (N, H, W).
        if data.ndim == 2:
            arr = data.T
        elif data.ndim == 3:
            arr = data.transpose(2, 1, 0)
        else:
            raise CamusError(f"{path}: expected a 2-D image or 3-D sequence, got shape {data.shape}")
        return np.ascontiguousarray(arr), (float(zooms[1]), float(zooms[0]))
    raise CamusError(f"{path}: not a CAMUS image (expected .mhd or .nii.gz)")


def check_labels(label: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """Raise if ``label`` holds values outside {0, 1, 2, 3}; return it as uint8."""
    values = np.unique(label)
    bad = [v for v in values.tolist() if v not in CAMUS_LABELS]
    if bad:
        raise CamusError(f"{path}: unknown label values {bad[:10]} (CAMUS labels are {sorted(CAMUS_LABELS)})")
    return label.astype(np.uint8)


def read_pair(image_path: str | os.PathLike, gt_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Image and label of the same frame(s), checked for existence, equal shape and known labels."""
    gt_path = Path(gt_path)
    if not gt_path.exists():
        raise CamusError(f"{gt_path}: ground truth (_gt) missing for {Path(image_path).name}")
    image, spacing = read_image(image_path)
    label, _ = read_image(gt_path)
    if image.shape != label.shape:
        raise CamusError(f"{gt_path}: label shape {label.shape} differs from image {Path(image_path).name} shape {image.shape}")
    return image, check_labels(label, gt_path), spacing


def read_info(path: str | os.PathLike) -> dict:
    """Parse ``Info_{2CH,4CH}.cfg`` (``Key: value`` lines). ED/ES are returned **0-based** and ordered."""
    path = Path(path)
    if not path.exists():
        raise CamusError(f"{path}: Info cfg missing")
    info: dict = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            value = value.strip()
            try:
                info[key.strip()] = int(value) if value.lstrip("-").isdigit() else float(value)
            except ValueError:
                info[key.strip()] = value
    for key in ("ED", "ES"):
        if key not in info:
            raise CamusError(f"{path}: lacks {key}")
    ed, es = int(info["ED"]) - 1, int(info["ES"]) - 1
    if ed > es:  # vital swaps reversed half sequences
        ed, es = es, ed
    info["ED"], info["ES"] = ed, es
    if "EF" not in info and "LVef" in info:
        info["EF"] = info["LVef"]
    quality = info.get("ImageQuality")
    if quality is not None and quality not in ("Good", "Medium", "Poor"):
        raise CamusError(f"{path}: ImageQuality {quality!r} not in Good/Medium/Poor")
    return info


@dataclass
class CamusSample:
    """One annotated (or unannotated) CAMUS frame."""

    patient: str
    view: str
    phase: str  # "ED", "ES" or "F<k>" for a half-sequence frame
    image: Path
    gt: Path | None
    frame: int | None = None  # index into a sequence file, else None
    info: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.patient}_{self.view}_{self.phase}"


def detect_release(root: Path) -> Literal["2019", "2023"]:
    if (root / "database_nifti").is_dir() or any(root.glob("patient*/*.nii.gz")):
        return "2023"
    if (root / "training").is_dir() or any(root.glob("patient*/*.mhd")):
        return "2019"
    raise CamusError(f"{root}: neither a CAMUS 2019 (training/*.mhd) nor a 2023 (database_nifti/*.nii.gz) tree")


def patient_dirs(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    release = detect_release(root)
    bases = [root / "database_nifti"] if release == "2023" else [root / "training", root / "testing"]
    bases = [b for b in bases if b.is_dir()] or [root]
    return sorted((p for b in bases for p in b.glob("patient*") if p.is_dir()), key=lambda p: p.name)


def scan(root: str | os.PathLike, views: tuple[str, ...] = VIEWS, half_sequence: bool = False,
         require_gt: bool = True) -> list[CamusSample]:
    """List the annotated frames of a CAMUS tree (either release).

    Args:
        half_sequence: 2023 only: every frame of ``*_half_sequence[_gt].nii.gz`` instead of ED/ES.
        require_gt: raise (naming the file) when an image lacks its ``_gt``; ``False`` keeps them with ``gt=None``.
    """
    root = Path(root)
    release = detect_release(root)
    ext = ".nii.gz" if release == "2023" else ".mhd"
    samples: list[CamusSample] = []
    for folder in patient_dirs(root):
        pid = folder.name
        unlabelled = folder.parent.name == "testing"
        for view in views:
            info = read_info(folder / f"Info_{view}.cfg")
            if half_sequence and release == "2023":
                img = folder / f"{pid}_{view}_half_sequence{ext}"
                gt = folder / f"{pid}_{view}_half_sequence_gt{ext}"
                if not img.exists():
                    raise CamusError(f"{img}: half sequence missing")
                if not gt.exists():
                    raise CamusError(f"{gt}: ground truth (_gt) missing for {img.name}")
                n = int(info.get("NbFrame", 0)) or read_image(img)[0].shape[0]
                samples += [CamusSample(pid, view, f"F{k}", img, gt, frame=k, info=info) for k in range(n)]
                continue
            for phase in PHASES:
                img = folder / f"{pid}_{view}_{phase}{ext}"
                gt = folder / f"{pid}_{view}_{phase}_gt{ext}"
                if not img.exists():
                    raise CamusError(f"{img}: image missing")
                if not gt.exists():
                    if require_gt and not unlabelled:
                        raise CamusError(f"{gt}: ground truth (_gt) missing for {img.name}")
                    gt = None
                samples.append(CamusSample(pid, view, phase, img, gt, info=info))
    if not samples:
        raise CamusError(f"{root}: no CAMUS patients found")
    return samples


def load_sample(sample: CamusSample) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float]]:
    """``(image (H, W) uint8-range, label (H, W) uint8 or None, spacing (dy, dx))``."""
    if sample.gt is None:
        image, spacing = read_image(sample.image)
        label = None
    else:
        image, label, spacing = read_pair(sample.image, sample.gt)
    if sample.frame is not None:
        if sample.frame >= image.shape[0]:
            raise CamusError(f"{sample.image}: frame {sample.frame} beyond {image.shape[0]} frames")
        image = image[sample.frame]
        label = None if label is None else label[sample.frame]
    return image, label, spacing


def _patient_meta(root: Path) -> tuple[list[str], list[float], list[str]]:
    pids, efs, qs = [], [], []
    for folder in patient_dirs(root):
        if folder.parent.name == "testing":
            continue
        info = read_info(folder / "Info_4CH.cfg")
        pids.append(folder.name)
        efs.append(float(info.get("EF", 0.0)))
        qs.append(str(info.get("ImageQuality", "Medium")))
    return pids, efs, qs


def official_split(root: str | os.PathLike) -> dict[str, list[str]]:
    """Training / validation / testing patient lists: ``database_split/subgroup_*.txt`` when present,
    else the documented rule of :mod:`apps.echo.splits`."""
    root = Path(root)
    folder = root / "database_split"
    if folder.is_dir():
        split = {k: read_list(folder / f"subgroup_{k}.txt") for k in ("training", "validation", "testing")}
    else:
        split = official_split_lists(*_patient_meta(root))
    check_disjoint(split, str(folder))
    return split


def legacy_fold(root: str | os.PathLike, fold: int = 5) -> dict[str, list[str]]:
    """Legacy CV fold ``fold`` ∈ 1..10 (vital's default is 5): ``listSubGroups`` files or the documented rule."""
    if not 1 <= fold <= 10:
        raise ValueError(f"fold must be in 1..10, got {fold}")
    root = Path(root)
    folder = root / "listSubGroups"
    if folder.is_dir():
        split = {k: read_list(folder / f"subGroup{fold}_{k}.txt") for k in ("training", "validation", "testing")}
    else:
        split = fold_lists(*_patient_meta(root))[fold - 1]
    check_disjoint(split, str(folder))
    return split
