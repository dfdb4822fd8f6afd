"""3-D paired generation: the model on volume patches, sampling, training, writing, the datamodule."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from apps.medseg.generate import GenerateError, generate, save_generator
from apps.medseg.model import MedSegNet
from apps.medseg.objective import PairObjective
from apps.medseg.sampling import sample_pairs

from .conftest import loss_before_after

LABELS = ["liver", "spleen", "kidney_left"]
NET3D = dict(labels=LABELS, image_size=16, patch=4, dim=48, depth=1, num_heads=2, spatial_dims=3,
             volume_depth=8, patch_depth=2)


def _perturbed(**kw) -> MedSegNet:
    torch.manual_seed(0)
    net = MedSegNet(**{**NET3D, **kw})
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().sum() == 0:  # zero-initialised heads: make outputs depend on the inputs
                p.normal_(0, 0.02)
    return net


def test_3d_model_shapes_tokens_and_rope_axes():
    net = _perturbed()
    assert net.spatial_shape == (16, 16, 8)
    assert net.pos.shape == (4 * 4 * 4, 3)  # (16/4) x (16/4) x (8/2) tokens, (x, y, z) coordinates
    assert sum(net.config.rope_axes_dim) == 48 // 2 and len(net.config.rope_axes_dim) == 3
    B = 2
    img, msk = torch.randn(B, 1, 16, 16, 8), net.encode_mask(torch.randint(0, 4, (B, 16, 16, 8)))
    assert msk.shape == (B, 4, 16, 16, 8)
    p = net.vocab.encode_batch([net.vocab.parse("CT liver")] * B)
    out_img, out_msk = net(img, msk, torch.full((B,), 0.5), torch.full((B,), 0.5), p, p)
    assert out_img.shape == img.shape and out_msk.shape == msk.shape
    with pytest.raises(ValueError, match="spatial shape"):
        net(torch.randn(B, 1, 16, 16), msk, torch.zeros(B), torch.zeros(B), p, p)
    with pytest.raises(ValueError, match="spatial_dims.*allowed"):
        MedSegNet(**{**NET3D, "spatial_dims": 4})
    with pytest.raises(ValueError, match="volume_depth=8 must be divisible by patch_depth=3"):
        MedSegNet(**{**NET3D, "patch_depth": 3})


def test_3d_streams_and_z_blocks_interact():
    """Changing the image in the last z-block of tokens changes the image output there, and the mask output
    in the first z-block (the mask stream reads the image across z through Joint Cross-Attention)."""
    net = _perturbed().eval()
    img = torch.randn(1, 1, 16, 16, 8)
    msk = net.encode_mask(torch.zeros(1, 16, 16, 8, dtype=torch.long))
    p = net.vocab.encode_batch([net.vocab.parse("CT liver")])
    t = torch.full((1,), 0.7)
    with torch.no_grad():
        a_img, a_msk = net(img, msk, t, t, p, p)
        img2 = img.clone()
        img2[..., 6:8] += 1.0  # only the last z-block of tokens
        b_img, b_msk = net(img2, msk, t, t, p, p)
    assert (b_img[..., 6:8] - a_img[..., 6:8]).abs().max() > 1e-4
    assert (b_msk[..., :2] - a_msk[..., :2]).abs().max() > 1e-6  # the mask stream of other z reads the image


def test_3d_training_reduces_the_loss_and_sampling_is_seeded():
    net = _perturbed()
    obj = PairObjective(p_drop_image=0, p_drop_mask=0, p_drop_both=0)
    m = torch.zeros(2, 16, 16, 8, dtype=torch.long)
    m[:, 4:12, 4:10, 2:6] = 1
    batch = {"image": m[:, None].float() * 1.2 - 0.6, "mask": m,
             "prompt": net.vocab.encode_batch([net.vocab.parse("CT liver")] * 2)}
    before, after = loss_before_after(net, obj, batch, steps=30)
    assert after < 0.7 * before
    prompts = net.vocab.encode_batch([net.vocab.parse("CT liver")] * 2)
    img, msk = sample_pairs(net, obj, prompts, [3, 4], steps=3)
    assert img.shape == (2, 1, 16, 16, 8) and msk.shape == (2, 16, 16, 8) and msk.dtype == torch.long
    img1, msk1 = sample_pairs(net, obj, prompts[1:], [4], steps=3)
    torch.testing.assert_close(img1[0], img[1])
    given = torch.zeros(1, 16, 16, 8, dtype=torch.long)
    given[0, 2:6, 2:6, 1:5] = 2
    _, out = sample_pairs(net, obj, prompts[:1], [0], steps=3, mode="mask2image", mask=given)
    assert torch.equal(out, given)


def test_3d_generate_writes_volumes_and_refuses_masks(tmp_path):
    net = _perturbed()
    ckpt = save_generator(tmp_path / "g3d.pt", net, NET3D, {})
    out = tmp_path / "gen"
    res = generate(ckpt, ["CT abdomen with liver and spleen"], out, n=2, steps=2, spacing=(1.5, 1.5, 3.0),
                   progress=False)
    assert res["pairs"] == 2
    recs = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert all(r["shape"] == [16, 16, 8] for r in recs)
    from apps.medseg.layouts import read_dataset

    idx = read_dataset(next((out / "msd").iterdir()))
    lab = nib.load(idx.cases[0].label)
    assert np.asarray(lab.dataobj).shape == (16, 16, 8) and lab.header.get_zooms() == (1.5, 1.5, 3.0)
    assert (out / "previews" / f"{recs[0]['id']}.png").exists()
    with pytest.raises(GenerateError, match="needs a 2-D generator"):
        generate(ckpt, [], tmp_path / "m", n=1, steps=2, masks=idx.cases[0].label, progress=False)
    assert not (tmp_path / "m").exists()


def test_datamodule_3d_patches_from_the_training_z_range(phantom_dir):
    from apps.medseg.datamodule import MedSegDataModule

    dm = MedSegDataModule(labels=LABELS, root=str(phantom_dir), patch_3d=(16, 16, 4), patches_per_epoch=5,
                          z_range=(0.0, 0.5))
    dm.setup("fit")
    item = dm.train_set[0]
    assert item["image"].shape == (1, 16, 16, 4) and item["mask"].shape == (16, 16, 4)
    assert len(dm.train_set) == 5 and len(dm.val_set) == 8
    assert all(v.image.shape[2] == 4 for v in dm.train_set.volumes)  # 8 slices, lower half kept
    with pytest.raises(ValueError, match="patch_3d must be"):
        MedSegDataModule(labels=LABELS, patch_3d=(16, 8, 4))


def test_cli_fit_3d_then_generate_from_lightning_checkpoint(tmp_path):
    from apps.medseg.cli import CONFIG_DIR, main

    ckpt_dir = tmp_path / "ckpt"
    main(["fit", "--config", str(CONFIG_DIR / "demo.yaml"), "--trainer.max_steps", "2",
          "--trainer.default_root_dir", str(tmp_path / "fit"), "--trainer.callbacks.init_args.dirpath", str(ckpt_dir),
          "--model.init_args.net.init_args.spatial_dims", "3", "--model.init_args.net.init_args.image_size", "16",
          "--model.init_args.net.init_args.volume_depth", "8", "--model.init_args.net.init_args.patch_depth", "2",
          "--model.init_args.net.init_args.dim", "48", "--model.init_args.net.init_args.depth", "1",
          "--data.init_args.patch_3d", "[16, 16, 8]", "--data.init_args.patches_per_epoch", "4",
          "--data.init_args.batch_size", "2",
          "--data.init_args.phantom_cases", "2", "--data.init_args.root_cache", str(tmp_path / "phantom")])
    res = generate(ckpt_dir / "last.ckpt", ["CT liver"], tmp_path / "g", n=1, steps=2, progress=False)
    assert res["pairs"] == 1

