"""LightningDataModule: real NIfTI (one pair, or an MSD / nnU-Net folder) or the embedded phantoms, as 2-D
slices or (``patch_3d``) 3-D patches."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from apps.medseg.data import PatchDataset3D, SliceDataset, load_case
from apps.medseg.labels import LabelDict
from apps.medseg.layouts import read_dataset
from apps.medseg.prompts import PromptVocab
from dualsci.io import output_dir_problem, shared_data_dir

_SHARED = "shared:"


def resolve(path: str | None) -> Path | None:
    """``shared:medseg/x.nii.gz`` -> a path under ``$DUALSCI_SHARED_DATA``; other paths unchanged."""
    if path is None:
        return None
    return shared_data_dir() / path[len(_SHARED):] if path.startswith(_SHARED) else Path(path)


class MedSegDataModule(pl.LightningDataModule):
    """Axial slices for training the paired generator.

    Sources (exactly one): ``root`` (an MSD or nnU-Net v2 raw folder), ``image`` + ``label`` (+
    ``labels_json``, ``labels_key``) for a single NIfTI pair, or neither: the embedded CT phantom
    (``phantom_cases`` cases written to ``root_cache``). Paths may start with ``shared:`` to point into
    ``$DUALSCI_SHARED_DATA``.

    Args:
        labels: label names to train on (ids 1..K-1 in this order); must equal the model's ``labels``.
        z_range: fraction of every volume's z extent used for training (the rest is held out by the
            benchmark and never seen); validation uses a deterministic 10 % of training slices.
        spacing: optional resampling (mm) before slicing.
        patch_3d: ``(S, S, D)`` voxels: train a 3-D generator (``MedSegNet(spatial_dims=3, image_size=S,
            volume_depth=D)``) on foreground-biased random patches (:class:`~apps.medseg.data.PatchDataset3D`)
            of the volumes cut to ``z_range``, ``patches_per_epoch`` per epoch (validation: 8 fixed
            patches of another seed); None = 2-D slices (``size``, ``context``).
    """

    def __init__(
        self,
        labels: Sequence[str] = ("liver", "spleen", "kidney_left", "kidney_right", "stomach", "liver_lesion"),
        modalities: Sequence[str] = ("CT", "MR"),
        root: str | None = None,
        image: str | None = None,
        label: str | None = None,
        labels_json: str | None = None,
        labels_key: str | None = None,
        modality: str = "CT",
        size: int = 64,
        context: int = 0,
        z_range: tuple[float, float] = (0.0, 1.0),
        spacing: Sequence[float] | None = None,
        batch_size: int = 16,
        phantom_cases: int = 8,
        phantom_seed: int = 0,
        root_cache: str = "outputs/medseg/phantom_ct",
        num_workers: int = 0,
        patch_3d: Sequence[int] | None = None,
        patches_per_epoch: int = 256,
    ) -> None:
        super().__init__()
        if root is not None and image is not None:
            raise ValueError("give either root (a dataset folder) or image + label, not both")
        if (image is None) != (label is None):
            raise ValueError("image and label must be given together")
        if patch_3d is not None and (len(patch_3d) != 3 or patch_3d[0] != patch_3d[1]):
            raise ValueError(f"patch_3d must be (S, S, D) with equal in-plane sides, got {patch_3d}")
        self.save_hyperparameters()
        self.vocab = PromptVocab(modalities=tuple(modalities), labels=tuple(labels))
        self.train_set = self.val_set = None

    def prepare_data(self) -> None:
        h = self.hparams
        if self.trainer is not None:  # output folders first: a bad one stops the run before any work
            from apps.medseg.predict import check_run_outputs

            check_run_outputs(self.trainer)
        if h.root is None and h.image is None and not (Path(h.root_cache) / "dataset.json").exists():
            from apps.medseg.phantom import write_phantom_msd
            from apps.medseg.writer import GenerateError

            problem = output_dir_problem(h.root_cache, "--data.init_args.root_cache")
            if problem:
                raise GenerateError(problem)

            write_phantom_msd(h.root_cache, n_cases=h.phantom_cases, modality="CT", seed=h.phantom_seed)
        # read the data now: Lightning calls prepare_data before its logger creates lightning_logs/version_N,
        # so bad data stops a run without leaving an empty version folder (setup then reuses the sets)
        self.setup()

    def volumes(self) -> list:
        h = self.hparams
        if h.image is not None:
            src = LabelDict.from_json(resolve(h.labels_json), key=h.labels_key)
            sel, lut = src.select(list(h.labels))
            return [load_case(resolve(h.image), resolve(h.label), src, lut, sel, h.modality, spacing=h.spacing)]
        idx = read_dataset(resolve(h.root) if h.root is not None else Path(h.root_cache))
        sel, lut = idx.labels.select(list(h.labels))
        return [load_case(c.image, c.label, idx.labels, lut, sel, idx.modality, spacing=h.spacing) for c in idx.cases]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        h = self.hparams
        if h.patch_3d is not None:
            vols = [_crop_z(v, tuple(h.z_range)) for v in self.volumes()]
            patch = tuple(int(v) for v in h.patch_3d)
            self.train_set = PatchDataset3D(vols, self.vocab, patch=patch, samples=h.patches_per_epoch, seed=0)
            self.val_set = PatchDataset3D(vols, self.vocab, patch=patch, samples=8, seed=10**6)
            return
        full = SliceDataset(self.volumes(), self.vocab, size=h.size, context=h.context, z_range=tuple(h.z_range))
        n = len(full)
        val_idx = set(range(0, n, 10)) if n >= 10 else {0}
        self.train_set = full
        self.val_set = torch.utils.data.Subset(full, sorted(val_idx))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True, drop_last=False,
                          num_workers=self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """The validation slices' prompts, each with ``seed`` = its index (pair i depends only on seed i)."""
        return DataLoader(_Seeded(self.val_set), batch_size=self.hparams.batch_size,
                          num_workers=self.hparams.num_workers)


def _crop_z(vol, z_range: tuple[float, float]):
    """The volume restricted to a fraction ``(lo, hi)`` of its z extent (the same rule as ``SliceDataset``)."""
    nz = vol.image.shape[2]
    lo, hi = int(round(z_range[0] * nz)), int(round(z_range[1] * nz))
    if hi <= lo:
        raise ValueError(f"{vol.case_id}: z_range {z_range} keeps no slice of {nz}")
    return dataclasses.replace(vol, image=vol.image[:, :, lo:hi], label=vol.label[:, :, lo:hi])


class _Seeded(torch.utils.data.Dataset):
    """Adds ``seed`` = item index to every item of a dataset of dicts."""

    def __init__(self, base) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        return {**self.base[i], "seed": torch.tensor(i)}
