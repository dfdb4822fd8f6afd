"""Transformer blocks with adaLN-Zero conditioning: dual-stream, single-stream and per-stream tail.

Guide ``core.md`` §1.1 and §1.5. Every block is the identity at initialisation because the
modulation Linear (which produces the residual gates α) is zero-initialised. Conditioning ``c`` is
``(B, D)`` (one vector per sample, modulation computed once per block per sample) or per-token
``(B, L, D)`` (e.g. per-token times), broadcast the same way. Norms (LayerNorm without affine,
eps 1e-6) run on the fp32 residual stream; under ``torch.autocast`` only the Linears and SDPA drop
to bf16.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dualsci.nn.attention import (
    AttnMode,
    CrossOrder,
    DualAttention,
    Attention,
    QKNorm,
    key_padding_sdpa,
    merge_heads,
    norm_rope,
    row_keep,
    split_heads,
    zero_rows,
)
from dualsci.nn.rope import RotaryTable

LN_EPS = 1e-6


class Mlp(nn.Module):
    """``Linear(D, r·D) → GELU(tanh) → Linear(r·D, D)``."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def zero_linear(in_dim: int, out_dim: int) -> nn.Linear:
    """A Linear with zero weight and bias (adaLN-Zero modulation, output heads)."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def modulation(mod: nn.Linear, c: Tensor, n: int) -> tuple[Tensor, ...]:
    """``n`` modulation vectors from ``c: (B, D)`` or ``(B, L, D)``, each ``(B, 1 or L, D)``."""
    m = mod(F.silu(c))
    if m.ndim == 2:
        m = m.unsqueeze(1)
    return m.chunk(n, dim=-1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """``LN(x)·(1 + scale) + shift`` with a non-affine LayerNorm (eps 1e-6)."""
    return torch.addcmul(shift, F.layer_norm(x, x.shape[-1:], eps=LN_EPS), 1 + scale)


def mlp_residual(x: Tensor, mlp: nn.Module, shift: Tensor, scale: Tensor, gate: Tensor) -> Tensor:
    """``x + gate ⊙ MLP(modulate(x))``."""
    return torch.addcmul(x, gate, mlp(modulate(x, shift, scale)))


def check_tokens(name: str, x: Tensor, dim: int, batch: int | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, L, dim)`` (and ``B == batch`` when given)."""
    if x.ndim != 3 or x.shape[-1] != dim or (batch is not None and x.shape[0] != batch):
        b = "B" if batch is None else str(batch)
        raise ValueError(f"{name} must be ({b}, L, {dim}), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")


def check_cond(name: str, c: Tensor, batch: int, length: int, dim: int) -> None:
    """Raise unless ``c`` is ``(B, D)`` or ``(B, L, D)``."""
    ok = (c.ndim == 2 and tuple(c.shape) == (batch, dim)) or (
        c.ndim == 3 and tuple(c.shape) == (batch, length, dim)
    )
    if not ok:
        raise ValueError(f"{name} must be ({batch}, {dim}) or ({batch}, {length}, {dim}), got {tuple(c.shape)}")


def check_mask(name: str, mask: Tensor | None, batch: int, length: int) -> None:
    """Raise unless ``mask`` is ``None`` or a bool ``(B, L)`` tensor."""
    if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (batch, length)):
        raise ValueError(
            f"{name} must be a bool tensor of shape ({batch}, {length}) (True = real token), "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )


class DualStreamBlock(nn.Module):
    """MMDiT-style block: separate weights per stream, attention across streams by ``attn_mode``.

    Args:
        dim: model width ``D``.
        num_heads: attention heads ``H``.
        mlp_ratio: MLP hidden width / ``D``.
        attn_mode: ``"joint" | "cross" | "self"`` (see :mod:`dualsci.nn.attention`).
        cross_order: ``"parallel" | "sequential"`` for ``"cross"``.
        qk_norm: RMS-normalise queries and keys per head.

    Parameters: per stream 6D² (modulation) + 3D² (qkv) + D² (out) + 2·r·D² (MLP), i.e. 36·D² for
    ``r = 4``, plus biases and QK-norm scales.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attn_mode: AttnMode = "joint",
        cross_order: CrossOrder = "parallel",
        qk_norm: bool = True,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.attn = DualAttention(dim, num_heads, attn_mode, cross_order, qk_norm)
        self.mod_a = zero_linear(dim, 6 * dim)
        self.mod_b = zero_linear(dim, 6 * dim)
        self.mlp_a = Mlp(dim, mlp_ratio)
        self.mlp_b = Mlp(dim, mlp_ratio)

    def forward(
        self,
        x_a: Tensor,
        x_b: Tensor,
        c_a: Tensor,
        c_b: Tensor,
        rope_a: RotaryTable | None = None,
        rope_b: RotaryTable | None = None,
        mask_a: Tensor | None = None,
        mask_b: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One block.

        Args:
            x_a: ``(B, L_a, D)``; x_b: ``(B, L_b, D)``.
            c_a: ``(B, D)`` or ``(B, L_a, D)``; c_b: ``(B, D)`` or ``(B, L_b, D)``.
            rope_a, rope_b: rotation tables for each stream's tokens, or ``None``.
            mask_a, mask_b: ``(B, L_s)`` bool, True = real token, or ``None``.

        Returns:
            ``(x_a, x_b)`` with the input shapes.
        """
        check_tokens("x_a", x_a, self.dim)
        batch = x_a.shape[0]
        check_tokens("x_b", x_b, self.dim, batch)
        check_cond("c_a", c_a, batch, x_a.shape[1], self.dim)
        check_cond("c_b", c_b, batch, x_b.shape[1], self.dim)
        check_mask("mask_a", mask_a, batch, x_a.shape[1])
        check_mask("mask_b", mask_b, batch, x_b.shape[1])
        shift_a1, scale_a1, gate_a1, shift_a2, scale_a2, gate_a2 = modulation(self.mod_a, c_a, 6)
        shift_b1, scale_b1, gate_b1, shift_b2, scale_b2, gate_b2 = modulation(self.mod_b, c_b, 6)
        o_a, o_b = self.attn(
            modulate(x_a, shift_a1, scale_a1),
            modulate(x_b, shift_b1, scale_b1),
            rope_a,
            rope_b,
            mask_a,
            mask_b,
        )
        x_a = mlp_residual(torch.addcmul(x_a, gate_a1, o_a), self.mlp_a, shift_a2, scale_a2, gate_a2)
        x_b = mlp_residual(torch.addcmul(x_b, gate_b1, o_b), self.mlp_b, shift_b2, scale_b2, gate_b2)
        return x_a, x_b


