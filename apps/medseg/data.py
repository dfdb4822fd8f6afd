"""NIfTI image/label pairs through MONAI transforms, and the 2-D slice and 2.5-D/3-D patch datasets.

Reading chain per case (MONAI dictionary transforms): ``LoadImaged`` -> ``EnsureChannelFirstd`` ->
``Orientationd("RAS")`` -> optional ``Spacingd`` (bilinear image, nearest label) -> modality window
to [-1, 1] (CT: fixed HU window; MR: 0.5-99.5 percentiles) -> optional foreground crop. Labels are
remapped through the training :class:`~apps.medseg.labels.LabelDict` and never interpolated other
than by nearest neighbour.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from apps.medseg.labels import LabelDict, LabelError, SourceLabels
from apps.medseg.prompts import Prompt, PromptVocab

#: Intensity windows (HU for CT). ``None`` = percentile normalisation (MR has no absolute scale).
WINDOWS: dict[str, tuple[float, float] | None] = {"CT": (-200.0, 300.0), "MR": None}


class DataError(ValueError):
    """A bad input file or pair; the message names the file and the problem."""


@dataclass
class Volume:
    """One case after the reading chain.

    Attributes:
        image: (X, Y, Z) float32 in [-1, 1], RAS.
        label: (X, Y, Z) int64, ids of ``labels``.
        affine: (4, 4) RAS affine of the (possibly resampled) grid.
        modality: ``"CT"`` or ``"MR"``.
        case_id: name of the case.
        window: intensity window used (to map [-1, 1] back to physical units), None for MR.
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    modality: str
    case_id: str
    window: tuple[float, float] | None = None
    labels: LabelDict | None = None
    source: str = ""  # the label file, named by errors found after reading (e.g. no labelled slice)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(0)))


def check_pair(image_path: str | os.PathLike, label_path: str | os.PathLike, atol: float = 1e-3) -> None:
    """Raise :class:`DataError` if image and label differ in shape or affine (checked on the headers)."""
    try:
        img, lab = nib.load(str(image_path)), nib.load(str(label_path))
    except Exception as err:  # nibabel raises several types for unreadable files
        raise DataError(f"cannot read NIfTI pair {image_path} / {label_path}: {err}") from err
    if img.shape[:3] != lab.shape[:3]:
        raise DataError(f"{label_path}: shape {lab.shape} differs from image {image_path} shape {img.shape}")
    if not np.allclose(img.affine, lab.affine, atol=atol):
        raise DataError(f"{label_path}: affine {_one_line(lab.affine)} differs from image {image_path} affine "
                        f"{_one_line(img.affine)}")  # one line: errors are printed as one line by the CLIs


def _one_line(affine: np.ndarray) -> str:
    return str(np.round(np.asarray(affine, float), 4).tolist())


def load_case(
    image_path: str | os.PathLike,
    label_path: str | os.PathLike,
    source_labels: SourceLabels,
    lut: np.ndarray,
    labels: LabelDict,
    modality: Literal["CT", "MR"] = "CT",
    spacing: Sequence[float] | None = None,
    crop_foreground: bool = False,
    case_id: str | None = None,
) -> Volume:
    """Read one image/label pair through the MONAI chain and remap labels to ``labels``.

    Args:
        image_path, label_path: NIfTI files with identical shape and affine.
        source_labels, lut: the dataset's dictionary and the look-up table from ``SourceLabels.select``.
        labels: the training dictionary.
        modality: selects the intensity window (:data:`WINDOWS`).
        spacing: target voxel size in mm (``Spacingd``), None = keep.
        crop_foreground: crop to the body (``CropForegroundd`` on the image above the window floor).
    """
    from monai.transforms import (Compose, CropForegroundd, EnsureChannelFirstd, LoadImaged,
                                  Orientationd, ScaleIntensityRanged, ScaleIntensityRangePercentilesd,
                                  Spacingd)

    if modality not in WINDOWS:
        raise DataError(f"modality: unknown {modality!r}; allowed: {list(WINDOWS)}")
    check_pair(image_path, label_path)
    keys = ["image", "label"]
    chain = [LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys), Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))]
    if spacing is not None:
        chain.append(Spacingd(keys, pixdim=tuple(spacing), mode=("bilinear", "nearest")))
    window = WINDOWS[modality]
    if window is not None:
        chain.append(ScaleIntensityRanged("image", a_min=window[0], a_max=window[1], b_min=-1.0, b_max=1.0, clip=True))
    else:
        chain.append(ScaleIntensityRangePercentilesd("image", lower=0.5, upper=99.5, b_min=-1.0, b_max=1.0, clip=True))
    if crop_foreground:
        chain.append(CropForegroundd(keys, source_key="image", select_fn=lambda x: x > -0.95, margin=2))
    try:
        out = Compose(chain)({"image": str(image_path), "label": str(label_path)})
    except RuntimeError as err:  # MONAI wraps the reader's error without the file name
        raise _unreadable_pair(image_path, label_path, err) from err
    image = out["image"][0].numpy().astype(np.float32)
    if image.ndim != 3:  # the slice datasets index (X, Y, Z)
        raise DataError(f"{image_path}: expected a 3-D volume (X, Y, Z), got shape {image.shape}")
    if not np.isfinite(image).all():  # NaN survives the window's clip and trained / scored on NaN silently
        raise DataError(f"{image_path}: {int(image.size - np.isfinite(image).sum())} voxels are NaN or infinite")
    raw = np.rint(out["label"][0].numpy()).astype(np.int64)
    label = source_labels.remap(raw, lut, source=str(label_path))
    affine = np.asarray(out["image"].affine, dtype=np.float64)
    return Volume(image, label, affine, modality, case_id or _case_name(image_path), window, labels, str(label_path))


