from __future__ import annotations

import pytest

from apps.robotics.metrics import summarise_episodes, wilson_interval


def test_wilson_known_values():
    lo, hi = wilson_interval(0.5, 50)
    assert lo == pytest.approx(0.3664, abs=1e-3) and hi == pytest.approx(0.6336, abs=1e-3)
    lo, hi = wilson_interval(0.0, 50)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.0714, abs=1e-3)
    assert wilson_interval(1.0, 10)[1] == pytest.approx(1.0)


def test_summary_keys():
    s = summarise_episodes([1.0, 0.5, 0.96, 0.2], [True, False, True, False])
    assert s["success_rate"] == 0.5 and s["mean_max_coverage"] == pytest.approx(0.665)
    assert s["success_rate_ci95"][0] < 0.5 < s["success_rate_ci95"][1]
    assert s["pc_success"] == 50.0 and s["n_episodes"] == 4
