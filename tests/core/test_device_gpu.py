"""The network and the Lightning path on an accelerator (skipped without CUDA).

Checks what a CPU run cannot: the CUDA SDPA kernels agree with the CPU ones (masks, cross mode,
RoPE, per-token times), bf16 autocast trains, and a Lightning fit runs on the GPU with EMA.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from dualsci.diffusion import GaussianObjective, LogitNormalTime, RectifiedFlowPath, VelocityParam
from dualsci.nn import DualStreamConfig, DualStreamTransformer
from dualsci.training import DiffusionModule, make_ema
from dualsci.training.objectives import JointGaussianObjective
from dualsci.training.toy import ToyDualDataModule

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _net(attn_mode: str, rope_kind: str = "nd") -> DualStreamTransformer:
    cfg = DualStreamConfig(
        in_dim_a=3, in_dim_b=5, dim=64, num_heads=4, depth_dual=2, depth_single=1, attn_mode=attn_mode,
        rope_axes_dim=(4, 6, 6), rope_kind=rope_kind, cond_dim=7,
    )
    net = DualStreamTransformer(cfg)
    # Zero-initialised heads and gates would make every output 0: randomise so the comparison bites.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("attn_mode", ["joint", "cross", "self"])
def test_cuda_matches_cpu_with_masks_and_per_token_times(attn_mode):
    torch.manual_seed(0)
    net = _net(attn_mode, rope_kind="geo" if attn_mode == "joint" else "nd").eval()
    B, L_a, L_b = 3, 10, 7
    inputs = dict(
        x_a=torch.randn(B, L_a, 3), x_b=torch.randn(B, L_b, 5),
        t_a=torch.rand(B, L_a), t_b=torch.rand(B),
        cond=torch.randn(B, 7),
        pos_a=torch.rand(B, L_a, 3) * 3, pos_b=torch.rand(B, L_b, 3) * 3,
        mask_a=torch.arange(L_a)[None].expand(B, L_a) < torch.tensor([[10], [6], [3]]),
        mask_b=torch.arange(L_b)[None].expand(B, L_b) < torch.tensor([[7], [7], [2]]),
    )
    with torch.no_grad():
        ref_a, ref_b = net(**inputs)
        gpu = net.to("cuda")
        out_a, out_b = gpu(**{k: v.cuda() for k, v in inputs.items()})
    torch.testing.assert_close(out_a.cpu(), ref_a, rtol=2e-3, atol=2e-4)
    torch.testing.assert_close(out_b.cpu(), ref_b, rtol=2e-3, atol=2e-4)


def test_cuda_bf16_autocast_trains():
    torch.manual_seed(0)
    net = _net("joint").cuda()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x_a, x_b = torch.randn(8, 16, 3, device="cuda"), torch.randn(8, 12, 5, device="cuda")
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y_a, y_b = net(x_a, x_b, torch.rand(8, device="cuda"), torch.rand(8, device="cuda"),
                           cond=torch.zeros(8, 7, device="cuda"))
            loss = (y_a.float() - x_a).pow(2).mean() + (y_b.float() - x_b).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


class _RecordDevice(pl.Callback):
    """Lightning moves the module back to the CPU at teardown, so look during training."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.device = next(pl_module.net.parameters()).device.type


def test_lightning_fit_on_gpu_bf16_with_ema(tmp_path):
    torch.manual_seed(0)
    net = DualStreamTransformer(DualStreamConfig(in_dim_a=2, in_dim_b=1, dim=64, num_heads=4, depth_dual=2, rope_axes_dim=(16,)))
    stream = GaussianObjective(RectifiedFlowPath(), VelocityParam(), LogitNormalTime())
    module = DiffusionModule(net, JointGaussianObjective(stream, stream))
    trainer = pl.Trainer(
        accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=30, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, callbacks=[make_ema(decay=0.9), seen := _RecordDevice()],
        default_root_dir=tmp_path, limit_val_batches=2,
    )
    trainer.fit(module, ToyDualDataModule(n_train=512, n_val=64, batch_size=32))
    assert trainer.global_step == 30
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    assert seen.device == "cuda"
