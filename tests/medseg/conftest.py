"""Fixtures of the medseg tests: a tiny phantom MSD dataset and the real TotalSegmentator files."""

from __future__ import annotations

import pytest

from apps.medseg.labels import LabelDict
from apps.medseg.phantom import write_phantom_msd

CT = "medseg/totalseg_ct_abdomen_3mm.nii.gz"
CT_SEG = "medseg/totalseg_ct_abdomen_3mm_seg.nii.gz"
MR = "medseg/totalseg_mr_abdomen_3mm.nii.gz"
MR_SEG = "medseg/totalseg_mr_abdomen_3mm_seg.nii.gz"
LABELS_JSON = "medseg/totalseg_labels.json"
ORGANS = ["liver", "spleen", "kidney_left", "kidney_right", "stomach"]


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory):
    """A 3-case CT phantom in MSD layout (32 x 32 x 8)."""
    return write_phantom_msd(tmp_path_factory.mktemp("ph") / "msd", n_cases=3, modality="CT", seed=0,
                             shape=(32, 32, 8))


@pytest.fixture
def totalseg_ct(shared_file):
    src = LabelDict.from_json(shared_file(LABELS_JSON), key="total")
    return shared_file(CT), shared_file(CT_SEG), src


@pytest.fixture(autouse=True)
def _one_thread(_two_threads_and_seed):
    """The medseg tests use tiny tensors: one intra-op thread avoids OpenMP barrier overhead, which on a
    loaded 2-core runner made a tiny UNet step ~7x slower with 2 threads than with 1."""
    import torch

    torch.set_num_threads(1)
    yield


TINY_NET = dict(labels=["liver", "spleen", "kidney_left"], image_size=16, patch=4, dim=32, depth=2, num_heads=2,
                prompt_dim=16)


@pytest.fixture
def tiny_generator(tmp_path):
    """A small untrained-but-perturbed generator file (heads non-zero so outputs depend on inputs)."""
    import torch

    from apps.medseg.generate import save_generator
    from apps.medseg.model import MedSegNet

    torch.manual_seed(0)
    net = MedSegNet(**TINY_NET)
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.02)
    return save_generator(tmp_path / "gen.pt", net, TINY_NET, {})


def loss_before_after(net, obj, batch: dict, steps: int, lr: float = 3e-3, evals: int = 4) -> tuple[float, float]:
    """Mean objective loss on ``batch`` (fixed noise seed) before and after ``steps`` AdamW steps on it."""
    import torch

    def avg_loss() -> float:
        torch.manual_seed(1)
        with torch.no_grad():
            return sum(float(obj.loss(net, batch)["loss"]) for _ in range(evals)) / evals

    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    before = avg_loss()
    for _ in range(steps):
        loss = obj.loss(net, batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, avg_loss()
