"""Attention over one or two token streams, with QK RMS-norm, RoPE and key-padding masks.

Guide ``core.md`` §1.1 and §1.3–1.4. Every attention goes through ``F.scaled_dot_product_attention``
on 4-D ``(B, H, L, d_h)`` tensors (5-D inputs fall back to the slow math path on CPU, §9).

Masks are ``(B, L)`` bool with **True = real token**; they mask keys, and the outputs of padded query
rows are set to exactly zero. A query row whose every key is padded would softmax over an empty set
(NaN): for such samples all keys are opened for the kernel and the output rows are zeroed afterwards,
so no NaN appears and padded content never reaches a real output.

Two-stream modes (``attn_mode``), streams ``a`` then ``b``:

* ``joint``: every token attends to all ``L_a + L_b`` keys — one SDPA over the concatenated sequence.
* ``self``: ``a → a`` and ``b → b`` (no interaction) — two SDPA calls, no wasted block-mask work.
* ``cross`` with ``cross_order="parallel"``: ``a`` queries read ``b``'s keys/values and ``b`` queries
  read ``a``'s (the block mask ``stream(i) ≠ stream(j)``), each output goes to its query's stream;
  two SDPA calls, any ``L_a``, ``L_b``.
* ``cross`` with ``cross_order="sequential"``: MedSegFactory's ``DualAttnProcessor`` code order
  (JCA, image = a, mask = b). First ``o_a = Attn(Q_b, K_a, V_a)``: b's tokens query a's content and
  the result is a's update; then ``o_b = Attn(Q̃, K_b, V_b)`` where ``Q̃ = W_q^a · o_a`` — **b's
  queries come from the already-updated a output**. Needs ``L_a == L_b`` on one aligned grid, as in
  MedSegFactory. Each stream's query weights are used once (b's in step 1, a's in step 2), so the
  parameter count equals the other modes. MedSegFactory's paper figure draws the parallel form with
  the roles of query and key streams swapped; on an aligned grid that equals our ``parallel`` mode
  with the two outputs exchanged, which the per-stream output projections can learn either way.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dualsci.nn.rope import RotaryTable, apply_rope, full_tables, pair_partner

AttnMode = Literal["joint", "cross", "self"]
CrossOrder = Literal["parallel", "sequential"]
ATTN_MODES: tuple[str, ...] = get_args(AttnMode)
CROSS_ORDERS: tuple[str, ...] = get_args(CrossOrder)


class QKNorm(nn.Module):
    """RMS norm over the head dimension in fp32 with a learnable scale (initialised to 1).

    Optionally fused with RoPE: ``R(p)·(x̂ ⊙ g) = x̂ ⊙ (g ⊙ cos) + partner(x̂) ⊙ (partner(g) ⊙ sin)``
    with ``x̂ = x / rms(x)``, so the scale folds into the (head-shared, H× smaller) rotation tables
    and queries/keys take five memory passes instead of about a dozen.

    Args:
        head_dim: ``d_h``.
        eps: added to the mean square.
    """

    def __init__(self, head_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(head_dim))

    def forward(self, x: Tensor, rope: RotaryTable | None = None) -> Tensor:
        """``x: (B, H, L, d_h)`` (or ``(..., d_h)`` without rope), any dtype -> fp32, normalised then rotated."""
        xf = x.float()
        xn = xf * torch.rsqrt(xf.square().mean(dim=-1, keepdim=True) + self.eps)
        g = self.weight.float()
        if rope is None:
            return xn * g
        cos_full, sin_full = full_tables(rope)
        partner = pair_partner(xn, rope.layout, rope.axes_dim)
        g_partner = pair_partner(g, rope.layout, rope.axes_dim)
        return torch.addcmul(xn * (g * cos_full), partner, g_partner * sin_full)


def split_heads(qkv: Tensor, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """Views ``q, k, v: (B, H, L, d_h)`` of a fused projection ``qkv: (B, L, 3·D)`` (no copy)."""
    b, length, width = qkv.shape
    # Explicit head size (not -1): a stream with L = 0 tokens has 0 elements and -1 would be ambiguous.
    return qkv.view(b, length, 3, num_heads, width // (3 * num_heads)).permute(2, 0, 3, 1, 4).unbind(0)


def merge_heads(o: Tensor) -> Tensor:
    """``(B, H, L, d_h) -> (B, L, H·d_h)``; free for SDPA's CPU output, which is laid out (B, L, H, d_h)."""
    return o.transpose(1, 2).flatten(2)


