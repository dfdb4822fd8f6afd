"""MONAI preprocessing/augmentation, the inverse to the native grid, and the DataModule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.echo import camus
from apps.echo.data import EchoDataModule
from apps.echo.metrics import overlap
from apps.echo.transforms import augment, model_spacing, preprocess, to_model, to_native


def test_preprocess_pads_resizes_and_inverts(camus2023):
    s = [x for x in camus.scan(camus2023) if x.phase == "ED"][0]
    image, label, spacing = camus.load_sample(s)
    out = preprocess(64)({"image": image.astype(np.float32) / 255, "mask": (label == 1).astype(np.float32)})
    assert out["image"].shape == (1, 64, 64) and out["mask"].shape == (1, 64, 64)
    assert set(torch.unique(out["mask"]).tolist()) <= {0.0, 1.0} and float(out["image"].max()) <= 1.0
    back = to_native(out["mask"][0], image.shape) >= 0.5
    assert back.shape == image.shape and overlap(back, label == 1)[0] > 0.93
    assert torch.allclose(to_model(image, 64), out["image"])
    assert model_spacing(image.shape, spacing, 64) == pytest.approx((spacing[0] * 96 / 64, spacing[1] * 96 / 64))


def test_augment_keeps_mask_binary_and_is_seeded():
    d = {"image": torch.rand(1, 32, 32), "mask": (torch.rand(1, 32, 32) > 0.5).float()}
    a = augment(3)(dict(d))
    b = augment(3)(dict(d))
    assert set(torch.unique(torch.as_tensor(a["mask"])).tolist()) <= {0.0, 1.0}
    assert torch.allclose(torch.as_tensor(a["image"]), torch.as_tensor(b["image"]))


def test_datamodule_on_camus_layout(camus2023):
    dm = EchoDataModule(source="camus", root=str(camus2023), image_size=32, batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 1, 32, 32) and batch["mask"].shape == (4, 1, 32, 32)
    split = dm.split()
    train_patients = {k.split("_")[0] for k in dm.sets["training"].keys}
    val_patients = {k.split("_")[0] for k in dm.sets["validation"].keys}
    assert train_patients == set(split["training"]) and not train_patients & val_patients


def test_datamodule_rejects_bad_options():
    with pytest.raises(ValueError, match="source must be one of"):
        EchoDataModule(source="dicom")
    with pytest.raises(ValueError, match="views must be drawn from"):
        EchoDataModule(views=("3CH",))


def test_datamodule_on_echonet_layout(echonet_root):
    dm = EchoDataModule(source="echonet", root=str(echonet_root), image_size=32, batch_size=2)
    dm.setup("fit")
    assert len(dm.sets["training"]) == 2  # one TRAIN video → its ED and ES frames
    batch = next(iter(dm.val_dataloader()))
    assert batch["mask"].sum() > 0 and batch["key"][0].endswith(("_ED", "_ES"))
