"""The benchmark's generator training loop: EMA weights and the learning-rate schedule."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from apps.medseg.model import MedSegNet
from apps.medseg.objective import PairObjective

from .conftest import ORGANS

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("medseg_bench", ROOT / "benchmarks" / "medseg_totalseg.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny():
    torch.manual_seed(0)
    return MedSegNet(labels=ORGANS, image_size=16, patch=4, dim=32, depth=1, num_heads=2)


def _data(net, n=4):
    g = torch.Generator().manual_seed(1)
    p = net.vocab.encode_batch([net.vocab.parse("CT liver spleen")] * n)
    return [{"image": torch.rand(1, 16, 16, generator=g) * 2 - 1,
             "mask": torch.randint(0, len(ORGANS) + 1, (16, 16), generator=g), "prompt": p[i]} for i in range(n)]


def test_ema_weights_are_the_warmed_up_average_of_the_trajectory():
    bench = _bench()
    raw, init = _tiny(), [p.detach().clone() for p in _tiny().parameters()]
    data = _data(raw)
    bench.train_generator(data, raw, PairObjective(), steps=1, batch=2, lr=1e-2, log=lambda *_: None)
    averaged = _tiny()
    bench.train_generator(data, averaged, PairObjective(), steps=1, batch=2, lr=1e-2, log=lambda *_: None, ema=0.999)
    # after one step the EMA decay is min(0.999, 1/10) = 0.1: average = 0.1 * initial + 0.9 * trained
    for p0, p1, pa in zip(init, raw.parameters(), averaged.parameters()):
        torch.testing.assert_close(pa, 0.1 * p0 + 0.9 * p1)
    assert any(not torch.equal(pa, p1) for p1, pa in zip(raw.parameters(), averaged.parameters()))


def test_cosine_schedule_changes_training_and_bad_schedule_is_refused():
    bench = _bench()
    a, b = _tiny(), _tiny()
    data = _data(a)
    bench.train_generator(data, a, PairObjective(), steps=60, batch=2, lr=1e-2, log=lambda *_: None)
    bench.train_generator(data, b, PairObjective(), steps=60, batch=2, lr=1e-2, log=lambda *_: None,
                          lr_schedule="cosine")
    assert any(not torch.allclose(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="lr_schedule.*allowed"):
        bench.train_generator(data, _tiny(), PairObjective(), steps=1, batch=2, lr=1e-2, lr_schedule="linear")


def test_guidance_selection_picks_the_best_checker_dice_and_uses_other_seeds(monkeypatch):
    bench = _bench()
    net = _tiny()
    seen = []
    real_sample = bench.sample_pairs

    def spy(net_, obj_, vecs, seeds, **kw):
        seen.extend(seeds)
        return real_sample(net_, obj_, vecs, seeds, **kw)

    monkeypatch.setattr(bench, "sample_pairs", spy)
    g = torch.Generator().manual_seed(0)
    train = bench.SegData(torch.rand(6, 1, 16, 16, generator=g) * 2 - 1, torch.randint(0, 6, (6, 16, 16), generator=g))
    res = bench.select_guidance(net, PairObjective(), train, ["CT liver", "CT spleen"], ["background", *ORGANS],
                                [1.0, 3.0], n=4, ref_steps=2, log=lambda *_: None)
    assert res["scale"] in (1.0, 3.0) and set(res["dice_by_scale"]) == {"1", "3"}
    ranked = {k: (-1.0 if math.isnan(v) else v) for k, v in res["dice_by_scale"].items()}
    assert ranked[f"{res['scale']:g}"] == max(ranked.values())
    assert min(seen) >= 10**6  # never the reported pairs' seeds
