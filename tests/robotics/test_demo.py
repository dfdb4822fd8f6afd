from __future__ import annotations

import json
import sys
from pathlib import Path


def test_demo_end_to_end_tiny(tmp_path):
    from apps.robotics.cli import main
    from apps.robotics.demo import run

    out = tmp_path / "demo"
    res = run(out, minutes=0.03, episodes=2)
    html = (out / "report.html").read_text()
    assert "<video" in html and "scripted expert" in html
    assert (out / "loss.png").exists() and (out / "data/toy_push.zarr").exists()
    assert res["closed_loop"]["scripted expert"]["success_rate"] == 1.0
    assert res["closed_loop"]["idle agent"]["mean_max_coverage"] == 0.0
    assert json.loads((out / "results.json").read_text())["train"]["steps"] >= 1
    videos = [p for p in (out / "videos").rglob("*.mp4")]
    assert len(videos) == 3  # 2 DUST episodes (of 3 asked) + 1 expert
    # the saved policy goes straight into the rollout verb
    assert main(["rollout", "--ckpt", str(out / "policy.pt"), "--env", "toy_push", "--episodes", "2",
                 "--max-steps", "3", "--videos", "0", "--out", str(tmp_path / "ev")]) == 0


def test_benchmark_quick_on_real_pusht(shared_file, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import robotics_pusht

    res = robotics_pusht.main(["--data", str(shared_file("robotics/pusht_cchi_v7_replay.zarr")), "--quick",
                               "--minutes", "0.2", "--max-steps", "10", "--out", str(tmp_path / "q.json")])
    for k in ("success_rate", "success_rate_ci95", "mean_max_coverage", "mean_max_coverage_ci95",
              "latency_ms_per_chunk", "scaling_curve"):
        assert k in res
    assert [p["n_vision_steps"] for p in res["scaling_curve"]] == [4, 8]
    from dualsci.training import bf16_supported

    assert res["train"]["precision"] == "32-true"  # the default stays fp32
    assert ("latency_bf16_autocast" in res) == bf16_supported("cpu")


def test_benchmark_image_vision_target_option(tmp_path):
    """``--vision-target state``: the image net imagines the 6 numbers of the state spec; state obs refuse it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import pytest
    import robotics_pusht

    from apps.robotics.model import DustPolicyNet

    nk = robotics_pusht.net_kwargs("image", "dust", True, vision_target="state")
    assert nk["future_target"] == "state" and nk["target_state_dim"] == 6 and "ema_decay" not in nk
    net = DustPolicyNet(**nk)
    assert net.target_dim == 6 and net.target_encoder is None and net.use_image
    assert robotics_pusht.net_kwargs("image", "dust", True)["future_target"] == "ema"
    with pytest.raises(SystemExit):
        robotics_pusht.main(["--data", "x.zarr", "--obs", "state", "--vision-target", "state",
                             "--out", str(tmp_path / "q.json")])
    assert not (tmp_path / "q.json").exists()


def test_toy_ablation_quick(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import robotics_toy_ablation

    res = robotics_toy_ablation.main(["--quick", "--out", str(tmp_path / "t.json")])
    assert set(res["variants"]) == {"dust", "action_only", "joint_noise"}
    assert all(0.0 <= v["mean_max_coverage"] <= 1.0 for v in res["variants"].values())


def test_equal_steps_benchmark_runs(shared_file, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import robotics_equal_steps

    res = robotics_equal_steps.main(["--data", str(shared_file("robotics/pusht_cchi_v7_replay.zarr")),
                                     "--variant", "dust", "--steps", "3", "--out", str(tmp_path / "e.json")])
    assert res["steps"] == 3 and set(res["velocity_loss"]) >= {"ta0.25_tb1", "ta0.25_tb0"}
    assert res["action_mse"] > 0


def test_latency_benchmark_rows_per_thread_and_precision(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import robotics_latency

    from dualsci.training import bf16_supported

    res = robotics_latency.main(["--variant", "action_only", "--threads", "1", "--repeats", "2",
                                 "--out", str(tmp_path / "lat.json")])
    precisions = ["fp32"] + (["bf16_autocast"] if bf16_supported("cpu") else [])
    assert [r["precision"] for r in res["rows"]] == precisions
    assert all(r["threads"] == 1 and r["min_ms"] > 0 and r["median_ms"] >= r["min_ms"] for r in res["rows"])
    assert res["variant"] == "action_only" and res["nfe_per_chunk"] >= 4
    assert json.loads((tmp_path / "lat.json").read_text())["rows"] == res["rows"]
