"""The DUST-style policy network: observation encoder + dual-stream transformer (actions | future vision).

Token layout (guide robotics.md §1, CPU-sized):
  stream a (actions): ``n_obs`` observation tokens (image feature + state feature of each frame;
      clean content) followed by ``H`` action tokens (noised at ``t_a``); one adaLN time per sample.
  stream b (vision):  ``L_b`` tokens of the future observation's embedding at ``t + F`` (noised at
      ``t_b``); for ``variant="action_only"`` an empty stream (zero tokens, no head): the actions see
      nothing of the future, the network is otherwise the same.
Both streams also receive the pooled observation as the global condition ``cond``. Joint attention in
``depth_dual`` MMDiT blocks, then ``depth_tail`` per-stream blocks; separate adaLN times; RoPE over
(frame, row, col): observations at frames ``-n_obs+1..0``, action k at frame k, future tokens at frame
F on a square grid.

Vision targets (``future_target``), all without pretrained weights:
  ``ema``          an EMA copy of the policy's own image encoder (CNN or ViT; FLARE-style self-target),
                   4x4 pooled map;
  ``random_conv``  a frozen, seeded random CNN of the same shape, 4x4 pooled map;
  ``patches``      the normalised image average-pooled to 16x16, cut into 4x4 patches (48-d);
  ``state``        the normalised future state vector as one token (state-only policies); with
                   ``future_frames = K > 1`` K tokens, the states at t + F/K, ..., t + F (a trajectory
                   world model: the action tokens attend to an imagined path, not only its end).
                   ``target_state_dim`` gives the future state columns of its own (the data module's
                   ``target_keys``), e.g. the whole PushT state for an image policy that observes only
                   the agent: a low-dimensional world model learnt from the demonstrations' states,
                   which the policy never needs at test time.
Feature-map targets are LayerNorm-ed per token (no affine) so their scale is fixed while the EMA moves.
Normalisation statistics live in buffers, so a checkpoint carries them and a policy takes raw input.
"""

from __future__ import annotations

import copy
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apps.robotics.data.windows import future_offsets
from dualsci.nn import DualStreamConfig, DualStreamTransformer

FutureTarget = Literal["ema", "random_conv", "patches", "state"]
Variant = Literal["dust", "action_only", "joint_noise"]
Encoder = Literal["cnn", "vit"]
FUTURE_TARGETS: tuple[str, ...] = get_args(FutureTarget)
VARIANTS: tuple[str, ...] = get_args(Variant)
ENCODERS: tuple[str, ...] = get_args(Encoder)


def check_option(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


class ConvEncoder(nn.Module):
    """Small CNN (GroupNorm, EMA-safe): ``(B, 3, h, w)`` normalised image -> ``(B, C, g, g)`` map."""

    def __init__(self, channels: int = 32, grid: int = 4):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 3, stride=2, padding=1), nn.GroupNorm(8, c), nn.SiLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * c), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * c), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=1, padding=1),
        )
        self.grid = grid
        self.out_channels = 2 * c

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(self.net(x), self.grid)


def _drop_unused_target(module: nn.Module, state_dict: dict, prefix: str, *_) -> None:
    """Load-state-dict pre-hook: an action-only policy saved before 2026-12-08 carried an EMA target encoder it
    never used; its weights are dropped so such checkpoints keep loading strictly."""
    if getattr(module, "target_encoder", None) is None:
        for key in [k for k in state_dict if k.startswith(prefix + "target_encoder.")]:
            del state_dict[key]


