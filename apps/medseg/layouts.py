"""Dataset layouts: MSD (Decathlon) and nnU-Net v2 raw — readers, and a resumable writer for both.

MSD: ``root/dataset.json`` (``labels`` id-string -> name, ``modality``, ``training`` list of
``{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}``), ``imagesTr/``, ``labelsTr/``.
nnU-Net v2 raw: ``root/dataset.json`` (``channel_names``, ``labels`` name -> id, ``numTraining``,
``file_ending``), ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

import nibabel as nib
import numpy as np

from apps.medseg.labels import LabelDict, SourceLabels
from dualsci.io import atomic_write, write_json_atomic

Layout = Literal["msd", "nnunet"]
LAYOUTS: tuple[str, ...] = ("msd", "nnunet")


class LayoutError(ValueError):
    """A dataset folder that does not follow its layout; the message names the file."""


@dataclass(frozen=True)
class CaseFiles:
    case_id: str
    image: Path
    label: Path


@dataclass(frozen=True)
class DatasetIndex:
    """What a reader returns: cases, the dataset's label dictionary and its modality."""

    root: Path
    layout: str
    cases: tuple[CaseFiles, ...]
    labels: SourceLabels
    modality: str


def _load_json(path: Path, required: Sequence[str] = ()) -> dict:
    if not path.exists():
        raise LayoutError(f"{path}: missing dataset.json")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise LayoutError(f"{path}: invalid JSON ({err})") from err
    missing = [k for k in required if k not in meta]
    if missing:
        raise LayoutError(f"{path}: missing keys {missing}")
    return meta


def detect_layout(root: str | os.PathLike) -> str:
    """``"msd"`` if dataset.json has a ``training`` list, ``"nnunet"`` if it has ``channel_names``."""
    meta = _load_json(Path(root) / "dataset.json")
    if "training" in meta:
        return "msd"
    if "channel_names" in meta:
        return "nnunet"
    raise LayoutError(f"{Path(root) / 'dataset.json'}: neither MSD ('training') nor nnU-Net v2 ('channel_names')")


def read_dataset(root: str | os.PathLike, layout: str | None = None) -> DatasetIndex:
    """Read an MSD or nnU-Net v2 raw folder (layout auto-detected when None)."""
    layout = layout or detect_layout(root)
    if layout == "msd":
        return read_msd(root)
    if layout == "nnunet":
        return read_nnunet(root)
    raise LayoutError(f"layout: unknown {layout!r}; allowed: {list(LAYOUTS)}")


def read_msd(root: str | os.PathLike) -> DatasetIndex:
    """Read an MSD folder through MONAI's ``load_decathlon_datalist`` (paths relative to the JSON)."""
    from monai.data import load_decathlon_datalist

    root = Path(root)
    meta = _load_json(root / "dataset.json", ("labels", "modality", "training"))
    items = load_decathlon_datalist(str(root / "dataset.json"), is_segmentation=True, data_list_key="training")
    cases = []
    for item in items:
        img, lab = Path(item["image"]), Path(item["label"])
        for p in (img, lab):
            if not p.exists():
                raise LayoutError(f"{root / 'dataset.json'}: listed file {p} does not exist")
        cases.append(CaseFiles(_strip(img.name), img, lab))
    modality = str(meta["modality"].get("0", "CT"))
    return DatasetIndex(root, "msd", tuple(cases), LabelDict.from_mapping(meta["labels"], str(root / "dataset.json")),
                        modality)


def read_nnunet(root: str | os.PathLike) -> DatasetIndex:
    """Read an nnU-Net v2 raw folder (single-channel cases)."""
    root = Path(root)
    meta = _load_json(root / "dataset.json", ("channel_names", "labels", "file_ending"))
    ending = meta["file_ending"]
    cases = []
    for lab in sorted((root / "labelsTr").glob(f"*{ending}")):
        case = lab.name[: -len(ending)]
        img = root / "imagesTr" / f"{case}_0000{ending}"
        if not img.exists():
            raise LayoutError(f"{lab}: no matching image {img}")
        cases.append(CaseFiles(case, img, lab))
    if "numTraining" in meta and int(meta["numTraining"]) != len(cases):
        raise LayoutError(f"{root / 'dataset.json'}: numTraining={meta['numTraining']} but {len(cases)} cases in labelsTr")
    modality = str(meta["channel_names"].get("0", "CT"))
    return DatasetIndex(root, "nnunet", tuple(cases), LabelDict.from_mapping(meta["labels"], str(root / "dataset.json")),
                        "CT" if modality.upper() == "CT" else "MR")