def _unreadable_pair(image_path, label_path, err: Exception) -> DataError:
    """A DataError naming the file of the pair whose voxels cannot be read (truncated, corrupt)."""
    for path in (image_path, label_path):
        try:
            np.asarray(nib.load(str(path)).dataobj)
        except Exception as cause:  # nibabel / gzip raise EOFError, OSError, zlib.error...
            return DataError(f"{path}: unreadable NIfTI ({type(cause).__name__}: {cause})")
    return DataError(f"cannot read NIfTI pair {image_path} / {label_path}: {err}")


def _case_name(path: str | os.PathLike) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name[:-5] if name.endswith("_0000") else name


def denormalise(image: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Map [-1, 1] back to physical units (HU for CT); MR stays in [-1, 1] scaled to [0, 1000]."""
    lo, hi = window if window is not None else (0.0, 1000.0)
    return ((np.clip(image, -1, 1) + 1.0) / 2.0 * (hi - lo) + lo).astype(np.float32)


# ---------------------------------------------------------------------------------------------- slices
def fit_square(x: Tensor, size: int, mode: str) -> Tensor:
    """Pad ``x: (C, H, W)`` to a square (background value = per-tensor minimum) then resize to ``size``.

    ``mode="nearest"`` for labels (discrete ids survive unchanged), ``"bilinear"`` for images.
    """
    c, h, w = x.shape
    s = max(h, w)
    pad_val = float(x.min()) if mode != "nearest" else 0.0
    ph, pw = s - h, s - w
    x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=pad_val)
    if s != size:
        kw = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
        x = F.interpolate(x[None].float(), size=(size, size), mode=mode, **kw)[0]
    return x


@dataclass
class SliceItem:
    image: Tensor  # (C, S, S), C = 1 + 2 * context
    mask: Tensor  # (S, S) long
    prompt: Prompt
    case_id: str
    z: int


@dataclass
class SliceDataset(Dataset):
    """Axial 2-D (or 2.5-D with ``context`` neighbour slices as extra image channels) slices.

    Args:
        volumes: cases after :func:`load_case` (or the phantom generator).
        size: output side in pixels (square).
        context: neighbour slices on each side stacked as channels (0 = plain 2-D).
        z_range: optional ``(lo, hi)`` fraction of each volume's z extent to keep (train/held-out split).
        min_foreground: minimum labelled pixels for a slice to be kept (0 keeps empty slices too, e.g.
            generated pairs whose mask came out empty: they still count in an evaluation).
        pathology: pathology field of every slice's prompt (``"lesion"`` when a label named
            ``*lesion*``/``*tumor*`` is present).

    Items are dicts: ``image (C, S, S)`` float in [-1, 1], ``mask (S, S)`` long, ``prompt (V+1,)`` multi-hot.
    """

    volumes: Sequence[Volume]
    vocab: PromptVocab
    size: int = 64
    context: int = 0
    z_range: tuple[float, float] = (0.0, 1.0)
    min_foreground: int = 1
    items: list[SliceItem] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        for vol in self.volumes:
            nz = vol.image.shape[2]
            lo, hi = int(round(self.z_range[0] * nz)), int(round(self.z_range[1] * nz))
            names = vol.labels.names if vol.labels is not None else None
            for z in range(lo, hi):
                lab = vol.label[:, :, z]
                if int((lab > 0).sum()) < self.min_foreground:
                    continue
                idx = [min(max(z + d, 0), nz - 1) for d in range(-self.context, self.context + 1)]
                img = torch.from_numpy(np.ascontiguousarray(vol.image[:, :, idx].transpose(2, 0, 1)))
                img = fit_square(img, self.size, "bilinear").clamp(-1, 1)
                msk = fit_square(torch.from_numpy(lab[None].astype(np.int64)), self.size, "nearest")[0].long()
                present = [names[i] for i in torch.unique(msk).tolist() if i > 0] if names else []
                if not present and self.min_foreground > 0:
                    continue
                patho = "lesion" if any(("lesion" in n or "tumor" in n) for n in present) else "none"
                labels_in_vocab = [n for n in present if n in self.vocab.labels]
                prompt = self.vocab.make(vol.modality, "abdomen", patho, labels_in_vocab)
                self.items.append(SliceItem(img.float(), msk, prompt, vol.case_id, z))
        if not self.items:
            files = ", ".join(v.source or v.case_id for v in self.volumes)
            raise DataError(f"{files}: empty mask: no slice with labelled foreground (of the selected labels) "
                            f"in z-range {tuple(self.z_range)}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        return {"image": it.image, "mask": it.mask, "prompt": self.vocab.encode(it.prompt)}


@dataclass
class PatchDataset3D(Dataset):
    """Random 3-D patches ``(1, px, py, pz)`` with foreground-biased centres (``pos`` fraction).

    Deterministic per index: patch i of an epoch is drawn from ``np.random.default_rng(seed + i)``.
    Items: ``image (1, px, py, pz)``, ``mask (px, py, pz)`` long, ``prompt (V+1,)``.
    """

    volumes: Sequence[Volume]
    vocab: PromptVocab
    patch: tuple[int, int, int] = (32, 32, 16)
    samples: int = 64
    pos: float = 0.67
    seed: int = 0

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng(self.seed + i)
        vol = self.volumes[int(rng.integers(len(self.volumes)))]
        shape = np.array(vol.image.shape)
        p = np.minimum(np.array(self.patch), shape)
        fg = np.argwhere(vol.label > 0)
        if len(fg) and rng.random() < self.pos:
            centre = fg[int(rng.integers(len(fg)))]
        else:
            centre = np.array([int(rng.integers(s)) for s in shape])
        start = np.clip(centre - p // 2, 0, shape - p)
        sl = tuple(slice(int(a), int(a + b)) for a, b in zip(start, p))
        img = torch.from_numpy(np.ascontiguousarray(vol.image[sl]))[None]
        msk = torch.from_numpy(np.ascontiguousarray(vol.label[sl])).long()
        pad = [(0, int(t - s)) for s, t in zip(img.shape[1:], self.patch)]
        flat = [v for pr in reversed(pad) for v in pr]
        img, msk = F.pad(img, flat, value=-1.0), F.pad(msk, flat, value=0)
        names = vol.labels.names if vol.labels is not None else ()
        present = [names[j] for j in torch.unique(msk).tolist() if j > 0 and names[j] in self.vocab.labels]
        prompt = self.vocab.make(vol.modality, "abdomen", "none", present)
        return {"image": img.float(), "mask": msk, "prompt": self.vocab.encode(prompt)}


def require_nonempty(mask: np.ndarray, source: str) -> None:
    """Raise :class:`DataError` if a label map holds no foreground (an empty mask is not a training pair)."""
    if not np.any(mask > 0):
        raise DataError(f"{source}: empty mask (no labelled voxel)")


__all__ = ["Volume", "DataError", "LabelError", "check_pair", "load_case", "denormalise", "fit_square",
           "SliceDataset", "PatchDataset3D", "require_nonempty", "WINDOWS"]
