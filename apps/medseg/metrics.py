"""Evaluation metrics: a downstream MONAI UNet, Dice/HD95, alignment, Fréchet distance, statistics, memorisation.

Everything is weight-free: the only feature extractor is a segmentation UNet trained here, on real
data (its bottleneck features, mean- and std-pooled, serve the Fréchet distance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class SegData:
    """Slices for segmentation: images (N, C, S, S) float in [-1, 1], masks (N, S, S) long."""

    images: Tensor
    masks: Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, idx: Sequence[int] | Tensor) -> "SegData":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return SegData(self.images[idx], self.masks[idx])

    @staticmethod
    def cat(parts: Sequence["SegData"]) -> "SegData":
        parts = [p for p in parts if len(p)]
        return SegData(torch.cat([p.images for p in parts]), torch.cat([p.masks for p in parts]))


def make_unet(in_channels: int, num_classes: int, channels: Sequence[int] = (16, 32, 64)) -> nn.Module:
    """MONAI 2-D UNet for the downstream task (CPU-sized)."""
    from monai.networks.nets import UNet

    return UNet(2, in_channels, num_classes, channels=tuple(channels), strides=(2,) * (len(channels) - 1),
                num_res_units=1, norm="batch")


def augment(x: Tensor, y: Tensor, g: torch.Generator, rotate_deg: float = 10.0, scale: float = 0.1,
            shift: float = 0.06, intensity: float = 0.1) -> tuple[Tensor, Tensor]:
    """Random affine (rotation, isotropic scale, shift) and intensity jitter, the same warp for image and mask.

    No left-right flip: the label set has lateral classes (kidney_left / kidney_right), and a mirrored
    slice would carry the other side's label.

    Args:
        x: (B, C, S, S) images in [-1, 1]; y: (B, 1, S, S) long masks (warped by nearest neighbour).
        g: generator for every random draw (deterministic runs).

    Returns:
        the augmented ``(x, y)``, same shapes and dtypes.
    """
    B = x.shape[0]
    u = lambda *shape: torch.rand(*shape, generator=g) * 2 - 1  # noqa: E731 - uniform in [-1, 1]
    ang = u(B) * math.radians(rotate_deg)
    sc = 1 + scale * u(B)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, shift * u(B)], -1), torch.stack([sin, cos, shift * u(B)], -1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # shift to [0, 2] so that zero padding fills with -1 (air after windowing) once shifted back
    xw = F.grid_sample(x + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1.0
    yw = F.grid_sample(y.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False).long()
    # intensity: contrast and brightness jitter, a little Gaussian noise
    a = 1 + intensity * u(B, 1, 1, 1)
    b = intensity * u(B, 1, 1, 1)
    noise = 0.5 * intensity * torch.rand(B, 1, 1, 1, generator=g) * torch.randn(xw.shape, generator=g)
    return (xw * a + b + noise).clamp(-1, 1), yw


def train_segmenter(data: SegData, num_classes: int, steps: int = 200, batch: int = 16, lr: float = 2e-3,
                    seed: int = 0, channels: Sequence[int] = (16, 32, 64), augmentation: bool = False) -> nn.Module:
    """Train a UNet with Dice + cross-entropy (MONAI ``DiceCELoss``), deterministic from ``seed``.

    ``augmentation=True`` applies :func:`augment` to every batch (used for the reference segmenter);
    the downstream runs keep the plain protocol (no augmentation) so that any gain comes from the data.
    """
    from monai.losses import DiceCELoss

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = make_unet(data.images.shape[1], num_classes, channels)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15)
    lossf = DiceCELoss(to_onehot_y=True, softmax=True)
    net.train()
    n = len(data)
    for _ in range(steps):
        idx = torch.randint(0, n, (min(batch, max(n, 2)),), generator=g)
        x, y = data.images[idx], data.masks[idx][:, None]
        if augmentation:
            x, y = augment(x, y, g)
        loss = lossf(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@torch.no_grad()
def predict(net: nn.Module, images: Tensor, batch: int = 64) -> Tensor:
    """(N, C, S, S) -> (N, S, S) long label maps."""
    return torch.cat([net(images[i:i + batch]).argmax(1) for i in range(0, len(images), batch)])


def dice_hd95(pred: Tensor, target: Tensor, num_classes: int, spacing: float = 1.0) -> dict[str, float]:
    """Mean foreground Dice and HD95 (MONAI metrics, empty classes ignored) over a set of slices.

    Args:
        pred, target: (N, S, S) long.
        spacing: pixel size in mm (HD95 is reported in mm).

    Returns:
        ``{"dice": mean over (slice, class) pairs where the class is in target, "hd95": same, in mm,
        "dice_per_class": [...]}`` (NaN where never defined).
    """
    from monai.metrics import DiceMetric, HausdorffDistanceMetric

    p = F.one_hot(pred.long(), num_classes).movedim(-1, 1).float()
    t = F.one_hot(target.long(), num_classes).movedim(-1, 1).float()
    dm = DiceMetric(include_background=False, reduction="none", ignore_empty=True, num_classes=num_classes)
    dice = dm(p, t)  # (N, K-1), NaN where target empty
    hm = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = hm(p, t) * spacing  # inf/NaN when pred or target empty
    present = t[:, 1:].flatten(2).sum(-1) > 0
    hd = torch.where(present & torch.isfinite(hd), hd, torch.nan)
    # A class present in the target but absent in the prediction: HD95 is undefined; count it as the
    # image diagonal (worst case) rather than dropping it, which would flatter bad models.
    missed = present & (p[:, 1:].flatten(2).sum(-1) == 0)
    hd = torch.where(missed, math.hypot(*target.shape[-2:]) * spacing, hd)
    return {"dice": _nanmean(dice), "hd95": _nanmean(hd),
            "dice_per_class": [_nanmean(dice[:, k]) for k in range(dice.shape[1])]}


def _nanmean(x: Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else float("nan")


# ------------------------------------------------------------------------------------------ features
@torch.no_grad()
def unet_features(net: nn.Module, images: Tensor, batch: int = 64) -> Tensor:
    """Bottleneck features of a MONAI UNet: mean- and std-pooled over space -> (N, 2·C_bottom)."""
    from monai.networks.layers.simplelayers import SkipConnection

    skips = [m for m in net.modules() if isinstance(m, SkipConnection)]
    bottom = skips[-1].submodule
    feats: list[Tensor] = []
    hook = bottom.register_forward_hook(lambda m, i, o: feats.append(torch.cat([o.mean((2, 3)), o.std((2, 3))], 1)))
    try:
        for i in range(0, len(images), batch):
            net(images[i:i + batch])
    finally:
        hook.remove()
    return torch.cat(feats)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (N, F) (MONAI's FID formula)."""
    from monai.metrics import FIDMetric

    return float(FIDMetric()(a.double(), b.double()))


