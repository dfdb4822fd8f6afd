"""Datasets and the LightningDataModule: phantom (embedded default), CAMUS, EchoNet-Dynamic.

A batch is ``{"image": (B, 1, S, S) float [0, 1], "mask": (B, 1, S, S) {0, 1} (LV cavity),
"key": list[str]}``. Splits are by patient (CAMUS) or by FileList ``Split`` (EchoNet).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from apps.echo import camus, echonet
from apps.echo.transforms import augment, preprocess
from dualsci.training import run_output_problem

Source = Literal["phantom", "camus", "echonet"]
SOURCES = ("phantom", "camus", "echonet")


class EchoFrames(Dataset):
    """Preprocessed frames held in memory; optional MONAI augmentation per access.

    Args:
        items: ``[(key, image (H, W) uint8, mask (H, W) {0,1})]``.
    """

    def __init__(self, items: list[tuple[str, np.ndarray, np.ndarray]], size: int = 128, train: bool = False, seed: int = 0):
        pre = preprocess(size)
        self.keys = [k for k, _, _ in items]
        cooked = [pre({"image": img.astype(np.float32) / 255.0, "mask": (m > 0).astype(np.float32)}) for _, img, m in items]
        self.images = torch.stack([c["image"] for c in cooked]) if cooked else torch.zeros(0, 1, size, size)
        self.masks = torch.stack([c["mask"] for c in cooked]) if cooked else torch.zeros(0, 1, size, size)
        self.aug = augment(seed) if train else None

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict:
        d = {"image": self.images[i], "mask": self.masks[i]}
        if self.aug is not None:
            d = self.aug(d)
            d = {k: torch.as_tensor(v).float() for k, v in d.items()}
        return {"image": d["image"], "mask": d["mask"], "key": self.keys[i]}


def camus_items(root: str | os.PathLike, patients: list[str], views=camus.VIEWS, half_sequence: bool = False) -> list:
    """``[(key, image, LV mask)]`` for the listed patients."""
    wanted = set(patients)
    out = []
    for s in camus.scan(root, views=views, half_sequence=half_sequence):
        if s.patient in wanted and s.gt is not None:
            image, label, _ = camus.load_sample(s)
            out.append((s.key, image, (label == 1).astype(np.uint8)))
    return out


def echonet_items(root: str | os.PathLike, split: str) -> list:
    out = []
    for v in echonet.scan(root, split=split, check_frames=False):
        for role, image, mask in echonet.traced_frames(v):
            out.append((f"{v.name}_{role}", image, mask))
    return out


def default_phantom_root(n_patients: int, seed: int, shape: tuple[int, int]) -> Path:
    return Path(os.environ.get("DUALSCI_ECHO_CACHE", "outputs/echo_cache")) / f"camus2023_n{n_patients}_s{seed}_{shape[0]}x{shape[1]}"


class EchoDataModule(pl.LightningDataModule):
    """LV segmentation data.

    Args:
        source: ``"phantom"`` (synthetic CAMUS-2023-layout files written on first use), ``"camus"`` or ``"echonet"``.
        root: dataset folder (phantom: where to write; default ``$DUALSCI_ECHO_CACHE`` or ``outputs/echo_cache``).
        image_size: model grid side S.
        n_patients, phantom_shape, seed: phantom generator settings.
        fold: CAMUS legacy fold 1..10 instead of the official split (None).
        views: CAMUS views to use.
        half_sequence: CAMUS 2023: train on every frame of the half sequences (GT on all frames).
    """

    def __init__(self, source: str = "phantom", root: str | None = None, image_size: int = 128, batch_size: int = 8,
                 n_patients: int = 40, phantom_shape: tuple[int, int] = (256, 208), seed: int = 0,
                 fold: int | None = None, views: tuple[str, ...] = ("2CH", "4CH"), half_sequence: bool = False,
                 augment: bool = True, num_workers: int = 0):
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        for v in views:
            if v not in camus.VIEWS:
                raise ValueError(f"views must be drawn from {camus.VIEWS}, got {v!r}")
        self.save_hyperparameters()
        self.source, self.image_size, self.batch_size = source, image_size, batch_size
        self.root = Path(root) if root else (default_phantom_root(n_patients, seed, tuple(phantom_shape)) if source == "phantom" else None)
        if self.root is None:
            raise ValueError(f"source={source!r} needs root= (the dataset folder)")
        self.sets: dict[str, EchoFrames] = {}

    def prepare_data(self) -> None:
        """Write the phantom if needed, then read the stage's splits: Lightning calls this before its
        logger creates ``lightning_logs/version_N``, so bad data stops a run without leaving that folder."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:  # output folders the run cannot create stop it here too, before any work
            from apps.echo.pipeline import InputError

            problem = run_output_problem(trainer)
            if problem:
                raise InputError(problem)
        if self.source == "phantom" and not self.root.exists():
            from apps.echo.pipeline import check_out
            from apps.echo.writers import write_camus_2023

            check_out(self.root, option="--data.init_args.root")

            write_camus_2023(self.root, self.hparams.n_patients, self.hparams.seed, tuple(self.hparams.phantom_shape))
        state = getattr(getattr(self, "trainer", None), "state", None)
        if state is not None and state.fn is not None:
            self._build_stage(state.fn.value)

    def _build_stage(self, stage: str | None) -> None:
        """Datasets for ``stage`` (``fit | validate | test | predict``; None: all), cached in ``self.sets``."""
        if stage in (None, "fit"):
            self._build("training", True)
            self._build("validation", False)
        if stage in (None, "validate"):
            self._build("validation", False)
        if stage in (None, "test", "predict"):
            self._build("testing", False)

    def split(self) -> dict[str, list[str]]:
        if self.source == "echonet":
            return {"training": ["TRAIN"], "validation": ["VAL"], "testing": ["TEST"]}
        if self.hparams.fold is not None:
            return camus.legacy_fold(self.root, self.hparams.fold)
        return camus.official_split(self.root)

    def _build(self, group: str, train: bool) -> EchoFrames:
        if group not in self.sets:
            members = self.split()[group]
            if self.source == "echonet":
                items = echonet_items(self.root, members[0])
            else:
                items = camus_items(self.root, members, tuple(self.hparams.views), self.hparams.half_sequence)
            if not items:  # the source's own error class: the CLI prints it as one line, exit 2
                error = echonet.EchoNetError if self.source == "echonet" else camus.CamusError
                raise error(f"{self.root}: the {group} split is empty")
            self.sets[group] = EchoFrames(items, self.image_size, train=train and self.hparams.augment, seed=self.hparams.seed)
        return self.sets[group]

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()
        self._build_stage(stage)

    def _loader(self, group: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.sets[group], batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.hparams.num_workers, drop_last=shuffle and len(self.sets[group]) > self.batch_size)

    def train_dataloader(self):
        return self._loader("training", True)

    def val_dataloader(self):
        return self._loader("validation", False)

    def test_dataloader(self):
        return self._loader("testing", False)

    def predict_dataloader(self):
        return self._loader("testing", False)