def norm_rope(x: Tensor, norm: nn.Module, rope: RotaryTable | None, dtype: torch.dtype) -> Tensor:
    """QK-norm then RoPE (both fp32, RoPE **after** the norm), cast to the attention dtype.

    Args:
        x: ``(B, H, L, d_h)`` query or key heads.
        norm: :class:`QKNorm` or ``nn.Identity``.
        rope: table for the ``L`` tokens, or ``None`` (identity rotation).
        dtype: dtype handed to SDPA (that of ``v``).
    """
    if isinstance(norm, QKNorm):
        return norm(x, rope).to(dtype)
    return (x if rope is None else apply_rope(x, rope)).to(dtype)


def key_padding_sdpa(
    q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """SDPA with an optional key-padding mask.

    Args:
        q: ``(B, H, L_q, d_h)``; k, v: ``(B, H, L_k, d_h)``.
        key_mask: ``(B, L_k)`` bool, True = real key; ``None`` = no padding (no mask is passed to
            the kernel at all, which is faster than an all-True mask).

    Returns:
        ``o: (B, H, L_q, d_h)`` and ``has_key: (B,)`` bool (``None`` without a mask). Rows of samples
        with ``has_key == False`` are garbage-free but meaningless; callers zero them.
    """
    if k.shape[2] == 0:
        # No keys at all (the other stream of a cross block is empty): like a sample whose every key
        # is padded, the rows are meaningless; callers zero them through has_key = False.
        o = q.new_zeros(*q.shape[:3], v.shape[-1])
        return o, torch.zeros(q.shape[0], dtype=torch.bool, device=q.device)
    if q.shape[2] == 0:
        return q.new_zeros(*q.shape[:3], v.shape[-1]), None
    if key_mask is None:
        return F.scaled_dot_product_attention(q, k, v), None
    has_key = key_mask.any(dim=-1)
    allowed = key_mask | ~has_key[:, None]  # never an all-False row: no NaN
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None, None, :])
    return o, has_key


def row_keep(*conds: Tensor | None) -> Tensor | None:
    """AND of per-row conditions ``(B, L)`` and per-sample ones ``(B,)`` -> ``(B, L or 1, 1)`` bool."""
    keep = None
    for c in conds:
        if c is None:
            continue
        c = c[:, :, None] if c.ndim == 2 else c[:, None, None]
        keep = c if keep is None else keep & c
    return keep


def zero_rows(x: Tensor, keep: Tensor | None) -> Tensor:
    """Set rows of ``x: (B, L, D)`` where ``keep: (B, L|1, 1)`` is False to exactly 0."""
    return x if keep is None else x.masked_fill(~keep, 0.0)


