"""The forecaster's EDM objective: the training-time random crop of a batch (``train_crop``)."""

from __future__ import annotations

import pytest
import torch

from apps.weather.model import WeatherForecaster
from apps.weather.objective import SPATIAL_KEYS, WeatherEDMObjective, crop_batch


def _batch(b: int = 2, k: int = 2, c: int = 1, h: int = 8, w: int = 12, history: int = 1) -> dict:
    """A batch whose every spatial entry holds the cell's own (row, col) code, so a crop can be read back."""
    code = (torch.arange(h)[:, None] * 100 + torch.arange(w)[None]).float()  # (H, W)
    return {
        "x0": code.expand(b, c, h, w).clone(),
        "y": code.expand(b, k, c, h, w).clone(),
        "statics": code.expand(b, 2, h, w).clone(),
        "x_hist": code.expand(b, history, c, h, w).clone(),
        "prior": torch.zeros(b, k, c, h, w),
        "delta_scale": torch.ones(b, k, c),
        "init_time": torch.zeros(b, dtype=torch.int64),
        "lat": torch.linspace(50, 57, h, dtype=torch.float64).expand(b, h),
        "lon": torch.linspace(350, 361, w, dtype=torch.float64).remainder(360).expand(b, w),
    }


def test_crop_batch_cuts_every_spatial_entry_at_the_same_cells():
    batch = _batch()
    seen = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        out = crop_batch(batch, (4, 8), gen)
        i, j = int(out["x0"][0, 0, 0, 0]) // 100, int(out["x0"][0, 0, 0, 0]) % 100
        seen.add((i, j))
        for key in SPATIAL_KEYS:
            if key in batch:
                assert out[key].shape[-2:] == (4, 8), key
                assert torch.equal(out[key], batch[key][..., i:i + 4, j:j + 8]), key
        assert torch.equal(out["lat"], batch["lat"][:, i:i + 4]) and torch.equal(out["lon"], batch["lon"][:, j:j + 8])
        assert torch.equal(out["delta_scale"], batch["delta_scale"])  # not spatial: untouched
    assert batch["x0"].shape[-2:] == (8, 12)  # the input batch is not changed
    # offsets at any cell, not only patch multiples: rows 0..4, columns 0..4
    assert {i for i, _ in seen} == set(range(5)) and {j for _, j in seen} == set(range(5))
    with pytest.raises(ValueError, match="larger than the 8x12 grid"):
        crop_batch(batch, (12, 8))


def test_objective_refuses_a_bad_crop_and_records_it():
    with pytest.raises(ValueError, match="train_crop"):
        WeatherEDMObjective(train_crop=(0, 8))
    with pytest.raises(ValueError, match="train_crop"):
        WeatherEDMObjective(train_crop=(8,))
    with pytest.raises(ValueError, match="train_crop_prob"):
        WeatherEDMObjective(train_crop=(4, 8), train_crop_prob=1.5)
    assert WeatherEDMObjective(train_crop=(4, 8)).init_kwargs["train_crop"] == [4, 8]
    assert WeatherEDMObjective(train_crop=(4, 8), train_crop_prob=0.5).init_kwargs["train_crop_prob"] == 0.5
    assert WeatherEDMObjective().init_kwargs["train_crop"] is None


class _Spy(torch.nn.Module):
    """Wraps the net and records the grid of every call."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.grids = net, []

    def forward(self, x_in, *args, **kwargs):
        self.grids.append(tuple(x_in.shape[-2:]))
        return self.net(x_in, *args, **kwargs)


def test_loss_crops_only_in_training_mode():
    torch.manual_seed(0)
    net = _Spy(WeatherForecaster(n_channels=1, n_statics=2, grid=(8, 12), frames=2, patch=4, dim=16, num_heads=2,
                                 depth_dual=1, depth_single=0, rope="grid", history=1))
    objective = WeatherEDMObjective(train_crop=(4, 8))
    batch = _batch()
    net.train()
    loss = objective.loss(net, batch)["loss"]
    assert torch.isfinite(loss) and net.grids == [(4, 8)]
    net.eval()  # validation: the whole grid
    objective.loss(net, batch)
    assert net.grids[-1] == (8, 12)
    # without train_crop the training loss sees the whole grid too
    net.train()
    WeatherEDMObjective().loss(net, batch)
    assert net.grids[-1] == (8, 12)


def test_crop_probability_mixes_crops_and_the_whole_grid():
    torch.manual_seed(0)
    net = _Spy(WeatherForecaster(n_channels=1, n_statics=2, grid=(8, 12), frames=2, patch=4, dim=16, num_heads=2,
                                 depth_dual=1, depth_single=0, rope="grid", history=1))
    batch = _batch()
    for prob, expected in ((0.0, {(8, 12)}), (0.5, {(4, 8), (8, 12)}), (1.0, {(4, 8)})):
        net.grids.clear()
        objective = WeatherEDMObjective(train_crop=(4, 8), train_crop_prob=prob)
        for _ in range(16):
            objective.loss(net, batch)
        assert set(net.grids) == expected, prob
        if prob == 0.5:  # about half the steps each way (16 draws: 3..13 is beyond doubt for a fair coin)
            assert 3 <= net.grids.count((4, 8)) <= 13