def intensity_stats(data: SegData, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per label: mean and std intensity, GLCM contrast and homogeneity (skimage), area fraction, presence."""
    from skimage.feature import graycomatrix, graycoprops

    out: dict[str, dict[str, float]] = {}
    img = data.images[:, 0].numpy()
    msk = data.masks.numpy()
    q = np.clip(((img + 1) / 2 * 31).round(), 0, 31).astype(np.uint8)
    for k, name in enumerate(names):
        if k == 0:
            continue
        vals, contrast, homog = [], [], []
        for i in range(len(img)):
            m = msk[i] == k
            if m.sum() < 4:
                continue
            vals.append(img[i][m])
            ys, xs = np.where(m)
            crop = q[i, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            if min(crop.shape) >= 2:
                glcm = graycomatrix(crop, [1], [0, np.pi / 2], levels=32, symmetric=True, normed=True)
                contrast.append(float(graycoprops(glcm, "contrast").mean()))
                homog.append(float(graycoprops(glcm, "homogeneity").mean()))
        allv = np.concatenate(vals) if vals else np.array([np.nan])
        out[name] = {"mean": float(np.mean(allv)), "std": float(np.std(allv)),
                     "glcm_contrast": float(np.mean(contrast)) if contrast else float("nan"),
                     "glcm_homogeneity": float(np.mean(homog)) if homog else float("nan"),
                     "presence": float(np.mean([(msk[i] == k).any() for i in range(len(msk))])),
                     "area_fraction": float((msk == k).mean())}
    return out


def memorisation(generated: Tensor, train: Tensor, held_out: Tensor, size: int = 32) -> dict[str, float]:
    """Nearest-neighbour L2 distance (images resized to ``size``) of generated -> train vs held-out -> train.

    A generator that copies its training set has generated->train distances well below the
    held-out->train baseline. Reports medians, their ratio, and the fraction of generated images
    closer to a training image than the 5th percentile of the baseline.
    """
    def flat(x: Tensor) -> Tensor:
        return F.interpolate(x[:, :1].float(), size=(size, size), mode="area").flatten(1)

    tr = flat(train)
    d_gen = torch.cdist(flat(generated), tr).min(1).values
    d_val = torch.cdist(flat(held_out), tr).min(1).values
    p5 = float(torch.quantile(d_val, 0.05))
    return {"nn_median_generated": float(d_gen.median()), "nn_median_heldout": float(d_val.median()),
            "ratio": float(d_gen.median() / d_val.median().clamp(min=1e-8)),
            "fraction_below_heldout_p5": float((d_gen < p5).float().mean())}