class Attention(nn.Module):
    """Multi-head self-attention of one stream: fused QKV, QK-norm, RoPE, SDPA, output projection.

    Args:
        dim: model width ``D``.
        num_heads: ``H`` (``D % H == 0``).
        qk_norm: RMS-normalise queries and keys per head.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Attention: dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm: nn.Module = QKNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = QKNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def heads(self, h: Tensor, rope: RotaryTable | None) -> tuple[Tensor, Tensor, Tensor]:
        """``h: (B, L, D)`` -> normalised, rotated ``q, k`` and ``v``, each ``(B, H, L, d_h)``."""
        q, k, v = split_heads(self.qkv(h), self.num_heads)
        return norm_rope(q, self.q_norm, rope, v.dtype), norm_rope(k, self.k_norm, rope, v.dtype), v

    def forward(self, h: Tensor, rope: RotaryTable | None = None, mask: Tensor | None = None) -> Tensor:
        """``h: (B, L, D)``, ``mask: (B, L)`` -> ``(B, L, D)`` with padded rows zero."""
        q, k, v = self.heads(h, rope)
        o, has_key = key_padding_sdpa(q, k, v, mask)
        return zero_rows(self.proj(merge_heads(o)), row_keep(mask, has_key))


def full_mask(mask: Tensor | None, like: Tensor) -> Tensor:
    """The given mask, or all-True ``(B, L)`` for a stream without padding (``like: (B, L, D)``)."""
    if mask is not None:
        return mask
    return torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)


class DualAttention(nn.Module):
    """Attention over streams ``a`` and ``b`` with separate weights per stream.

    Args:
        dim: model width ``D``.
        num_heads: ``H``.
        attn_mode: ``"joint" | "cross" | "self"`` (module docstring).
        cross_order: ``"parallel" | "sequential"``, used by ``"cross"``.
        qk_norm: RMS-normalise queries and keys.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        attn_mode: AttnMode = "joint",
        cross_order: CrossOrder = "parallel",
        qk_norm: bool = True,
    ) -> None:
        super().__init__()
        if attn_mode not in ATTN_MODES:
            raise ValueError(f"attn_mode must be one of {ATTN_MODES}, got {attn_mode!r}")
        if cross_order not in CROSS_ORDERS:
            raise ValueError(f"cross_order must be one of {CROSS_ORDERS}, got {cross_order!r}")
        self.attn_mode: str = attn_mode
        self.cross_order: str = cross_order
        self.num_heads = num_heads
        self.a = Attention(dim, num_heads, qk_norm)
        self.b = Attention(dim, num_heads, qk_norm)

    def forward(
        self,
        h_a: Tensor,
        h_b: Tensor,
        rope_a: RotaryTable | None = None,
        rope_b: RotaryTable | None = None,
        mask_a: Tensor | None = None,
        mask_b: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Attend and project.

        Args:
            h_a: ``(B, L_a, D)`` normalised tokens of stream a; h_b: ``(B, L_b, D)``.
            rope_a, rope_b: rotation tables or ``None``.
            mask_a, mask_b: ``(B, L_s)`` bool, True = real token, or ``None``.

        Returns:
            ``(o_a, o_b)``: ``(B, L_s, D)`` after the per-stream output projection, padded rows zero.
        """
        if self.attn_mode == "self":
            return self.a(h_a, rope_a, mask_a), self.b(h_b, rope_b, mask_b)
        if self.attn_mode == "cross" and self.cross_order == "sequential":
            return self._cross_sequential(h_a, h_b, rope_a, rope_b, mask_a, mask_b)
        q_a, k_a, v_a = self.a.heads(h_a, rope_a)
        q_b, k_b, v_b = self.b.heads(h_b, rope_b)
        if self.attn_mode == "joint":
            key_mask = None
            if mask_a is not None or mask_b is not None:
                key_mask = torch.cat([full_mask(mask_a, h_a), full_mask(mask_b, h_b)], dim=1)
            q, k, v = (torch.cat(pair, dim=2) for pair in ((q_a, q_b), (k_a, k_b), (v_a, v_b)))
            o, has_key = key_padding_sdpa(q, k, v, key_mask)
            o_a, o_b = merge_heads(o).split([h_a.shape[1], h_b.shape[1]], dim=1)
            has_key_a = has_key_b = has_key
        else:  # cross, parallel: a reads b, b reads a
            o_a, has_key_a = key_padding_sdpa(q_a, k_b, v_b, mask_b)
            o_b, has_key_b = key_padding_sdpa(q_b, k_a, v_a, mask_a)
            o_a, o_b = merge_heads(o_a), merge_heads(o_b)
        out_a = zero_rows(self.a.proj(o_a), row_keep(mask_a, has_key_a))
        out_b = zero_rows(self.b.proj(o_b), row_keep(mask_b, has_key_b))
        return out_a, out_b

    def _cross_sequential(
        self,
        h_a: Tensor,
        h_b: Tensor,
        rope_a: RotaryTable | None,
        rope_b: RotaryTable | None,
        mask_a: Tensor | None,
        mask_b: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """MedSegFactory JCA order (module docstring); ``L_a == L_b``."""
        if h_a.shape[1] != h_b.shape[1]:
            raise ValueError(
                "cross_order='sequential' needs both streams on one grid (L_a == L_b), got "
                f"x_a with L_a={h_a.shape[1]} and x_b with L_b={h_b.shape[1]}"
            )
        dim = self.a.dim
        # Stream a only contributes keys/values in step 1; its query weights serve step 2.
        w_a, bias_a = self.a.qkv.weight, self.a.qkv.bias
        kv_a = F.linear(h_a, w_a[dim:], bias_a[dim:]).unflatten(-1, (2, self.num_heads, self.a.head_dim))
        k_a, v_a = kv_a.permute(2, 0, 3, 1, 4).unbind(0)
        k_a = norm_rope(k_a, self.a.k_norm, rope_a, v_a.dtype)
        q_b, k_b, v_b = self.b.heads(h_b, rope_b)
        # Step 1: b's queries read a's content -> a's update (rows are b's query rows).
        o_a, has_key_a = key_padding_sdpa(q_b, k_a, v_a, mask_a)
        o_a = zero_rows(merge_heads(o_a), row_keep(mask_b, has_key_a))
        # Step 2: queries from the already-updated a output read b's content -> b's update.
        q_t = F.linear(o_a, w_a[:dim], bias_a[:dim]).unflatten(-1, (self.num_heads, self.a.head_dim)).transpose(1, 2)
        q_t = norm_rope(q_t, self.a.q_norm, rope_b, v_b.dtype)
        o_b, has_key_b = key_padding_sdpa(q_t, k_b, v_b, mask_b)
        out_a = zero_rows(self.a.proj(o_a), row_keep(mask_a, mask_b, has_key_a))
        out_b = zero_rows(self.b.proj(merge_heads(o_b)), row_keep(mask_b, has_key_b))
        return out_a, out_b
