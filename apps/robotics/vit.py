"""A small Vision Transformer observation encoder, trained jointly from scratch (no pretrained weights).

The issue asks for "a small CNN or ViT trained jointly"; this is the ViT option of `DustPolicyNet`
(``encoder="vit"``). It returns the same ``(B, C, g, g)`` feature map as the CNN, so the observation
projection, the EMA self-target and the future tokens work unchanged for either encoder.

    image (B, 3, S, S) -> non-overlapping p x p patches (S/p)^2 tokens, Linear to D, + learned positions
      -> depth x [x + Attn(LN(x)); x + MLP(LN(x))] (pre-norm, SDPA through the core's Attention)
      -> LN -> (B, D, S/p, S/p) -> adaptive average pool to (B, D, g, g)

No class token: the pooled patch grid is the output, as for the CNN. LayerNorm (not BatchNorm) keeps the
encoder EMA-safe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dualsci.nn import Attention, Mlp


class ViTBlock(nn.Module):
    """Pre-norm transformer encoder block: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qk_norm=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, L, D)`` -> ``(B, L, D)``."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTEncoder(nn.Module):
    """Small ViT: ``(B, 3, S, S)`` normalised image -> ``(B, dim, grid, grid)`` feature map.

    Args:
        image_size: side S of the images it will see (the crop size when cropping).
        patch: patch side p (``S % p == 0``).
        dim: token width (also the output channel count ``out_channels``).
        depth: number of encoder blocks. num_heads: attention heads (``dim % num_heads == 0``).
        grid: side of the pooled output map.
    """

    def __init__(self, image_size: int, patch: int = 12, dim: int = 64, depth: int = 2, num_heads: int = 4,
                 grid: int = 4, mlp_ratio: float = 4.0):
        super().__init__()
        if patch < 1 or image_size % patch:
            raise ValueError(f"vit_patch ({patch}) must divide the encoder input size ({image_size}); "
                             f"e.g. 12 for 84 or 96, 8 for 32")
        if depth < 1:
            raise ValueError(f"vit_depth must be >= 1, got {depth}")
        if dim % num_heads:
            raise ValueError(f"vit_dim ({dim}) must be divisible by vit_heads ({num_heads})")
        self.image_size, self.patch, self.side, self.grid = image_size, patch, image_size // patch, grid
        self.out_channels = dim
        # A strided convolution with kernel = stride = p is exactly "cut into patches, then Linear".
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        # ViT-style position init: N(0, 0.02²) truncated at ±2σ.
        self.pos = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, self.side ** 2, dim), std=0.02, a=-0.04, b=0.04))
        self.blocks = nn.ModuleList(ViTBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, 3, S, S)`` -> ``(B, dim, grid, grid)``."""
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"ViT encoder built for {self.image_size}x{self.image_size} inputs, "
                             f"got {tuple(x.shape[-2:])}")
        tok = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos  # (B, n², D)
        for block in self.blocks:
            tok = block(tok)
        tok = self.norm(tok)
        fmap = tok.transpose(1, 2).reshape(x.shape[0], -1, self.side, self.side)
        return F.adaptive_avg_pool2d(fmap, self.grid)

