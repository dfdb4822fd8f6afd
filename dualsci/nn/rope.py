"""Rotary position embeddings from float coordinates (RoPE-ND) and the periodic GeoRoPE.

Guide ``core.md`` §2. The head dimension ``d_h`` is split into axis slices ``axes_dim`` (each even);
pair ``k`` of axis ``a`` rotates by ``φ = p_a·ω_{a,k}`` with ``ω_{a,k} = θ^(−2k/D_a)`` or an explicit
frequency list. Because ``⟨R(p)q, R(p')k⟩ = ⟨q, R(p'−p)k⟩``, attention logits depend only on
coordinate differences, so coordinates may be any floats (lead time, radians, pixel rows...).

Two pair layouts, fixed per model (checkpoints are not interchangeable between them):

* ``"interleaved"``: pairs are channels ``(2k, 2k+1)`` of the head (FLUX, LaDCast);
* ``"half"``: inside each axis slice of width ``D_a``, pairs are ``(k, k + D_a/2)`` (GPT-NeoX style).

The table's pair order is axis-major in both layouts: the ``d_h/2`` columns of ``cos``/``sin`` are
axis 0's pairs, then axis 1's, ...
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Sequence, get_args

import torch
from torch import Tensor, nn

RopeLayout = Literal["interleaved", "half"]
ROPE_LAYOUTS: tuple[str, ...] = get_args(RopeLayout)


class RotaryTable(NamedTuple):
    """Precomputed rotation for one token sequence.

    Attributes:
        cos: ``(B or 1, 1, L, d_h/2)`` fp32, one column per channel pair (axis-major).
        sin: ``(B or 1, 1, L, d_h/2)`` fp32.
        layout: ``"interleaved"`` or ``"half"``.
        axes_dim: the axis split of ``d_h`` (needed by the ``"half"`` layout).
        cos_full: ``(B or 1, 1, L, d_h)`` cos spread onto both channels of each pair, or ``None``
            (then built on use). Precomputed once per forward so every block reuses it.
        sin_full: ``(B or 1, 1, L, d_h)`` sin with the rotation's sign folded in (−sin on the first
            channel of a pair, +sin on the second), or ``None``.
    """

    cos: Tensor
    sin: Tensor
    layout: str = "interleaved"
    axes_dim: tuple[int, ...] = ()
    cos_full: Tensor | None = None
    sin_full: Tensor | None = None


def _spread(cos: Tensor, sin: Tensor, layout: str, axes_dim: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Per-pair ``(…, d_h/2)`` cos/sin -> per-channel ``(…, d_h)`` cos and signed sin."""
    if layout == "interleaved":
        return cos.repeat_interleave(2, dim=-1), torch.stack((-sin, sin), dim=-1).flatten(-2)
    halves = [d // 2 for d in axes_dim]
    cos_full = torch.cat([t for c in cos.split(halves, -1) for t in (c, c)], dim=-1)
    sin_full = torch.cat([t for s in sin.split(halves, -1) for t in (-s, s)], dim=-1)
    return cos_full, sin_full


def full_tables(table: RotaryTable) -> tuple[Tensor, Tensor]:
    """``(cos_full, sin_full)``, each ``(B or 1, 1, L, d_h)``, from the table or built now."""
    if table.cos_full is not None and table.sin_full is not None:
        return table.cos_full, table.sin_full
    return _spread(table.cos, table.sin, table.layout, table.axes_dim)


def pair_partner(x: Tensor, layout: str, axes_dim: tuple[int, ...]) -> Tensor:
    """The partner channel of every channel: rotation is ``x·cos_full + pair_partner(x)·sin_full``.

    Args:
        x: ``(..., d_h)``.
        layout: ``"interleaved"`` (swap 2k ↔ 2k+1) or ``"half"`` (swap k ↔ k + D_a/2 per axis).
        axes_dim: the axis split of ``d_h``.
    """
    if layout == "interleaved":
        return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    halves = []
    for s in x.split(list(axes_dim), dim=-1):
        h = s.shape[-1] // 2
        halves += [s[..., h:], s[..., :h]]
    return torch.cat(halves, dim=-1)


def cat_tables(first: RotaryTable, second: RotaryTable) -> RotaryTable:
    """Concatenate two tables along the token axis (stream a then stream b).

    Args:
        first: table for ``L_1`` tokens.
        second: table for ``L_2`` tokens, same layout and axes.

    Returns:
        A table for ``L_1 + L_2`` tokens; the batch dimension is broadcast (1 or B).
    """
    if first.layout != second.layout or first.axes_dim != second.axes_dim:
        raise ValueError(
            f"cat_tables: layouts/axes differ ({first.layout}, {first.axes_dim}) vs "
            f"({second.layout}, {second.axes_dim})"
        )
    batch = max(first.cos.shape[0], second.cos.shape[0])

    def _cat(x: Tensor, y: Tensor) -> Tensor:
        return torch.cat([x.expand(batch, -1, -1, -1), y.expand(batch, -1, -1, -1)], dim=2)

    (c1, s1), (c2, s2) = full_tables(first), full_tables(second)
    return RotaryTable(
        _cat(first.cos, second.cos),
        _cat(first.sin, second.sin),
        first.layout,
        first.axes_dim,
        _cat(c1, c2),
        _cat(s1, s2),
    )


def apply_rope(x: Tensor, table: RotaryTable) -> Tensor:
    """Rotate the channel pairs of ``x`` by the table's angles, in fp32.

    Args:
        x: ``(B, H, L, d_h)`` in any float dtype (a strided view is fine).
        table: from :class:`RopeND` for the same ``L`` and ``d_h``.

    Returns:
        ``(B, H, L, d_h)`` in ``x.dtype``.
    """
    if x.ndim != 4:
        raise ValueError(f"apply_rope: x must be (B, H, L, d_h), got shape {tuple(x.shape)}")
    if x.shape[-1] != 2 * table.cos.shape[-1] or x.shape[-2] != table.cos.shape[-2]:
        raise ValueError(
            f"apply_rope: x has L={x.shape[-2]}, d_h={x.shape[-1]} but the table is for "
            f"L={table.cos.shape[-2]}, d_h={2 * table.cos.shape[-1]}"
        )
    xf = x.float()
    cos_full, sin_full = full_tables(table)
    # Three passes (mul, partner gather, addcmul) instead of splitting and stacking pairs.
    out = torch.addcmul(xf * cos_full, pair_partner(xf, table.layout, table.axes_dim), sin_full)
    return out.to(x.dtype)


class RopeND(nn.Module):
    """N-axis rotary embedding from float coordinates.

    Args:
        axes_dim: width ``D_a`` of each axis slice (even, positive); ``sum(axes_dim) == d_h``.
        theta: base of the geometric frequencies ``θ^(−2k/D_a)``.
        layout: ``"interleaved"`` or ``"half"`` (see module docstring).
        freqs: optional explicit angular frequencies per axis; entry ``a`` is ``None`` (geometric)
            or a 1-D tensor/sequence of ``D_a/2`` values.
    """

    def __init__(
        self,
        axes_dim: Sequence[int],
        theta: float = 10_000.0,
        layout: RopeLayout = "interleaved",
        freqs: Sequence[Tensor | Sequence[float] | None] | None = None,
    ) -> None:
        super().__init__()
        axes_dim = tuple(int(d) for d in axes_dim)
        if not axes_dim or any(d <= 0 or d % 2 for d in axes_dim):
            raise ValueError(f"RopeND: axes_dim must be positive even ints, got {axes_dim}")
        if layout not in ROPE_LAYOUTS:
            raise ValueError(f"RopeND: layout must be one of {ROPE_LAYOUTS}, got {layout!r}")
        if theta <= 0:
            raise ValueError(f"RopeND: theta must be > 0, got {theta}")
        if freqs is not None and len(freqs) != len(axes_dim):
            raise ValueError(
                f"RopeND: freqs needs one entry per axis ({len(axes_dim)}), got {len(freqs)}"
            )
        self.axes_dim = axes_dim
        self.theta = float(theta)
        self.layout: str = layout
        per_axis = []
        for a, dim in enumerate(axes_dim):
            given = None if freqs is None else freqs[a]
            if given is None:
                omega = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
            else:
                omega = torch.as_tensor(given, dtype=torch.float64).flatten()
                if omega.numel() != dim // 2:
                    raise ValueError(
                        f"RopeND: freqs[{a}] must have axes_dim[{a}]/2 = {dim // 2} values, "
                        f"got {omega.numel()}"
                    )
            per_axis.append(omega)
        # One frequency per pair (axis-major) and the coordinate axis each pair reads.
        self.register_buffer("inv_freq", torch.cat(per_axis).float(), persistent=False)
        axis_index = torch.cat(
            [torch.full((d // 2,), a, dtype=torch.long) for a, d in enumerate(axes_dim)]
        )
        self.register_buffer("axis_index", axis_index, persistent=False)

    @property
    def head_dim(self) -> int:
        """``d_h = sum(axes_dim)``."""
        return sum(self.axes_dim)

    def forward(self, pos: Tensor) -> RotaryTable:
        """Build the rotation table.

        Args:
            pos: ``(B, L, n_axes)`` or ``(L, n_axes)`` float coordinates. Angles are computed in
                fp64 (fp32 on MPS, which has no fp64) so that large or periodic coordinates keep
                their precision; give fp64 coordinates when the fp32 rounding of ``p`` matters.

        Returns:
            :class:`RotaryTable` with cos/sin ``(B or 1, 1, L, d_h/2)`` in fp32.
        """
        if pos.ndim == 2:
            pos = pos.unsqueeze(0)
        if pos.ndim != 3 or pos.shape[-1] != len(self.axes_dim):
            raise ValueError(
                f"RopeND: pos must be (B, L, {len(self.axes_dim)}) or (L, {len(self.axes_dim)}), "
                f"got shape {tuple(pos.shape)}"
            )
        # The table is small ((B, L, d_h/2)), so fp64 angles cost nothing measurable.
        dtype = torch.float32 if pos.device.type == "mps" else torch.float64
        pos = pos.to(dtype)
        angles = pos.index_select(-1, self.axis_index) * self.inv_freq.to(dtype)  # (B, L, d_h/2)
        angles = angles.unsqueeze(1)
        cos, sin = angles.cos().float(), angles.sin().float()
        return RotaryTable(cos, sin, self.layout, self.axes_dim, *_spread(cos, sin, self.layout, self.axes_dim))

    def extra_repr(self) -> str:
        return f"axes_dim={self.axes_dim}, theta={self.theta}, layout={self.layout!r}"


class GeoRoPE(RopeND):
    """RoPE for (lead time, latitude, longitude) with longitude periodic in 2π.

    Longitude frequencies are the whole numbers ``1..K`` (``K = lon_dim/2``), so a rotation of every
    longitude by 2π leaves all angles unchanged modulo 2π; time and latitude use geometric
    frequencies. For a grid with ``N_lon`` columns keep ``K <= N_lon/2`` (Nyquist).

    Args:
        axes_dim: ``(t_dim, lat_dim, lon_dim)``.
        theta: base of the geometric time/latitude frequencies.
        layout: pair layout, as for :class:`RopeND`.

    Coordinates: ``(lead_steps, lat_rad, lon_rad)``.
    """

    def __init__(
        self,
        axes_dim: Sequence[int],
        theta: float = 10_000.0,
        layout: RopeLayout = "interleaved",
    ) -> None:
        axes_dim = tuple(int(d) for d in axes_dim)
        if len(axes_dim) != 3:
            raise ValueError(
                f"GeoRoPE: axes_dim must be (t_dim, lat_dim, lon_dim), got {axes_dim}"
            )
        lon_freqs = torch.arange(1, axes_dim[2] // 2 + 1, dtype=torch.float64)
        super().__init__(axes_dim, theta=theta, layout=layout, freqs=[None, None, lon_freqs])

