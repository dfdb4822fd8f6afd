"""Preprocessing and augmentation (MONAI dictionary transforms), and the way back to the native grid.

Preprocessing (card §3): image to [0, 1]; centre-pad to square; resize to ``size``² (image bilinear;
mask bilinear then thresholded at 0.5). Augmentation (train only, both keys where geometric): small
affine (±10°, ±8 % scale, ±4 % shift), gamma contrast, intensity scale, Gaussian blur (image only).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def preprocess(size: int = 128, with_mask: bool = True):
    """MONAI ``Compose`` mapping ``{"image": (H, W) float in [0, 1], "mask": (H, W) {0, 1}}`` to
    ``{"image": (1, size, size), "mask": (1, size, size)}`` float tensors."""
    from monai.transforms import AsDiscreted, Compose, EnsureChannelFirstd, EnsureTyped, Resized, SpatialPadd

    keys = ["image", "mask"] if with_mask else ["image"]
    steps = [
        EnsureChannelFirstd(keys=keys, channel_dim="no_channel"),
        _PadSquared(keys=keys),
        Resized(keys=keys, spatial_size=(size, size), mode="bilinear", align_corners=False, anti_aliasing=False),
    ]
    if with_mask:
        steps.append(AsDiscreted(keys=["mask"], threshold=0.5))
    steps.append(EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False))
    return Compose(steps)


class _PadSquared:
    """Centre-pad ``(C, H, W)`` to ``(C, S, S)``, S = max(H, W) (SpatialPadd with a per-sample size)."""

    def __init__(self, keys):
        self.keys = keys

    def __call__(self, data):
        from monai.transforms import SpatialPad

        d = dict(data)
        h, w = d[self.keys[0]].shape[-2:]
        pad = SpatialPad(spatial_size=(max(h, w), max(h, w)), method="symmetric")
        for k in self.keys:
            d[k] = pad(d[k])
        return d


def augment(seed: int = 0):
    """Random train-time augmentation on ``{"image": (1, S, S), "mask": (1, S, S)}``."""
    from monai.transforms import (AsDiscreted, Compose, RandAdjustContrastd, RandAffined, RandGaussianSmoothd,
                                  RandScaleIntensityd)

    t = Compose([
        RandAffined(keys=["image", "mask"], prob=0.7, rotate_range=np.deg2rad(10.0), scale_range=(0.08, 0.08),
                    translate_range=(5, 5), mode=("bilinear", "bilinear"), padding_mode="zeros"),
        AsDiscreted(keys=["mask"], threshold=0.5),
        RandAdjustContrastd(keys=["image"], prob=0.5, gamma=(0.75, 1.3)),
        RandScaleIntensityd(keys=["image"], prob=0.5, factors=0.15),
        RandGaussianSmoothd(keys=["image"], prob=0.3, sigma_x=(0.1, 0.6), sigma_y=(0.1, 0.6)),
    ])
    t.set_random_state(seed)
    return t


def to_model(image: np.ndarray, size: int = 128) -> torch.Tensor:
    """Native ``(H, W)`` image (uint8 or float in [0, 1]) → ``(1, size, size)`` float tensor."""
    img = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 or image.max() > 1.5 else 1.0)
    return preprocess(size, with_mask=False)({"image": img})["image"]


def to_native(prob: torch.Tensor | np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Model-grid map ``(..., S', S')`` → native ``(..., H, W)``: resize to the padded square, crop the pad
    (the inverse of :func:`preprocess`)."""
    x = torch.as_tensor(prob, dtype=torch.float32)
    lead = x.shape[:-2]
    x = x.reshape(-1, 1, *x.shape[-2:])
    h, w = shape
    s = max(h, w)
    x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
    top, left = (s - h) // 2, (s - w) // 2
    x = x[..., top:top + h, left:left + w]
    return x.reshape(*lead, h, w).numpy()


def model_spacing(shape: tuple[int, int], spacing: tuple[float, float], size: int) -> tuple[float, float]:
    """Pixel spacing ``(dy, dx)`` mm on the ``size``² model grid of an image of native ``shape``."""
    s = max(shape)
    return spacing[0] * s / size, spacing[1] * s / size