def _strip(name: str) -> str:
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name


# --------------------------------------------------------------------------------------------- writing
def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray, is_label: bool) -> None:
    """Write a NIfTI atomically; labels as uint8 (int16 above 255 classes), images as float32."""
    if is_label:
        dtype = np.uint8 if array.max(initial=0) < 256 else np.int16
        img = nib.Nifti1Image(np.asarray(array).astype(dtype), affine)
        img.set_data_dtype(dtype)
    else:
        img = nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine)
        img.set_data_dtype(np.float32)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_write(path, "wb") as handle:
        handle.write(img.to_bytes() if not str(path).endswith(".gz") else _gz(img.to_bytes()))


def _gz(raw: bytes) -> bytes:
    import gzip

    return gzip.compress(raw, compresslevel=1, mtime=0)


class DatasetWriter:
    """Write cases into one or both layouts under ``out``; ``dataset.json`` is (re)written by ``finalize``.

    Folders: ``out/nnunet/Dataset{id:03d}_{name}/`` and ``out/msd/Task{id:02d}_{name}/`` (each with
    ``imagesTr``, ``labelsTr``, ``dataset.json``). Every NIfTI is written atomically, so a killed job
    leaves only whole files; the caller's manifest says which cases are complete.
    """

    def __init__(self, out: str | os.PathLike, labels: LabelDict, modality: str, name: str = "MedSegSynth",
                 dataset_id: int = 501, layouts: Sequence[str] = LAYOUTS, description: str = "") -> None:
        bad = [x for x in layouts if x not in LAYOUTS]
        if bad or not layouts:
            raise LayoutError(f"layouts: unknown {bad}; allowed: {list(LAYOUTS)}")
        self.out, self.labels, self.modality, self.name = Path(out), labels, modality, name
        self.layouts = tuple(layouts)
        self.description = description
        self.roots = {}
        if "nnunet" in self.layouts:
            self.roots["nnunet"] = self.out / "nnunet" / f"Dataset{dataset_id:03d}_{name}"
        if "msd" in self.layouts:
            self.roots["msd"] = self.out / "msd" / f"Task{dataset_id % 100:02d}_{name}"

    def paths(self, case_id: str) -> dict[str, dict[str, Path]]:
        out = {}
        if "nnunet" in self.roots:
            r = self.roots["nnunet"]
            out["nnunet"] = {"image": r / "imagesTr" / f"{case_id}_0000.nii.gz", "label": r / "labelsTr" / f"{case_id}.nii.gz"}
        if "msd" in self.roots:
            r = self.roots["msd"]
            out["msd"] = {"image": r / "imagesTr" / f"{case_id}.nii.gz", "label": r / "labelsTr" / f"{case_id}.nii.gz"}
        return out

    def add_case(self, case_id: str, image: np.ndarray, label: np.ndarray, affine: np.ndarray) -> dict[str, dict[str, str]]:
        """Write one case (image in physical units, label ids) in every layout; returns relative paths."""
        if image.shape != label.shape:
            raise LayoutError(f"case {case_id}: image shape {image.shape} != label shape {label.shape}")
        self.labels.check_map(label, source=f"case {case_id}")
        rel = {}
        for layout, files in self.paths(case_id).items():
            save_nifti(files["image"], image, affine, is_label=False)
            save_nifti(files["label"], label, affine, is_label=True)
            rel[layout] = {k: str(v.relative_to(self.out)) for k, v in files.items()}
        return rel

    def finalize(self, case_ids: Iterable[str]) -> None:
        """Write each layout's ``dataset.json`` listing ``case_ids`` (sorted)."""
        ids = sorted(case_ids)
        if "nnunet" in self.roots:
            write_json_atomic(self.roots["nnunet"] / "dataset.json", {
                "channel_names": {"0": "CT" if self.modality == "CT" else "zscore"},
                "labels": self.labels.to_nnunet(),
                "numTraining": len(ids),
                "file_ending": ".nii.gz",
                "overwrite_image_reader_writer": "NibabelIOWithReorient",
                "name": self.name,
                "description": self.description,
            })
        if "msd" in self.roots:
            write_json_atomic(self.roots["msd"] / "dataset.json", {
                "name": self.name,
                "description": self.description,
                "reference": "synthetic (dualsci medseg)",
                "licence": "CC-BY-4.0 (synthetic data)",
                "release": "0.1",
                "tensorImageSize": "3D",
                "modality": {"0": self.modality},
                "labels": self.labels.to_msd(),
                "numTraining": len(ids),
                "numTest": 0,
                "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids],
                "test": [],
            })
