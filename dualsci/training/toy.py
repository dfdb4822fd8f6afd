"""The core's toy problem: two coupled streams with a known coupling, for the demo and ``dualsci``.

Each sample draws a radius ``r ~ U(0.5, 1.5)`` and a phase ``φ ~ U(0, 2π)``.
Stream a: ``L_a`` points on the circle of radius r, ``a_i = r·(cos(θ_i + φ), sin(θ_i + φ))``,
``θ_i = 2π·i/L_a`` — tokens ``(L_a, 2)``.
Stream b: a 1-D signal over the same turn, ``b_j = r·sin(2·(θ_j + φ))``, ``θ_j = 2π·j/L_b`` —
tokens ``(L_b, 1)``.
Both streams carry r and φ, so a joint model must agree on them; :func:`coupling_error` measures
how well generated pairs do. RoPE positions are the token angles in units of ``2π/L_a``, so the two
streams share one coordinate axis.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


def make_toy_pairs(n: int, L_a: int = 16, L_b: int = 32, seed: int = 0) -> dict[str, Tensor]:
    """``n`` coupled pairs: ``a: (n, L_a, 2)``, ``b: (n, L_b, 1)``, ``pos_a: (n, L_a, 1)``, ``pos_b: (n, L_b, 1)``,
    and the latent ``r: (n,)``, ``phase: (n,)``."""
    g = torch.Generator().manual_seed(seed)
    r = 0.5 + torch.rand(n, generator=g)
    phase = 2 * math.pi * torch.rand(n, generator=g)
    theta_a = 2 * math.pi * torch.arange(L_a) / L_a
    theta_b = 2 * math.pi * torch.arange(L_b) / L_b
    angle_a = theta_a[None] + phase[:, None]
    a = r[:, None, None] * torch.stack([angle_a.cos(), angle_a.sin()], dim=-1)
    b = (r[:, None] * torch.sin(2 * (theta_b[None] + phase[:, None])))[..., None]
    pos_a = torch.arange(L_a, dtype=torch.float32)[None, :, None].expand(n, L_a, 1)
    pos_b = (torch.arange(L_b, dtype=torch.float32) * (L_a / L_b))[None, :, None].expand(n, L_b, 1)
    return {"a": a, "b": b, "pos_a": pos_a.contiguous(), "pos_b": pos_b.contiguous(), "r": r, "phase": phase}


def coupling_error(a: Tensor, b: Tensor) -> dict[str, float]:
    """How far generated pairs are from the toy's coupling and shape.

    Args:
        a: ``(B, L_a, 2)`` generated circles; b: ``(B, L_b, 1)`` generated signals.

    Returns:
        ``radius_gap``: mean ``|r_a − r_b|`` with ``r_a`` the mean point norm of a and ``r_b`` the
        amplitude of b (``√(2·mean b²)``); 0 for data. ``ring_spread``: mean std of the point norms
        within a (0 for a perfect circle). ``radius_gap_shuffled``: the same gap after pairing each a
        with another sample's b — what an uncoupled model would score.
    """
    r_a = a.norm(dim=-1).mean(dim=1)
    r_b = (2 * b.squeeze(-1).pow(2).mean(dim=1)).sqrt()
    return {
        "radius_gap": float((r_a - r_b).abs().mean()),
        "ring_spread": float(a.norm(dim=-1).std(dim=1).mean()),
        "radius_gap_shuffled": float((r_a - r_b.roll(1)).abs().mean()),
    }


class _Pairs(Dataset):
    def __init__(self, data: dict[str, Tensor]) -> None:
        self.data = {k: data[k] for k in ("a", "b", "pos_a", "pos_b")}

    def __len__(self) -> int:
        return len(self.data["a"])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.data.items()}


class ToyDualDataModule(pl.LightningDataModule):
    """Coupled circle/signal pairs (see module docstring); batches are dicts of ``(B, L, C)`` tensors.

    Args:
        n_train: training pairs; n_val: validation pairs (another seed).
        L_a: points per circle; L_b: samples per signal.
        batch_size: batch size; seed: seed of the training set.

    Attributes:
        in_dim_a, in_dim_b: token feature sizes of the streams (2 and 1), for ``build_cli`` links
            with ``apply_on="instantiate"`` into the network's config.
    """

    in_dim_a = 2
    in_dim_b = 1

    def __init__(
        self, n_train: int = 4096, n_val: int = 256, L_a: int = 16, L_b: int = 32, batch_size: int = 64, seed: int = 0
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if min(n_train, n_val, L_a, L_b, batch_size) < 1:
            raise ValueError("ToyDualDataModule: n_train, n_val, L_a, L_b and batch_size must be >= 1")
        self.n_train, self.n_val, self.L_a, self.L_b = n_train, n_val, L_a, L_b
        self.batch_size, self.seed = batch_size, seed

    def train_dataloader(self) -> DataLoader:
        data = make_toy_pairs(self.n_train, self.L_a, self.L_b, self.seed)
        return DataLoader(_Pairs(data), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        data = make_toy_pairs(self.n_val, self.L_a, self.L_b, self.seed + 1)
        return DataLoader(_Pairs(data), batch_size=self.batch_size)

    test_dataloader = val_dataloader
    predict_dataloader = val_dataloader