class StreamBlock(nn.Module):
    """DiT-style block for one stream (self-attention then MLP, adaLN-Zero): the per-stream tail.

    Args:
        dim: model width ``D``.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / ``D``.
        qk_norm: RMS-normalise queries and keys.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.attn = Attention(dim, num_heads, qk_norm)
        self.mod = zero_linear(dim, 6 * dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(
        self, x: Tensor, c: Tensor, rope: RotaryTable | None = None, mask: Tensor | None = None
    ) -> Tensor:
        """``x: (B, L, D)``, ``c: (B, D)`` or ``(B, L, D)``, ``mask: (B, L)`` -> ``(B, L, D)``."""
        check_tokens("x", x, self.dim)
        check_cond("c", c, x.shape[0], x.shape[1], self.dim)
        check_mask("mask", mask, x.shape[0], x.shape[1])
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation(self.mod, c, 6)
        x = torch.addcmul(x, gate1, self.attn(modulate(x, shift1, scale1), rope, mask))
        return mlp_residual(x, self.mlp, shift2, scale2, gate2)


class SingleStreamBlock(nn.Module):
    """FLUX-style parallel block over one (concatenated) sequence.

    One Linear produces ``[q, k, v, mlp_in]``, attention and ``GELU(mlp_in)`` run side by side, one
    Linear consumes ``[attn, GELU(mlp_in)]``; 3·D modulation (shift, scale, gate). Parameters
    ``3D² + (3 + r)·D² + (1 + r)·D² = 15·D²`` for ``r = 4``.

    Args:
        dim: model width ``D``.
        num_heads: attention heads ``H``.
        mlp_ratio: MLP hidden width / ``D``.
        qk_norm: RMS-normalise queries and keys.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SingleStreamBlock: dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim, self.num_heads = dim, num_heads
        self.hidden = int(dim * mlp_ratio)
        self.mod = zero_linear(dim, 3 * dim)
        self.lin1 = nn.Linear(dim, 3 * dim + self.hidden)
        self.lin2 = nn.Linear(dim + self.hidden, dim)
        head_dim = dim // num_heads
        self.q_norm: nn.Module = QKNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = QKNorm(head_dim) if qk_norm else nn.Identity()

    def _modulation(
        self, c: Tensor | Sequence[Tensor], lengths: Sequence[int] | None, length: int, batch: int
    ) -> tuple[Tensor, ...]:
        if isinstance(c, Tensor):
            check_cond("c", c, batch, length, self.dim)
            return modulation(self.mod, c, 3)
        # Per-segment conditions (e.g. c_a over a's tokens, c_b over b's): modulation is computed per
        # sample and segment, then broadcast to tokens, instead of per token.
        if lengths is None or len(lengths) != len(c) or sum(lengths) != length:
            raise ValueError(
                f"lengths must give one token count per condition summing to L={length}, got {lengths}"
            )
        parts = []
        for i, (ci, n) in enumerate(zip(c, lengths)):
            check_cond(f"c[{i}]", ci, batch, n, self.dim)
            m = self.mod(F.silu(ci))
            parts.append(m.unsqueeze(1).expand(-1, n, -1) if m.ndim == 2 else m)
        return torch.cat(parts, dim=1).chunk(3, dim=-1)

    def forward(
        self,
        x: Tensor,
        c: Tensor | Sequence[Tensor],
        rope: RotaryTable | None = None,
        mask: Tensor | None = None,
        lengths: Sequence[int] | None = None,
    ) -> Tensor:
        """One parallel block.

        Args:
            x: ``(B, L, D)``.
            c: ``(B, D)``, ``(B, L, D)``, or a sequence of per-segment conditions (each ``(B, D)`` or
                ``(B, L_i, D)``) with ``lengths = (L_1, L_2, ...)`` summing to ``L``.
            rope: rotation table for the ``L`` tokens, or ``None``.
            mask: ``(B, L)`` bool, True = real token.
            lengths: segment lengths, only with a sequence ``c``.

        Returns:
            ``(B, L, D)``.
        """
        check_tokens("x", x, self.dim)
        batch, length = x.shape[:2]
        check_mask("mask", mask, batch, length)
        shift, scale, gate = self._modulation(c, lengths, length, batch)
        qkv, mlp_in = self.lin1(modulate(x, shift, scale)).split([3 * self.dim, self.hidden], dim=-1)
        q, k, v = split_heads(qkv, self.num_heads)
        q = norm_rope(q, self.q_norm, rope, v.dtype)
        k = norm_rope(k, self.k_norm, rope, v.dtype)
        o, has_key = key_padding_sdpa(q, k, v, mask)
        out = self.lin2(torch.cat([merge_heads(o), F.gelu(mlp_in, approximate="tanh")], dim=-1))
        return torch.addcmul(x, gate, zero_rows(out, row_keep(mask, has_key)))
