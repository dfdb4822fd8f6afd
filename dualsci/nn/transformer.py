"""The dual-stream transformer: embedders, N dual + M single + tail blocks, zero-initialised heads.

Guide ``core.md`` §1. Per stream ``s``: tokens ``x_s: (B, L_s, in_dim_s)`` are embedded by a Linear,
conditioned by ``c_s = TimeEmb_s(t_s) [+ CondMLP(cond)]`` (or one shared ``c`` for both streams when
``shared_condition``), pass ``depth_dual`` :class:`DualStreamBlock`s, ``depth_single``
:class:`SingleStreamBlock`s over ``a‖b`` and ``depth_tail`` per-stream :class:`StreamBlock`s, then a
zero-initialised adaLN head. An untrained model therefore returns exactly 0.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from dualsci.nn.attention import ATTN_MODES, CROSS_ORDERS, full_mask
from dualsci.nn.blocks import (
    DualStreamBlock,
    SingleStreamBlock,
    StreamBlock,
    check_mask,
    check_tokens,
    modulation,
    modulate,
    zero_linear,
)
from dualsci.nn.embeddings import TimestepEmbedding, embedding_mlp
from dualsci.nn.rope import GeoRoPE, RopeND, RotaryTable, cat_tables

RopeKind = Literal["nd", "geo"]
ROPE_KINDS: tuple[str, ...] = get_args(RopeKind)
TIME_FREQ_DIM = 256


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"DualStreamConfig: {message}")


@dataclass
class DualStreamConfig:
    """Size and options of a :class:`DualStreamTransformer` (validated on construction).

    Attributes:
        in_dim_a: token feature size of stream a (after the app's patchify).
        in_dim_b: token feature size of stream b.
        out_dim_a: output size of stream a; ``None`` = ``in_dim_a``; 0 = no head.
        out_dim_b: output size of stream b; ``None`` = ``in_dim_b``; 0 = no head (conditioning stream).
        dim: model width ``D``.
        num_heads: attention heads (``dim % num_heads == 0``).
        depth_dual: number of :class:`DualStreamBlock`.
        depth_single: number of :class:`SingleStreamBlock` after them (shared weights over a‖b).
        depth_tail: per-stream :class:`StreamBlock` refiners after the single blocks.
        mlp_ratio: MLP hidden width / ``dim``.
        attn_mode: ``"joint" | "cross" | "self"``, or one of those per dual block.
        cross_order: ``"parallel" | "sequential"`` for cross blocks.
        cond_dim: size of the global condition vector; 0 = none.
        rope_axes_dim: RoPE axis split (sum = ``dim // num_heads``); ``None`` = no RoPE.
        rope_theta: RoPE base.
        rope_kind: ``"nd"`` (:class:`RopeND`) or ``"geo"`` (:class:`GeoRoPE`, 3 axes).
        shared_condition: one time embedding, of ``t_a``, for both streams (SD3/FLUX/LaDCast).
        time_scale: :class:`TimestepEmbedding` scale (1.0 when feeding EDM ``c_noise``).
        qk_norm: RMS-normalise queries and keys in every block.
    """

    in_dim_a: int
    in_dim_b: int
    out_dim_a: int | None = None
    out_dim_b: int | None = None
    dim: int = 256
    num_heads: int = 4
    depth_dual: int = 4
    depth_single: int = 0
    depth_tail: int = 0
    mlp_ratio: float = 4.0
    attn_mode: str | list[str] = "joint"
    cross_order: str = "parallel"
    cond_dim: int = 0
    rope_axes_dim: tuple[int, ...] | None = None
    rope_theta: float = 10_000.0
    rope_kind: str = "nd"
    shared_condition: bool = False
    time_scale: float = 1000.0
    qk_norm: bool = True

    def __post_init__(self) -> None:
        for name in ("in_dim_a", "in_dim_b", "dim", "num_heads"):
            _require(int(getattr(self, name)) > 0, f"{name} must be a positive int, got {getattr(self, name)}")
        for name in ("out_dim_a", "out_dim_b"):
            value = getattr(self, name)
            _require(value is None or int(value) >= 0, f"{name} must be None or an int >= 0, got {value}")
        for name in ("depth_dual", "depth_single", "depth_tail", "cond_dim"):
            _require(int(getattr(self, name)) >= 0, f"{name} must be an int >= 0, got {getattr(self, name)}")
        _require(
            self.depth_dual + self.depth_single + self.depth_tail > 0,
            "at least one of depth_dual, depth_single, depth_tail must be > 0",
        )
        _require(
            self.dim % self.num_heads == 0,
            f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})",
        )
        _require(self.mlp_ratio > 0, f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        _require(self.time_scale > 0, f"time_scale must be > 0, got {self.time_scale}")
        _require(self.rope_theta > 0, f"rope_theta must be > 0, got {self.rope_theta}")
        modes = [self.attn_mode] if isinstance(self.attn_mode, str) else list(self.attn_mode)
        _require(
            all(m in ATTN_MODES for m in modes),
            f"attn_mode must be one of {ATTN_MODES} or a list of them, got {self.attn_mode!r}",
        )
        _require(
            isinstance(self.attn_mode, str) or len(modes) == self.depth_dual,
            f"attn_mode as a list needs one entry per dual block (depth_dual={self.depth_dual}), "
            f"got {len(modes)}",
        )
        _require(
            self.cross_order in CROSS_ORDERS,
            f"cross_order must be one of {CROSS_ORDERS}, got {self.cross_order!r}",
        )
        _require(self.rope_kind in ROPE_KINDS, f"rope_kind must be one of {ROPE_KINDS}, got {self.rope_kind!r}")
        if self.rope_axes_dim is not None:
            self.rope_axes_dim = tuple(int(d) for d in self.rope_axes_dim)
            head_dim = self.dim // self.num_heads
            _require(
                sum(self.rope_axes_dim) == head_dim and all(d > 0 and d % 2 == 0 for d in self.rope_axes_dim),
                f"rope_axes_dim must be positive even ints summing to dim // num_heads = {head_dim}, "
                f"got {self.rope_axes_dim}",
            )
            _require(
                self.rope_kind != "geo" or len(self.rope_axes_dim) == 3,
                f"rope_kind='geo' needs rope_axes_dim = (t_dim, lat_dim, lon_dim), got {self.rope_axes_dim}",
            )
        if self.out_dim_a is None:
            self.out_dim_a = self.in_dim_a
        if self.out_dim_b is None:
            self.out_dim_b = self.in_dim_b

    @property
    def attn_modes(self) -> tuple[str, ...]:
        """The attention mode of each dual block."""
        if isinstance(self.attn_mode, str):
            return (self.attn_mode,) * self.depth_dual
        return tuple(self.attn_mode)


class FinalLayer(nn.Module):
    """adaLN head ``Linear(LN(x)·(1 + γ) + β)``; modulation and Linear zero-initialised."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.mod = zero_linear(dim, 2 * dim)
        self.linear = zero_linear(dim, out_dim)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """``x: (B, L, D)``, ``c: (B, D)`` or ``(B, L, D)`` -> ``(B, L, out_dim)``."""
        shift, scale = modulation(self.mod, c, 2)
        return self.linear(modulate(x, shift, scale))


class DualStreamTransformer(nn.Module):
    """Two token streams, per-stream conditioning, joint/cross/self attention, zero-init heads.

    Args:
        config: a :class:`DualStreamConfig`.
    """

    def __init__(self, config: DualStreamConfig) -> None:
        super().__init__()
        cfg = self.config = config
        d = cfg.dim
        self.embed_a = nn.Linear(cfg.in_dim_a, d)
        self.embed_b = nn.Linear(cfg.in_dim_b, d)
        self.time_a = TimestepEmbedding(d, TIME_FREQ_DIM, cfg.time_scale)
        self.time_b = None if cfg.shared_condition else TimestepEmbedding(d, TIME_FREQ_DIM, cfg.time_scale)
        self.cond_mlp = embedding_mlp(cfg.cond_dim, d) if cfg.cond_dim > 0 else None
        self.rope: RopeND | None = None
        if cfg.rope_axes_dim is not None:
            rope_cls = GeoRoPE if cfg.rope_kind == "geo" else RopeND
            self.rope = rope_cls(cfg.rope_axes_dim, theta=cfg.rope_theta)
        self.dual_blocks = nn.ModuleList(
            DualStreamBlock(d, cfg.num_heads, cfg.mlp_ratio, mode, cfg.cross_order, cfg.qk_norm)
            for mode in cfg.attn_modes
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(d, cfg.num_heads, cfg.mlp_ratio, cfg.qk_norm) for _ in range(cfg.depth_single)
        )
        # Tails and heads only for streams that produce an output.
        self.tail_a = nn.ModuleList(
            StreamBlock(d, cfg.num_heads, cfg.mlp_ratio, cfg.qk_norm)
            for _ in range(cfg.depth_tail if cfg.out_dim_a else 0)
        )
        self.tail_b = nn.ModuleList(
            StreamBlock(d, cfg.num_heads, cfg.mlp_ratio, cfg.qk_norm)
            for _ in range(cfg.depth_tail if cfg.out_dim_b else 0)
        )
        self.head_a = FinalLayer(d, cfg.out_dim_a) if cfg.out_dim_a else None
        self.head_b = FinalLayer(d, cfg.out_dim_b) if cfg.out_dim_b else None

    # ------------------------------------------------------------------------------ conditioning
    def _check_time(self, name: str, t: Tensor, batch: int, length: int) -> None:
        if not (t.ndim == 1 and t.shape[0] == batch) and not (t.ndim == 2 and tuple(t.shape) == (batch, length)):
            raise ValueError(f"{name} must be ({batch},) or ({batch}, {length}), got shape {tuple(t.shape)}")

    def _cond_vector(self, name: str, cond: Tensor | None, batch: int) -> Tensor | None:
        """``cond_mlp(cond): (B, D)``, or None when no condition is given; validates the shape."""
        if cond is None:
            return None
        if self.cond_mlp is None:
            raise ValueError(f"{name} was given but config.cond_dim = 0 (got shape {tuple(cond.shape)})")
        if cond.ndim != 2 or tuple(cond.shape) != (batch, self.config.cond_dim):
            raise ValueError(f"{name} must be ({batch}, {self.config.cond_dim}) (config.cond_dim), got {tuple(cond.shape)}")
        return self.cond_mlp(cond)

    def _conditions(
        self,
        t_a: Tensor,
        t_b: Tensor | None,
        cond: Tensor | None,
        batch: int,
        len_a: int,
        len_b: int,
        cond_a: Tensor | None = None,
        cond_b: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        self._check_time("t_a", t_a, batch, len_a)
        if self.time_b is None and (cond_a is not None or cond_b is not None):
            raise ValueError("cond_a/cond_b need shared_condition=False (one vector is shared by both streams)")
        # Stream s is conditioned on its own cond_s when given, else on the shared cond.
        extra_a = self._cond_vector("cond_a", cond_a, batch)
        extra_b = self._cond_vector("cond_b", cond_b, batch)
        shared = self._cond_vector("cond", cond, batch)
        extra_a = shared if extra_a is None else extra_a
        extra_b = shared if extra_b is None else extra_b
        if self.cond_mlp is not None and (extra_a is None or extra_b is None):
            raise ValueError(
                f"cond must be ({batch}, {self.config.cond_dim}) (config.cond_dim), or both cond_a and cond_b; got None"
            )
        c_a = self.time_a(t_a)
        if self.time_b is None:
            if t_a.ndim != 1:
                raise ValueError(
                    f"t_a must be ({batch},) with shared_condition=True (one vector for both streams), "
                    f"got shape {tuple(t_a.shape)}"
                )
            c_b = c_a
        else:
            if t_b is None:
                raise ValueError(
                    f"t_b must be ({batch},) or ({batch}, {len_b}) (shared_condition=False), got None"
                )
            self._check_time("t_b", t_b, batch, len_b)
            c_b = self.time_b(t_b)
        if extra_a is not None:
            c_a = c_a + (extra_a if c_a.ndim == 2 else extra_a[:, None])
            c_b = c_a if self.time_b is None else c_b + (extra_b if c_b.ndim == 2 else extra_b[:, None])
        return c_a, c_b

    def _rope(self, name: str, pos: Tensor | None, length: int) -> RotaryTable | None:
        if pos is None:
            return None  # coordinate 0 everywhere = identity rotation
        if self.rope is None:
            raise ValueError(f"{name} was given but config.rope_axes_dim is None (no RoPE)")
        n = len(self.rope.axes_dim)
        if pos.shape[-2:] != (length, n) or pos.ndim not in (2, 3):
            raise ValueError(f"{name} must be (B, {length}, {n}) or ({length}, {n}), got shape {tuple(pos.shape)}")
        return self.rope(pos)

    # ----------------------------------------------------------------------------------- forward
    def flops_of_call(self, *args: object, **kwargs: object) -> int:
        """:meth:`flops_per_forward` for the arguments of one ``forward`` call (as a forward hook sees them).

        Reads ``B``, ``L_a``, ``L_b`` from ``x_a``, ``x_b``, per-token times from the ``ndim`` of
        ``t_a``/``t_b`` and the number of condition tensors given.
        """
        bound = inspect.signature(self.forward).bind(*args, **kwargs).arguments
        x_a, x_b, t_a, t_b = bound["x_a"], bound["x_b"], bound["t_a"], bound.get("t_b")
        shared = self.time_b is None
        n_cond = sum(bound.get(k) is not None for k in ("cond", "cond_a", "cond_b"))
        return self.flops_per_forward(
            int(x_a.shape[0]), int(x_a.shape[1]), int(x_b.shape[1]),
            per_token_a=t_a.ndim == 2,
            per_token_b=not shared and t_b is not None and t_b.ndim == 2,
            cond_calls=n_cond if self.cond_mlp is not None else 0,
        )

    def forward(
        self,
        x_a: Tensor,
        x_b: Tensor,
        t_a: Tensor,
        t_b: Tensor | None = None,
        cond: Tensor | None = None,
        pos_a: Tensor | None = None,
        pos_b: Tensor | None = None,
        mask_a: Tensor | None = None,
        mask_b: Tensor | None = None,
        cond_a: Tensor | None = None,
        cond_b: Tensor | None = None,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Denoise both streams.

        Args:
            x_a: ``(B, L_a, in_dim_a)``; x_b: ``(B, L_b, in_dim_b)``.
            t_a: ``(B,)`` or ``(B, L_a)`` noise coordinate of stream a (t, or EDM c_noise).
            t_b: ``(B,)`` or ``(B, L_b)``; ignored (may be ``None``) with ``shared_condition``.
            cond: ``(B, cond_dim)`` when ``cond_dim > 0``.
            pos_a: ``(B, L_a, n_axes)`` or ``(L_a, n_axes)`` RoPE coordinates (``None`` = all 0).
            pos_b: same for stream b.
            mask_a: ``(B, L_a)`` bool, True = real token; mask_b: ``(B, L_b)``.
            cond_a, cond_b: optional per-stream conditions ``(B, cond_dim)`` (e.g. an image prompt for
                the image stream and a mask prompt for the mask stream); each replaces ``cond`` for its
                stream, through the same embedding. Not with ``shared_condition``.

        Returns:
            ``(y_a, y_b)``: ``(B, L_s, out_dim_s)``, ``None`` for a stream with ``out_dim == 0``;
            rows of padded tokens are 0.
        """
        cfg = self.config
        check_tokens("x_a", x_a, cfg.in_dim_a)
        batch, len_a, len_b = x_a.shape[0], x_a.shape[1], x_b.shape[1]
        check_tokens("x_b", x_b, cfg.in_dim_b, batch)
        check_mask("mask_a", mask_a, batch, len_a)
        check_mask("mask_b", mask_b, batch, len_b)
        c_a, c_b = self._conditions(t_a, t_b, cond, batch, len_a, len_b, cond_a, cond_b)
        rope_a, rope_b = self._rope("pos_a", pos_a, len_a), self._rope("pos_b", pos_b, len_b)
        h_a, h_b = self.embed_a(x_a), self.embed_b(x_b)
        for block in self.dual_blocks:
            h_a, h_b = block(h_a, h_b, c_a, c_b, rope_a, rope_b, mask_a, mask_b)
        if self.single_blocks:
            h_a, h_b = self._single(h_a, h_b, c_a, c_b, rope_a, rope_b, mask_a, mask_b)
        return self._output(h_a, c_a, rope_a, mask_a, self.tail_a, self.head_a), self._output(
            h_b, c_b, rope_b, mask_b, self.tail_b, self.head_b
        )

    def _single(
        self,
        h_a: Tensor,
        h_b: Tensor,
        c_a: Tensor,
        c_b: Tensor,
        rope_a: RotaryTable | None,
        rope_b: RotaryTable | None,
        mask_a: Tensor | None,
        mask_b: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        len_a, len_b = h_a.shape[1], h_b.shape[1]
        h = torch.cat([h_a, h_b], dim=1)
        rope = None
        if rope_a is not None or rope_b is not None:
            rope = cat_tables(
                self._identity_table(rope_a, rope_b, len_a), self._identity_table(rope_b, rope_a, len_b)
            )
        mask = None
        if mask_a is not None or mask_b is not None:
            mask = torch.cat([full_mask(mask_a, h_a), full_mask(mask_b, h_b)], dim=1)
        # One shared vector (B, D) is modulated once; otherwise per-segment conditions.
        shared = self.time_b is None and c_a.ndim == 2
        for block in self.single_blocks:
            if shared:
                h = block(h, c_a, rope, mask)
            else:
                h = block(h, (c_a, c_b), rope, mask, lengths=(len_a, len_b))
        return h[:, :len_a], h[:, len_a:]

    @staticmethod
    def _identity_table(table: RotaryTable | None, other: RotaryTable | None, length: int) -> RotaryTable:
        """``table``, or an identity rotation (cos 1, sin 0) shaped like ``other`` for ``length`` tokens."""
        if table is not None:
            return table
        assert other is not None
        shape = (1, 1, length, other.cos.shape[-1])
        ones = torch.ones(shape, dtype=other.cos.dtype, device=other.cos.device)
        return RotaryTable(ones, torch.zeros_like(ones), other.layout, other.axes_dim)

    def _output(
        self,
        h: Tensor,
        c: Tensor,
        rope: RotaryTable | None,
        mask: Tensor | None,
        tail: nn.ModuleList,
        head: FinalLayer | None,
    ) -> Tensor | None:
        if head is None:
            return None
        for block in tail:
            h = block(h, c, rope, mask)
        y = head(h, c)
        return y if mask is None else y.masked_fill(~mask[:, :, None], 0.0)

    # ------------------------------------------------------------------------------- accounting
    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def flops_per_forward(
        self,
        batch: int,
        L_a: int,
        L_b: int,
        include_attention: bool = True,
        *,
        per_token_a: bool = False,
        per_token_b: bool = False,
        cond_calls: int | None = None,
    ) -> int:
        """Analytic forward FLOPs (2 per multiply-add).

        Counts every Linear (embedders, time/cond MLPs, modulation, qkv, out, MLP, heads) and, with
        ``include_attention``, ``QKᵀ`` and ``AV``: ``4·L_q·L_k·D`` per attention call (joint:
        ``4·(L_a+L_b)²·D``). Norms, RoPE, softmax, activations and the additions of condition vectors
        are not counted.

        The conditioning work depends on the call, not only on the sizes: with per-sample times
        ``t_s: (B,)`` the time MLP and every adaLN modulation of stream ``s`` run once per sample; with
        per-token times ``t_s: (B, L_s)`` they run once per token (``L_s×``). The condition MLP runs once
        per given condition tensor (``cond``, ``cond_a``, ``cond_b``).

        Args:
            batch, L_a, L_b: ``B`` and the stream lengths.
            include_attention: count ``QKᵀ`` and ``AV``.
            per_token_a: ``t_a`` is ``(B, L_a)``; per_token_b: ``t_b`` is ``(B, L_b)`` (ignored with
                ``shared_condition``, where b reuses a's condition).
            cond_calls: how many of ``cond``, ``cond_a``, ``cond_b`` are given; ``None`` = 1 when
                ``cond_dim > 0`` (the shared ``cond``), else 0.
        """
        cfg, d = self.config, self.config.dim
        hidden = int(d * cfg.mlp_ratio)
        length = L_a + L_b
        shared = self.time_b is None
        if shared and per_token_a:
            raise ValueError("per_token_a needs shared_condition=False (a shared time vector is (B,))")
        if cond_calls is None:
            cond_calls = 1 if self.cond_mlp is not None else 0
        if not (1 <= cond_calls <= 3 if self.cond_mlp is not None else cond_calls == 0):
            raise ValueError(f"cond_calls must be 1..3 (cond_dim > 0) or 0 (cond_dim = 0), got {cond_calls}")
        # Rows of the modulation / time-MLP inputs per sample: 1 (per-sample c) or L_s (per-token c).
        rows_a = L_a if per_token_a else 1
        rows_b = rows_a if shared else (L_b if per_token_b else 1)
        lin = L_a * cfg.in_dim_a * d + L_b * cfg.in_dim_b * d  # token embedders, per sample
        time_mlp = TIME_FREQ_DIM * d + d * d
        lin += time_mlp * (rows_a if shared else rows_a + rows_b)
        if self.cond_mlp is not None:
            lin += cond_calls * (cfg.cond_dim * d + d * d)
        attn = 0
        per_token_dual = 3 * d * d + d * d + 2 * d * hidden
        for mode in cfg.attn_modes:
            lin += (rows_a + rows_b) * d * 6 * d + length * per_token_dual
            if mode == "joint":
                attn += length * length * d
            elif mode == "self":
                attn += (L_a * L_a + L_b * L_b) * d
            else:
                # Sequential order projects o_a with a's query weights instead of h_a: same count.
                attn += 2 * L_a * L_b * d
        # Single blocks: one shared (B, D) vector is modulated once, else per segment (per token).
        single_rows = 1 if shared else rows_a + rows_b
        for _ in range(cfg.depth_single):
            lin += single_rows * d * 3 * d + length * (d * (3 * d + hidden) + (d + hidden) * d)
            attn += length * length * d
        streams = ((self.tail_a, L_a, rows_a, self.head_a), (self.tail_b, L_b, rows_b, self.head_b))
        for tail, n_tok, rows, head in streams:
            for _ in tail:
                lin += rows * d * 6 * d + n_tok * (4 * d * d + 2 * d * hidden)
                attn += n_tok * n_tok * d
            if head is not None:
                lin += rows * d * 2 * d + n_tok * d * head.linear.out_features
        total = 2 * lin + (4 * attn if include_attention else 0)
        return int(batch * total)
