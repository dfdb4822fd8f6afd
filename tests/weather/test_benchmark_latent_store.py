"""The latent-store benchmark: both stores written from one forecast, equal values and scores, fewer bytes."""

from __future__ import annotations

import json


def test_latent_store_quick(tmp_path, load_benchmark):
    bench = load_benchmark("weather_latent_store")
    out = tmp_path / "ls.json"
    res = bench.main(["--quick", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("python benchmarks/weather_latent_store.py ") and "--quick" in saved["command"]
    for key in ("date_utc", "machine", "settings", "bytes", "seconds", "ratios"):
        assert key in saved, key
    assert saved["shapes"]["latent_000"] == [2, 3, 4, 2, 4] and len(saved["shapes"]["decoded"]) == 4
    assert saved["shapes"]["decoded"]["geopotential"] == [2, 3, 4, 2, 8, 16]  # 2 levels
    assert saved["shapes"]["decoded"]["2m_temperature"] == [2, 3, 4, 8, 16]
    assert res["max_abs_difference"] == 0.0 and res["scores_identical"] is True
    assert saved["bytes"]["latent_store"] < saved["bytes"]["decoded_store"]
    assert all(v > 0 for v in saved["seconds"].values())
