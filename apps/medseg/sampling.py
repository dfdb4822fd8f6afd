"""Generation from the paired model: prompt -> (image, mask), mask -> image, image -> mask.

One loop for all three (the core's ``sample_joint`` over a per-stream ``JointSchedule``):

- ``"joint"``: ``synchronous(n)`` — both streams from noise with the same t (MedSegFactory inference);
- ``"mask2image"``: ``conditional_b(n)`` — the mask stream is given clean at t = 0 and never moves;
- ``"image2mask"``: the same schedule with the columns swapped — the image is given, the mask is
  denoised (segmentation by diffusion).

Classifier-free guidance per stream: each step runs the conditional and the null prompt in one
batch, and guides the image and mask x0 estimates with their own scales. The initial noise of
sample i comes from ``seeds[i]`` only (``per_sample_noise``), so a pair does not depend on the
batch it was generated in.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor

from dualsci.diffusion.guidance import cfg
from dualsci.diffusion.joint import JointSchedule, sample_joint
from dualsci.diffusion.seeding import per_sample_noise

Mode = Literal["joint", "mask2image", "image2mask"]
MODES = ("joint", "mask2image", "image2mask")


def schedule_for(mode: str, steps: int) -> JointSchedule:
    """The joint schedule of a generation mode (a = image, b = mask)."""
    if mode not in MODES:
        raise ValueError(f"mode: unknown {mode!r}; allowed: {list(MODES)}")
    if mode == "joint":
        return JointSchedule.synchronous(steps)
    sched = JointSchedule.conditional_b(steps)
    return sched if mode == "mask2image" else JointSchedule(sched.times.flip(1))


@torch.no_grad()
def sample_pairs(
    net,
    objective,
    prompts: Tensor,
    seeds: Sequence[int],
    steps: int = 20,
    cfg_scale: tuple[float, float] | float = (2.0, 2.0),
    mode: Mode = "joint",
    image: Tensor | None = None,
    mask: Tensor | None = None,
    solver: Literal["euler", "heun"] = "euler",
    bf16: bool = False,
    cfg_interval: tuple[float, float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Generate B pairs.

    Args:
        net: a :class:`~apps.medseg.model.MedSegNet`.
        objective: the :class:`~apps.medseg.objective.PairObjective` it was trained with.
        prompts: (B, V + 1) multi-hot prompt vectors.
        seeds: B integers; sample i depends only on seeds[i].
        steps: sampler steps (network calls per pair = steps, ×2 batch rows when guided).
        cfg_scale: guidance scale (image, mask); 1 = no guidance (and no extra batch rows).
        mode: ``"joint"``, ``"mask2image"`` (needs ``mask``) or ``"image2mask"`` (needs ``image``).
        image: (B, C, *spatial) in [-1, 1] for ``image2mask``; mask: (B, *spatial) long for ``mask2image``
            (``spatial`` = ``net.spatial_shape``: (S, S) for a 2-D generator, (S, S, D) for a 3-D one).
        cfg_interval: ``(lo, hi)``: guide only the steps whose noise level t (of the moving stream) lies in
            ``[lo, hi]`` (guidance interval, Kynkäänniemi et al. 2024); other steps run the conditional
            rows only (half the network rows). None = guide every step.
        bf16: run the network under CPU bf16 autocast (opt-in: a win only with AVX512-BF16/AMX); the
            sampler state and the guidance arithmetic stay float32.

    Returns:
        images (B, C, *spatial) clamped to [-1, 1] and masks (B, *spatial) long.
    """
    was_training = net.training
    net.eval()
    B, C, M, spatial = prompts.shape[0], net.image_channels, net.mask_channels, tuple(net.spatial_shape)
    w_img, w_msk = (cfg_scale, cfg_scale) if isinstance(cfg_scale, (int, float)) else cfg_scale
    guided = not (w_img == 1 and w_msk == 1)
    seeds = [int(s) for s in seeds]
    noise_img = per_sample_noise((B, C, *spatial), seeds)
    # The mask noise of sample i comes from a second stream of the same seed (seed + 2**31).
    noise_msk = per_sample_noise((B, M, *spatial), [s + 2**31 for s in seeds])
    if mode == "mask2image":
        if mask is None:
            raise ValueError(f"mode 'mask2image' needs mask (B, {', '.join(map(str, spatial))})")
        noise_msk = net.encode_mask(mask.long())
    if mode == "image2mask":
        if image is None:
            raise ValueError(f"mode 'image2mask' needs image (B, C, {', '.join(map(str, spatial))})")
        noise_img = image.float()
    prompts = prompts.float()
    null = net.vocab.null().expand_as(prompts)

    if cfg_interval is not None and not (0.0 <= cfg_interval[0] <= cfg_interval[1] <= 1.0):
        raise ValueError(f"cfg_interval must be (lo, hi) with 0 <= lo <= hi <= 1, got {cfg_interval}")

    def guide_now(t_a: Tensor, t_b: Tensor) -> bool:
        if not guided:
            return False
        if cfg_interval is None:
            return True
        t = float(torch.maximum(t_a, t_b).max())  # the moving stream's level (a given stream sits at 0)
        return cfg_interval[0] <= t <= cfg_interval[1]

    def joint_fn(x_a: Tensor, t_a: Tensor, x_b: Tensor, t_b: Tensor) -> tuple[Tensor, Tensor]:
        guide = guide_now(t_a, t_b)
        if guide:
            xa, xb, ta, tb = (torch.cat([v, v]) for v in (x_a, x_b, t_a, t_b))
            pr = torch.cat([prompts, null])
        else:
            xa, xb, ta, tb, pr = x_a, x_b, t_a, t_b, prompts
        in_a, c_a = objective.stream.net_input(xa, ta)
        in_b, c_b = objective.stream.net_input(xb, tb)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            F_a, F_b = net(in_a, in_b, c_a, c_b, pr, pr)
        F_a, F_b = F_a.float(), F_b.float()
        x0_a = objective.stream.to_x0(F_a, xa, ta)
        x0_b = objective.stream.to_x0(F_b, xb, tb)
        if guide:
            x0_a = cfg(*x0_a.chunk(2), w_img)
            x0_b = cfg(*x0_b.chunk(2), w_msk)
        return x0_a, x0_b

    x_img, x_msk = sample_joint(joint_fn, noise_img, noise_msk, schedule_for(mode, steps),
                                objective.path, objective.path, solver=solver)
    net.train(was_training)
    return x_img.clamp(-1, 1), net.decode_mask(x_msk)
