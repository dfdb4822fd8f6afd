from __future__ import annotations

import json
import math

import pytest
import torch

from apps.medseg.metrics import SegData, dice_hd95, memorisation
from apps.medseg.evaluate import main as evaluate_main, run_evaluation
from apps.medseg.phantom import write_phantom_msd


def test_dice_hd95_perfect_and_missed():
    t = torch.zeros(2, 16, 16, dtype=torch.long)
    t[:, 2:8, 2:8], t[:, 10:14, 10:14] = 1, 2
    perfect = dice_hd95(t, t, 3)
    assert perfect["dice"] == pytest.approx(1.0) and perfect["hd95"] == pytest.approx(0.0)
    p = t.clone()
    p[p == 2] = 0  # class 2 missed entirely
    m = dice_hd95(p, t, 3, spacing=2.0)
    assert m["dice_per_class"] == pytest.approx([1.0, 0.0])
    assert m["hd95"] == pytest.approx((0 + math.hypot(16, 16) * 2.0) / 2)


def test_memorisation_flags_copies():
    g = torch.Generator().manual_seed(0)
    train, held = torch.rand(20, 1, 16, 16, generator=g), torch.rand(10, 1, 16, 16, generator=g)
    copies = memorisation(train[:8] + 0.001, train, held)
    fresh = memorisation(torch.rand(8, 1, 16, 16, generator=g), train, held)
    assert copies["ratio"] < 0.05 and copies["fraction_below_heldout_p5"] == 1.0
    assert fresh["ratio"] > 0.8


def _toy(n, seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(n, 16, 16, dtype=torch.long)
    for i in range(n):
        r, c = torch.randint(2, 8, (2,), generator=g).tolist()
        m[i, r:r + 6, c:c + 6] = 1
    img = m[:, None].float() - 0.5 + 0.1 * torch.randn(n, 1, 16, 16, generator=g)
    return SegData(img, m)


def test_run_evaluation_protocol_keys_and_seeds():
    res = run_evaluation(_toy(12, 0), _toy(6, 1), _toy(12, 2), ["background", "organ"], seeds=[0, 1, 2],
                         ratios=[1.0], few=4, steps=3, log=lambda s: None)
    d = res["downstream"]
    assert set(d) == {"real_only", "real_plus_synthetic_x1", "synthetic_only"}
    assert len(d["real_only"]["dice"]["per_seed"]) == 3 and d["real_only"]["dice"]["sd"] >= 0
    assert res["downstream_gain_dice"] == pytest.approx(
        d["real_plus_synthetic_x1"]["dice"]["mean"] - d["real_only"]["dice"]["mean"])
    assert 0 <= res["alignment"]["dice"] <= 1 and res["frechet"]["real_train_vs_real_test"] >= 0


def test_evaluate_cli_writes_report_and_refuses_foreign_folder(tmp_path):
    real = write_phantom_msd(tmp_path / "real", n_cases=3, seed=0, shape=(16, 16, 6))
    syn = write_phantom_msd(tmp_path / "syn", n_cases=2, seed=5, shape=(16, 16, 6))
    out = tmp_path / "ev"
    evaluate_main(["--real", str(real), "--synthetic", str(syn), "--out", str(out), "--size", "16",
                   "--steps", "2", "--seeds", "3", "--ratios", "1", "--few", "3", "--labels", "liver,spleen"])
    res = json.loads((out / "evaluation.json").read_text())
    assert res["labels"] == ["background", "liver", "spleen"]
    html = (out / "report.html").read_text()
    assert "figures/synthetic.png" in html and (out / "figures" / "synthetic.png").exists()
    with pytest.raises(SystemExit, match="already holds"):
        evaluate_main(["--real", str(real), "--synthetic", str(syn), "--out", str(out)])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("x")
    with pytest.raises(SystemExit, match="other data"):
        evaluate_main(["--real", str(real), "--synthetic", str(syn), "--out", str(foreign)])
