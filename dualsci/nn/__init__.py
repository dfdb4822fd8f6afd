"""dualsci.nn: dual-stream transformer building blocks (contract: ``docs/core_api.md``)."""

from __future__ import annotations

from dualsci.nn.attention import (
    ATTN_MODES,
    CROSS_ORDERS,
    Attention,
    AttnMode,
    CrossOrder,
    DualAttention,
    QKNorm,
    key_padding_sdpa,
)
from dualsci.nn.blocks import DualStreamBlock, Mlp, SingleStreamBlock, StreamBlock
from dualsci.nn.embeddings import (
    CalendarEmbedding,
    TimestepEmbedding,
    calendar_features,
    grid_coords_2d,
    grid_coords_3d,
    patchify_2d,
    patchify_3d,
    unpatchify_2d,
    unpatchify_3d,
)
from dualsci.nn.rope import GeoRoPE, RopeND, RotaryTable, apply_rope, cat_tables
from dualsci.nn.transformer import DualStreamConfig, DualStreamTransformer, FinalLayer

__all__ = [
    "ATTN_MODES",
    "CROSS_ORDERS",
    "Attention",
    "AttnMode",
    "CalendarEmbedding",
    "CrossOrder",
    "DualAttention",
    "DualStreamBlock",
    "DualStreamConfig",
    "DualStreamTransformer",
    "FinalLayer",
    "GeoRoPE",
    "Mlp",
    "QKNorm",
    "RopeND",
    "RotaryTable",
    "SingleStreamBlock",
    "StreamBlock",
    "TimestepEmbedding",
    "apply_rope",
    "calendar_features",
    "cat_tables",
    "grid_coords_2d",
    "grid_coords_3d",
    "key_padding_sdpa",
    "patchify_2d",
    "patchify_3d",
    "unpatchify_2d",
    "unpatchify_3d",
]