class DustPolicyNet(nn.Module):
    """Observation encoder + `DualStreamTransformer` for action chunks and future-observation tokens.

    Args:
        action_dim: D_a. state_dim: D_s (after column gathering, e.g. 6 for PushT state).
        horizon: action chunk H. n_obs: observation frames. future_offset: F (frames ahead).
        image_size: input image side (0 = state-only policy). crop_size: random crop in training,
            centre crop at inference (0 = none).
        dim, num_heads, depth_dual, depth_tail, mlp_ratio: transformer size.
        encoder: image encoder, ``cnn`` (`ConvEncoder`) or ``vit`` (`apps.robotics.vit.ViTEncoder`, patches of
            the (cropped) image); both trained jointly from scratch and give a ``(B, C, grid, grid)`` map.
        enc_channels: CNN width. grid: side of the pooled feature map (grid² future tokens).
        vit_patch, vit_dim, vit_depth, vit_heads: ViT patch side, width (= C), blocks and heads.
        future_target: one of ``ema | random_conv | patches | state`` (module docstring).
        ema_decay: decay of the EMA target encoder.
        variant: ``dust`` / ``joint_noise`` (same network) or ``action_only`` (empty vision stream, no
            vision head).
        n_tasks: > 0 adds a learned task embedding (multi-task data, e.g. LeRobot ``task_index``) to
            every observation token and the condition; 0 = single task.
        future_frames: K future states as K vision tokens (``future_target='state'`` only; the data
            module must use the same K). 1 = DUST's single future observation.
        target_state_dim: width of the future states when they have their own columns (the data
            module's ``target_keys``; ``future_target='state'`` only), normalised with their own
            statistics; None = the observation's state (``state_dim``).
    """

    def __init__(self, action_dim: int = 2, state_dim: int = 2, horizon: int = 16, n_obs: int = 2,
                 future_offset: int | None = None, image_size: int = 96, crop_size: int = 84,
                 dim: int = 128, num_heads: int = 4, depth_dual: int = 4, depth_tail: int = 1,
                 mlp_ratio: float = 4.0, enc_channels: int = 32, grid: int = 4,
                 future_target: str = "ema", ema_decay: float = 0.995, variant: str = "dust", n_tasks: int = 0,
                 encoder: str = "cnn", vit_patch: int = 12, vit_dim: int = 64, vit_depth: int = 2, vit_heads: int = 4,
                 future_frames: int = 1, target_state_dim: int | None = None):
        super().__init__()
        self.encoder_kind = check_option("encoder", encoder, ENCODERS)
        self.future_target = check_option("future_target", future_target, FUTURE_TARGETS)
        self.variant = check_option("variant", variant, VARIANTS)
        if image_size <= 0 and future_target != "state":
            raise ValueError(f"future_target={future_target!r} needs images; use 'state' when image_size=0")
        if image_size > 0 and crop_size > image_size:
            raise ValueError(f"crop_size ({crop_size}) must be <= image_size ({image_size})")
        self.action_dim, self.state_dim, self.horizon, self.n_obs = action_dim, state_dim, horizon, n_obs
        self.future_offset = horizon if future_offset is None else future_offset
        self.future_frames = int(future_frames)
        if self.future_frames > 1 and future_target != "state":
            raise ValueError(f"future_frames={future_frames} needs future_target='state' (got {future_target!r})")
        self.future_steps = future_offsets(self.future_offset, self.future_frames)  # validates K
        if target_state_dim is not None and (future_target != "state" or int(target_state_dim) < 1):
            raise ValueError(f"target_state_dim={target_state_dim} needs future_target='state' and a positive "
                             f"width (got future_target={future_target!r})")
        self.target_state_dim = None if target_state_dim is None else int(target_state_dim)
        self.image_size, self.crop_size, self.grid, self.ema_decay = image_size, crop_size, grid, ema_decay
        self.use_image = image_size > 0
        # {field: per-frame shape} of the observation fields the state spec read in the training data
        # (set by the data module, carried by checkpoints beside the weights); None = unknown (older ones)
        self.obs_field_shapes: dict[str, list[int]] | None = None
        d = dim
        # Normalisation buffers (identity until set_stats); saved in every checkpoint.
        self.register_buffer("state_min", -torch.ones(state_dim))
        self.register_buffer("state_max", torch.ones(state_dim))
        if self.target_state_dim is not None:  # only then: older checkpoints keep loading strictly
            self.register_buffer("target_min", -torch.ones(self.target_state_dim))
            self.register_buffer("target_max", torch.ones(self.target_state_dim))
        self.register_buffer("action_min", -torch.ones(action_dim))
        self.register_buffer("action_max", torch.ones(action_dim))
        self.register_buffer("image_mean", torch.full((3,), 0.5))
        self.register_buffer("image_std", torch.full((3,), 0.5))
        self.register_buffer("stats_set", torch.zeros((), dtype=torch.bool))
        # Observation encoder.
        self.state_proj = nn.Sequential(nn.Linear(state_dim, d), nn.SiLU(), nn.Linear(d, d))
        if self.use_image:
            if encoder == "vit":
                from apps.robotics.vit import ViTEncoder

                enc_in = crop_size if 0 < crop_size < image_size else image_size
                self.encoder = ViTEncoder(enc_in, vit_patch, vit_dim, vit_depth, vit_heads, grid)
            else:
                self.encoder = ConvEncoder(enc_channels, grid)
            self.image_proj = nn.Linear(self.encoder.out_channels * grid * grid, d)
        self.obs_pos = nn.Parameter(torch.zeros(n_obs, d))
        self.n_tasks = int(n_tasks)
        self.task_emb = nn.Embedding(self.n_tasks, d) if self.n_tasks > 0 else None
        self.action_in = nn.Linear(action_dim, d)
        # Vision target encoder; none for action_only, which predicts no future and so needs no target
        # (policies saved with one still load: see _drop_unused_target).
        self.target_encoder: nn.Module | None = None
        if variant == "action_only":
            pass
        elif future_target == "ema":
            self.target_encoder = copy.deepcopy(self.encoder)
        elif future_target == "random_conv":
            g = torch.Generator().manual_seed(1234)
            self.target_encoder = ConvEncoder(enc_channels, grid)
            for p in self.target_encoder.parameters():
                if p.ndim > 1:
                    p.data = torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5
        if self.target_encoder is not None:
            for p in self.target_encoder.parameters():
                p.requires_grad_(False)
        if future_target in ("ema", "random_conv"):  # the encoder's width; the random one is a ConvEncoder
            width = self.encoder.out_channels if future_target == "ema" else 2 * enc_channels
            self.target_dim, self.n_future = width, grid * grid
        elif future_target == "patches":
            self.target_dim, self.n_future = 3 * (16 // grid) ** 2, grid * grid
        else:
            self.target_dim, self.n_future = self.target_state_dim or state_dim, self.future_frames
        # action_only: the core runs a zero-token stream (joint attention reduces to self-attention).
        self.n_future_tokens = 0 if variant == "action_only" else self.n_future
        head_dim = d // num_heads
        axes = (head_dim - 2 * (head_dim // 3 // 2 * 2), head_dim // 3 // 2 * 2, head_dim // 3 // 2 * 2)
        self.transformer = DualStreamTransformer(DualStreamConfig(
            in_dim_a=d, in_dim_b=self.target_dim, out_dim_a=action_dim,
            out_dim_b=0 if variant == "action_only" else self.target_dim,
            dim=d, num_heads=num_heads, depth_dual=depth_dual, depth_tail=depth_tail, mlp_ratio=mlp_ratio,
            cond_dim=d, rope_axes_dim=axes))
        self.register_buffer("pos_a", self._positions_a(), persistent=False)
        self.register_buffer("pos_b", self._positions_b(), persistent=False)
        self.register_load_state_dict_pre_hook(_drop_unused_target)

    # --------------------------------------------------------------------------- positions
    def _positions_a(self) -> Tensor:
        frames = torch.cat([torch.arange(-self.n_obs + 1, 1), torch.arange(self.horizon)]).float()
        return torch.stack([frames, torch.zeros_like(frames), torch.zeros_like(frames)], -1)

    def _positions_b(self) -> Tensor:
        if self.n_future_tokens == 0:
            return torch.zeros(0, 3)
        if self.future_target == "state":  # one token per future frame, at that frame
            return torch.tensor([[float(f), 0.0, 0.0] for f in self.future_steps])
        g = self.grid
        rows, cols = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
        return torch.stack([torch.full((g * g,), float(self.future_offset)), rows.reshape(-1).float() + 1,
                            cols.reshape(-1).float() + 1], -1)

    # ------------------------------------------------------------------------ normalisation
    @torch.no_grad()
    def set_stats(self, stats: dict[str, dict[str, Tensor]]) -> None:
        """Load normalisation statistics (from `apps.robotics.data.windows.dataset_stats`)."""
        if self.target_state_dim is not None and "target" not in stats:
            raise ValueError("this net imagines future states of their own spec (target_state_dim="
                             f"{self.target_state_dim}); the statistics have no 'target' entry (data module target_keys)")
        pairs = [("state", ("state_min", "state_max")), ("action", ("action_min", "action_max"))]
        if self.target_state_dim is not None:
            pairs.append(("target", ("target_min", "target_max")))
        for key, (lo, hi) in pairs:
            if key in stats:
                s_min, s_max = stats[key]["min"], stats[key]["max"]
                want = getattr(self, lo).shape
                if s_min.shape != want:
                    raise ValueError(f"{key} statistics have {tuple(s_min.shape)} dims, the model expects "
                                     f"{tuple(want)} ({key}_dim or target_state_dim in the model config)")
                getattr(self, lo).copy_(s_min)
                getattr(self, hi).copy_(s_max)
        if "image" in stats:
            self.image_mean.copy_(stats["image"]["mean"])
            self.image_std.copy_(stats["image"]["std"])
        self.stats_set.fill_(True)

    @staticmethod
    def _scale(x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        """Min-max scaling of ``x`` to [-1, 1] per dimension."""
        rng = (hi - lo).clamp_min(1e-6)
        return 2.0 * (x - lo) / rng - 1.0

    @staticmethod
    def _unscale(x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        """Inverse of `_scale`."""
        rng = (hi - lo).clamp_min(1e-6)
        return (x + 1.0) * 0.5 * rng + lo

    def normalize_state(self, s: Tensor) -> Tensor:
        return self._scale(s, self.state_min, self.state_max)

    def unnormalize_state(self, s: Tensor) -> Tensor:
        """Inverse of `normalize_state`: e.g. imagined future states (``future_target='state'``) in raw units."""
        return self._unscale(s, self.state_min, self.state_max)

    def _future_bounds(self) -> tuple[Tensor, Tensor]:
        """Scaling bounds of the future states: the target's own, or the observation's state's."""
        if self.target_state_dim is None:
            return self.state_min, self.state_max
        return self.target_min, self.target_max

    def normalize_future(self, s: Tensor) -> Tensor:
        """Future states ``(..., D_t)`` as the vision stream sees them (the target's own scale, if any)."""
        return self._scale(s, *self._future_bounds())

    def unnormalize_future(self, s: Tensor) -> Tensor:
        """Inverse of `normalize_future`: imagined future states in raw units."""
        return self._unscale(s, *self._future_bounds())

    def normalize_action(self, a: Tensor) -> Tensor:
        return self._scale(a, self.action_min, self.action_max)

    def unnormalize_action(self, a: Tensor) -> Tensor:
        return self._unscale(a, self.action_min, self.action_max)

    def normalize_image(self, img: Tensor) -> Tensor:
        """``img: (..., 3, h, w)`` uint8 -> float, per-channel mean/std; crop to ``crop_size``."""
        if img.shape[-1] != self.image_size or img.shape[-2] != self.image_size or img.shape[-3] != 3:
            raise ValueError(f"image shape {tuple(img.shape[-3:])} differs from the checkpoint's "
                             f"(3, {self.image_size}, {self.image_size})")
        x = (img.float() / 255.0 - self.image_mean[:, None, None]) / self.image_std[:, None, None]
        return self._crop(x)

    def _crop(self, x: Tensor) -> Tensor:
        c = self.crop_size
        if c <= 0 or c == self.image_size:
            return x
        if self.training:
            # One random offset per call (per batch): cheap and enough augmentation on CPU budgets.
            i, j = (int(v) for v in torch.randint(0, self.image_size - c + 1, (2,)))
        else:
            i = j = (self.image_size - c) // 2
        return x[..., i:i + c, j:j + c]

    # ----------------------------------------------------------------------------- encoders
    def encode_obs(self, obs_state: Tensor, obs_image: Tensor | None = None,
                   task: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Observation tokens and global condition.

        Args:
            obs_state: ``(B, n_obs, D_s)`` raw state. obs_image: ``(B, n_obs, 3, h, w)`` uint8.
            task: ``(B,)`` int task ids (needed when ``n_tasks > 0``, ignored otherwise).
        Returns:
            tokens ``(B, n_obs, D)``, cond ``(B, D)``.
        """
        if obs_state.shape[1:] != (self.n_obs, self.state_dim):
            raise ValueError(f"obs_state must be (B, {self.n_obs}, {self.state_dim}), got {tuple(obs_state.shape)}")
        if not torch.isfinite(obs_state).all():
            raise ValueError("obs_state contains NaN or inf")
        tok = self.state_proj(self.normalize_state(obs_state))
        if self.use_image:
            if obs_image is None:
                raise ValueError("this policy needs images (obs_image) but none were given")
            b, n = obs_image.shape[:2]
            x = self.normalize_image(obs_image.reshape(b * n, *obs_image.shape[2:]))
            feat = self.encoder(x).reshape(b, n, -1)
            tok = tok + self.image_proj(feat)
        tok = tok + self.obs_pos
        if self.task_emb is not None:
            if task is None:
                raise ValueError(f"this policy was trained on {self.n_tasks} tasks: pass task ids (task_index)")
            task = task.reshape(-1).long().to(tok.device)
            if task.min() < 0 or task.max() >= self.n_tasks:
                raise ValueError(f"task ids must be in [0, {self.n_tasks}), got {task.tolist()}")
            tok = tok + self.task_emb(task)[:, None, :]
        return tok, tok.mean(dim=1)

    @torch.no_grad()
    def future_tokens(self, future_state: Tensor, future_image: Tensor | None = None,
                      future_states: Tensor | None = None) -> Tensor:
        """Vision-stream target ``(B, L_b, target_dim)`` of the future observation (no gradient).

        ``future_states (B, K, D_s)`` (the windows' item) is needed when ``future_frames = K > 1``.
        """
        if self.future_target == "state":
            if self.future_frames == 1:
                return self.normalize_future(future_state)[:, None, :]
            if future_states is None or future_states.shape[1] != self.future_frames:
                got = None if future_states is None else tuple(future_states.shape)
                raise ValueError(f"future_frames={self.future_frames} needs future_states (B, "
                                 f"{self.future_frames}, {self.target_dim}) from the windows, got {got}")
            return self.normalize_future(future_states)
        x = self.normalize_image(future_image)
        if self.future_target == "patches":
            x = F.adaptive_avg_pool2d(x, 16)
            p = 16 // self.grid
            b = x.shape[0]
            x = x.reshape(b, 3, self.grid, p, self.grid, p).permute(0, 2, 4, 1, 3, 5)
            return x.reshape(b, self.grid * self.grid, 3 * p * p)
        was = self.target_encoder.training
        self.target_encoder.eval()
        f = self.target_encoder(x)
        self.target_encoder.train(was)
        f = f.flatten(2).transpose(1, 2)  # (B, g*g, C)
        return F.layer_norm(f, f.shape[-1:])

    @torch.no_grad()
    def update_target(self) -> None:
        """EMA step of the target encoder toward the online encoder (``future_target='ema'`` only)."""
        if self.future_target != "ema" or self.target_encoder is None:
            return
        for p_t, p in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            p_t.lerp_(p.detach(), 1.0 - self.ema_decay)

    # ------------------------------------------------------------------------------ denoise
    def forward(self, obs_tokens: Tensor, cond: Tensor, x_a: Tensor, t_a: Tensor, x_b: Tensor | None,
                t_b: Tensor) -> tuple[Tensor, Tensor | None]:
        """One joint pass: flow velocities for both streams.

        Args:
            obs_tokens: ``(B, n_obs, D)``; cond: ``(B, D)`` (from `encode_obs`).
            x_a: ``(B, H, D_a)`` noisy normalised actions; t_a: ``(B,)`` (t = 1 noise).
            x_b: ``(B, L_b, target_dim)`` noisy future tokens (ignored for action_only); t_b: ``(B,)``.
        Returns:
            ``u_a (B, H, D_a)``, ``u_b (B, L_b, target_dim)`` or None for action_only.
        """
        b = x_a.shape[0]
        h_a = torch.cat([obs_tokens, self.action_in(x_a)], dim=1)
        # One time per sample for the whole action stream (observation tokens included): per-token
        # times (obs at t = 0) would make every block's modulation per token, several times the cost
        # on CPU, and the observation tokens are clean content the attention reads either way.
        if self.variant == "action_only":
            x_b = torch.zeros(b, 0, self.target_dim, device=x_a.device, dtype=x_a.dtype)
            t_b = torch.ones(b, device=x_a.device, dtype=t_a.dtype)
        y_a, y_b = self.transformer(h_a, x_b, t_a, t_b, cond=cond, pos_a=self.pos_a, pos_b=self.pos_b)
        return y_a[:, self.n_obs:], y_b
