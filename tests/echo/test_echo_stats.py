"""Clinical statistics: ICC against hand-computed and published values, patient bootstrap, strata."""

from __future__ import annotations

import math

import numpy as np
import pytest

from apps.echo.stats import agreement, bootstrap_by_patient, clinical_summary, icc, pct_error, strata, worse_quality


def test_icc_hand_computed_constant_bias():
    # pred = ref + 1 on 3 subjects. By hand: grand mean 2.5; SSR = 2·(1 + 0 + 1) = 4, MSR = 2;
    # SSC = 3·(0.25 + 0.25) = 1.5, MSC = 1.5; SST = 5.5 → SSE = 0, MSE = 0.
    # ICC(3,1) = (2 − 0)/(2 + 0) = 1 (consistency ignores the bias);
    # ICC(2,1) = (2 − 0)/(2 + 0 + 2·(1.5 − 0)/3) = 2/3 (absolute agreement penalises it).
    x = np.array([[2.0, 1.0], [3.0, 2.0], [4.0, 3.0]])
    assert icc(x, "3,1") == pytest.approx(1.0)
    assert icc(x, "2,1") == pytest.approx(2.0 / 3.0)


def test_icc_shrout_fleiss_table():
    # Shrout & Fleiss (1979), Table 2: 6 targets × 4 judges; published ICC(2,1) = .29, ICC(3,1) = .71
    x = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
    assert round(icc(x, "2,1"), 2) == 0.29 and round(icc(x, "3,1"), 2) == 0.71
    with pytest.raises(ValueError, match="form must be one of"):
        icc(x, "1,1")
    assert math.isnan(icc(x[:1], "2,1"))


def test_agreement_fields():
    a = agreement([50.0, 60.0, 40.0, 55.0], [52.0, 58.0, 45.0, 55.0])
    d = np.array([-2.0, 2.0, -5.0, 0.0])
    assert a["mae"] == pytest.approx(2.25) and a["bias"] == pytest.approx(d.mean())
    assert a["loa_high"] - a["loa_low"] == pytest.approx(2 * 1.96 * d.std(ddof=1))
    assert 0.8 < a["icc_2_1"] < 1.0 and 0.8 < a["icc_3_1"] < 1.0 and a["n"] == 4
    assert agreement([1.0, math.nan], [1.0, 2.0])["n"] == 1


def _images(dices_by_patient):
    return [{"patient": p, "dice": d, "inter_px": 10 * d, "pred_px": 10, "gt_px": 10}
            for p, ds in dices_by_patient.items() for d in ds]


def test_bootstrap_resamples_patients():
    rows = _images({"a": [0.9, 0.9, 0.9], "b": [0.5]})
    efs = [{"patient": "a", "abs_err": 1.0}, {"patient": "b", "abs_err": 9.0}]
    out = bootstrap_by_patient(rows, efs, n_boot=2000, seed=0)
    assert out["dice_mean"]["value"] == pytest.approx(3.2 / 4) and out["dice_pooled"]["value"] == pytest.approx(3.2 / 4)
    # patient-level draws: {a,a}, {a,b}, {b,b} only, so the per-image mean lies in {0.5, 0.8, 0.9}
    assert out["dice_mean"]["low"] == pytest.approx(0.5) and out["dice_mean"]["high"] == pytest.approx(0.9)
    assert out["ef_mae"]["low"] == pytest.approx(1.0) and out["ef_mae"]["high"] == pytest.approx(9.0)
    again = bootstrap_by_patient(rows, efs, n_boot=2000, seed=0)
    assert again == out  # seeded
    same = bootstrap_by_patient(_images({"a": [0.8], "b": [0.8], "c": [0.8]}), [], n_boot=500)
    assert same["dice_mean"]["low"] == same["dice_mean"]["high"] == pytest.approx(0.8) and "ef_mae" not in same


def test_strata_and_summary():
    rows = [{"patient": "p1", "role": "ED", "image_quality": "Good", "dice": 0.9, "hd95_mm": 2.0},
            {"patient": "p1", "role": "ES", "image_quality": "Good", "dice": 0.8, "hd95_mm": 3.0},
            {"patient": "p2", "role": "ED", "image_quality": "Poor", "dice": 0.6, "hd95_mm": 9.0}]
    rows.append({"patient": "video", "role": "ED", "dice": None})  # no reference: not counted
    table = {r["stratum"]: r for r in strata(rows, [{"patient": "p2", "image_quality": "Poor", "abs_err": 4.0}], n_boot=100)}
    assert table["all"]["n_images"] == 3 and table["all"]["n_patients"] == 2 and table["phase=ES"]["dice_mean"] == pytest.approx(0.8)
    assert table["quality=Good"]["dice_mean"] == pytest.approx(0.85) and "quality=Medium" not in table
    assert table["quality=Poor"]["ef_mae"] == pytest.approx(4.0)
    assert worse_quality(["Good", "Medium", None]) == "Medium" and worse_quality([None]) is None
    assert pct_error(110.0, 100.0) == pytest.approx(10.0) and math.isnan(pct_error(1.0, None))
    records = [{"name": "x", "patient": "p1", "image_quality": "Good", "per_frame": [{"role": "ED", "dice": 0.9}]}]
    patients = [{"patient": "p1", "ef": 50.0, "ef_reference": 55.0, "edv_pct_error": -5.0}]
    s = clinical_summary(records, patients, n_boot=50)
    assert s["agreement_ef"]["mae"] == pytest.approx(5.0) and s["volumes"]["edv"]["mean_pct_error"] == -5.0
    assert "ICC(2,1)" in s["definitions"]["icc"]
