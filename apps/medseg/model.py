"""The paired image/mask network: the core's dual-stream transformer with Joint Cross-Attention.

Stream a = image, stream b = mask (core convention: a then b). Both streams are patchified on the
same grid and get the same RoPE (row, col) coordinates, so pixel i of the image and pixel i of the
mask have zero relative rotation. ``attn_mode="cross"`` is MedSegFactory's Joint Cross-Attention
(each stream queries only the other); ``"joint"`` (one softmax over both) and ``"self"`` (no
interaction, ablation) are options.

Masks are discrete-safe: a label map becomes K one-hot channels or ⌈log₂K⌉ analog bits in {-1, 1}
(Chen et al. 2022), diffused as a Gaussian stream in pixel space and decoded by argmax / sign —
never as grey levels.

Prompts are routed per stream (MedSegFactory gives the image branch an image prompt and the mask
branch a label prompt): the image stream is conditioned on the full prompt (modality, region,
pathology, labels) through the core's ``cond_a``, the mask stream only on its label fields (labels,
pathology: a label map does not depend on the modality) through ``cond_b``. Each slot has its own
learned embedding table and its own null token, so each can be dropped for guidance.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence, get_args

import torch
from torch import Tensor, nn

from apps.medseg.labels import LabelDict
from apps.medseg.prompts import PromptVocab
from dualsci.nn import (DualStreamConfig, DualStreamTransformer, grid_coords_2d, grid_coords_3d, patchify_2d,
                        patchify_3d, unpatchify_2d, unpatchify_3d)

MaskEncoding = Literal["onehot", "bits"]
AttnMode = Literal["cross", "joint", "self"]
CrossOrder = Literal["parallel", "sequential"]
SpatialDims = Literal[2, 3]
#: Prompt fields the mask stream is conditioned on (the image stream sees all fields).
MASK_PROMPT_FIELDS = ("pathology", "labels")


def _check(name: str, value: str, allowed_type) -> str:
    allowed = get_args(allowed_type)
    if value not in allowed:
        raise ValueError(f"{name}: unknown {value!r}; allowed: {list(allowed)}")
    return value


def encode_mask(mask: Tensor, num_classes: int, encoding: MaskEncoding) -> Tensor:
    """Label map ``(B, *S)`` long -> ``(B, M, *S)`` float in {-1, 1}.

    ``onehot``: M = K channels, +1 on the class channel. ``bits``: M = ⌈log₂K⌉ channels, bit j of the
    class id mapped 0 -> -1, 1 -> +1.
    """
    if encoding == "onehot":
        oh = torch.nn.functional.one_hot(mask.long(), num_classes).movedim(-1, 1)
        return oh.float() * 2 - 1
    nbits = mask_channels(num_classes, "bits")
    bits = (mask.long().unsqueeze(1) >> torch.arange(nbits, device=mask.device).view(1, -1, *([1] * (mask.ndim - 1)))) & 1
    return bits.float() * 2 - 1


def decode_mask(x: Tensor, num_classes: int, encoding: MaskEncoding) -> Tensor:
    """``(B, M, *S)`` continuous -> label map ``(B, *S)`` long.

    ``onehot``: argmax. ``bits``: sign -> integer; codes ≥ K (possible when K is not a power of two)
    fall back to the valid class whose code is nearest in L2 — so no id outside the dictionary and
    no "intermediate" class between two neighbours ever appears.
    """
    if encoding == "onehot":
        return x.argmax(1)
    codes = encode_mask(torch.arange(num_classes, device=x.device), num_classes, "bits")  # (K, M)
    flat = x.movedim(1, -1)  # (B, *S, M)
    d = ((flat.unsqueeze(-2) - codes) ** 2).sum(-1)  # (B, *S, K)
    return d.argmin(-1)


def mask_channels(num_classes: int, encoding: MaskEncoding) -> int:
    return num_classes if encoding == "onehot" else max(1, math.ceil(math.log2(num_classes)))


def _rope_axes(head_dim: int, spatial_dims: int) -> tuple[int, ...] | None:
    """RoPE split of the head dimension over the spatial axes: even parts, the remainder on the first axis.

    2-D keeps the earlier rule (halves when ``head_dim % 4 == 0``, else no RoPE); 3-D needs
    ``head_dim`` divisible by 2 with at least 2 per axis (else no RoPE)."""
    if spatial_dims == 2:
        return (head_dim // 2, head_dim - head_dim // 2) if head_dim % 4 == 0 else None
    if head_dim % 2 or head_dim < 6:
        return None
    base = (head_dim // 6) * 2
    return (head_dim - 2 * base, base, base)


class MedSegNet(nn.Module):
    """Image/mask dual-stream denoiser (pixel space).

    Args:
        labels: foreground label names (ids 1..K-1); with ``modalities``, ``regions``, ``pathologies``
            they define the prompt vocabulary and the label dictionary stored with the weights.
        image_size: side S of the square slices.
        image_channels: C (1 for 2-D, 1 + 2·context for 2.5-D).
        mask_encoding: ``"onehot"`` or ``"bits"``.
        patch: patch side p (tokens per stream: (S/p)²).
        dim, depth, num_heads, mlp_ratio: transformer size (``depth`` dual blocks).
        attn_mode: ``"cross"`` (Joint Cross-Attention), ``"joint"`` or ``"self"``.
        cross_order: ``"parallel"`` (as drawn in the paper) or ``"sequential"`` (as coded).
        prompt_dim: width of each prompt slot's learned embedding (= the core's ``cond_dim``).
        spatial_dims: 2 (axial slices ``(B, C, S, S)``) or 3 (volume patches ``(B, C, S, S, D)``, axes x, y, z
            as :class:`~apps.medseg.data.PatchDataset3D` gives them; tokens are ``p × p × patch_depth``
            blocks with 3-axis RoPE (x, y, z), so image and mask voxels at one place share coordinates).
        volume_depth: D, the z extent of a 3-D patch (``spatial_dims=3`` only).
        patch_depth: token extent along z (``spatial_dims=3`` only).
    """

    #: Version of the conditioning layout; checkpoints of an older layout are refused by the loader.
    #: 1 = both prompts concatenated into one global ``cond``; 2 = per-stream ``cond_a`` / ``cond_b``.
    COND_LAYOUT = 2

    def __init__(
        self,
        labels: Sequence[str] = ("liver", "spleen", "kidney_left", "kidney_right", "stomach", "liver_lesion"),
        modalities: Sequence[str] = ("CT", "MR"),
        regions: Sequence[str] = ("abdomen",),
        pathologies: Sequence[str] = ("none", "lesion"),
        image_size: int = 64,
        image_channels: int = 1,
        mask_encoding: MaskEncoding = "onehot",
        patch: int = 4,
        dim: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        attn_mode: AttnMode = "cross",
        cross_order: CrossOrder = "parallel",
        prompt_dim: int = 64,
        spatial_dims: SpatialDims = 2,
        volume_depth: int = 16,
        patch_depth: int = 4,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims: unknown {spatial_dims!r}; allowed: [2, 3]")
        if spatial_dims == 3 and volume_depth % patch_depth:
            raise ValueError(f"volume_depth={volume_depth} must be divisible by patch_depth={patch_depth}")
        self.mask_encoding = _check("mask_encoding", mask_encoding, MaskEncoding)
        _check("attn_mode", attn_mode, AttnMode)
        _check("cross_order", cross_order, CrossOrder)
        if image_size % patch:
            raise ValueError(f"image_size={image_size} must be divisible by patch={patch}")
        self.label_dict = LabelDict(("background", *labels))
        self.vocab = PromptVocab(tuple(modalities), tuple(regions), tuple(pathologies), tuple(labels))
        self.num_classes = self.label_dict.num_classes
        self.image_size, self.image_channels, self.patch = image_size, image_channels, patch
        self.spatial_dims = int(spatial_dims)
        #: spatial shape of one sample: (S, S) or (S, S, D)
        self.spatial_shape = (image_size, image_size) if spatial_dims == 2 else (image_size, image_size, volume_depth)
        self.token_patch = (patch, patch) if spatial_dims == 2 else (patch, patch, patch_depth)
        self.mask_channels = mask_channels(self.num_classes, mask_encoding)
        # Two tables on the same multi-hot vocabulary: image slot (all fields), mask slot (label fields).
        self.prompt_embed_image = nn.Linear(self.vocab.size, prompt_dim, bias=False)
        self.prompt_embed_mask = nn.Linear(self.vocab.size, prompt_dim, bias=False)
        self.register_buffer("mask_fields", self.vocab.field_mask(MASK_PROMPT_FIELDS), persistent=False)
        head_dim = dim // num_heads
        vol = math.prod(self.token_patch)
        self.config = DualStreamConfig(
            in_dim_a=image_channels * vol,
            in_dim_b=self.mask_channels * vol,
            dim=dim, num_heads=num_heads, depth_dual=depth, mlp_ratio=mlp_ratio,
            attn_mode=attn_mode, cross_order=cross_order, cond_dim=prompt_dim,
            rope_axes_dim=_rope_axes(head_dim, self.spatial_dims),
        )
        self.transformer = DualStreamTransformer(self.config)
        grid = [n // q for n, q in zip(self.spatial_shape, self.token_patch)]
        coords = grid_coords_2d(*grid, torch.device("cpu")) if spatial_dims == 2 else grid_coords_3d(*grid, torch.device("cpu"))
        self.register_buffer("pos", coords.float(), persistent=False)

    def forward(self, image: Tensor, mask: Tensor, t_image: Tensor, t_mask: Tensor,
                prompt_image: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor]:
        """One joint denoiser call.

        Args:
            image: (B, C, *spatial) noisy image; mask: (B, M, *spatial) noisy mask code (``spatial`` =
                ``self.spatial_shape``: (S, S) or (S, S, D)).
            t_image, t_mask: (B,) noise coordinates of each stream.
            prompt_image, prompt_mask: (B, V + 1) multi-hot prompt vectors (null token for dropped);
                the image slot reads every field, the mask slot only ``MASK_PROMPT_FIELDS`` (+ null).

        Returns:
            (B, C, *spatial) and (B, M, *spatial) network outputs (in the objective's parameterisation).
        """
        size, p = tuple(image.shape[2:]), self.token_patch
        if size != self.spatial_shape:
            raise ValueError(f"MedSegNet: image spatial shape {size} != the model's {self.spatial_shape}")
        patchify, unpatchify = (patchify_2d, unpatchify_2d) if self.spatial_dims == 2 else (patchify_3d, unpatchify_3d)
        cond_a, cond_b = self.prompt_conditions(prompt_image, prompt_mask)
        xa, xb = patchify(image, p), patchify(mask, p)
        ya, yb = self.transformer(xa, xb, t_image, t_mask, pos_a=self.pos, pos_b=self.pos, cond_a=cond_a, cond_b=cond_b)
        return unpatchify(ya, p, size), unpatchify(yb, p, size)

    def prompt_conditions(self, prompt_image: Tensor, prompt_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, V + 1) x 2 -> ``cond_a``, ``cond_b``: (B, prompt_dim) each (image slot, mask slot)."""
        return self.prompt_embed_image(prompt_image), self.prompt_embed_mask(prompt_mask * self.mask_fields)

    def encode_mask(self, mask: Tensor) -> Tensor:
        """(B, *spatial) long -> (B, M, *spatial) in {-1, 1}."""
        return encode_mask(mask, self.num_classes, self.mask_encoding)

    def decode_mask(self, x: Tensor) -> Tensor:
        """(B, M, *spatial) -> (B, *spatial) long."""
        return decode_mask(x, self.num_classes, self.mask_encoding)
