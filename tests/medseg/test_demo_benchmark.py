from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CT, CT_SEG, LABELS_JSON

ROOT = Path(__file__).resolve().parents[2]


def test_demo_end_to_end_small(tmp_path):
    from apps.medseg.demo import run

    res = run(tmp_path / "demo", fit_steps=20, n_per_prompt=2, eval_steps=5, seeds=3)
    assert (tmp_path / "demo" / "report.html").exists()
    assert len(res["downstream"]["real_only"]["dice"]["per_seed"]) == 3
    assert res["fit_steps_done"] == 20  # well within the default time budget
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("x")
    with pytest.raises(SystemExit, match="not written by this demo"):
        run(other)


def test_benchmark_quick_writes_the_contract_keys(shared_file, tmp_path):
    out = tmp_path / "b.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "medseg_totalseg.py"), "--image", str(shared_file(CT)),
                    "--label", str(shared_file(CT_SEG)), "--labels-json", str(shared_file(LABELS_JSON)),
                    "--out", str(out), "--quick", "--fit-steps", "5", "--eval-steps", "5", "--ref-steps", "5"], check=True, cwd=ROOT,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    res = json.loads(out.read_text())
    for key in ("alignment_dice", "downstream_dice_real_only", "downstream_dice_real_plus_synthetic",
                "downstream_gain_dice", "pairs_per_second"):
        assert key in res
    assert {"mean", "sd"} <= set(res["downstream_dice_real_only"])
