"""Claim: the DUST ablation (dust vs action_only vs joint_noise) at equal optimizer steps on the embedded
push task, CPU-sized, with closed-loop success and coverage (Wilson 95 %).

    python benchmarks/robotics_toy_ablation.py --steps 500 --episodes 20 --out outputs/bench/robotics_toy.json
    python benchmarks/robotics_toy_ablation.py --quick --out /tmp/toy.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--variants", default="dust,action_only,joint_noise")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from dualsci.io import write_json_atomic

    from apps.robotics.data.module import RoboticsDataModule
    from apps.robotics.demo import NET, pick_threads
    from apps.robotics.metrics import offline_metrics
    from apps.robotics.rollout import evaluate
    from apps.robotics.sampling import Policy
    from apps.robotics.train import build_module, fit

    threads = pick_threads()
    steps, episodes = (5, 2) if args.quick else (args.steps, args.episodes)
    res = {"steps": steps, "episodes": episodes, "threads": threads, "variants": {}}
    for v in args.variants.split(","):
        data = RoboticsDataModule(None, state_keys=["state"], use_image=True, batch_size=32, val_episodes=5,
                                  toy_episodes=100, toy_video_only=10, seed=args.seed)
        module = build_module(dict(NET, variant=v), dict(variant=v, time_dist="gr00t_beta"), lr=1e-3)
        train = fit(module, data, max_steps=steps, ema_decay=0.99, seed=args.seed)
        net = module.net.eval()
        r = evaluate(Policy(net, ["state"], 4, 4, execute=8, seed=args.seed), "toy_push", episodes, 100000)
        off = offline_metrics(net, data.val_set, n_samples=64, noise_levels=(0.0,))
        res["variants"][v] = {k: r[k] for k in ("success_rate", "success_rate_ci95", "mean_max_coverage",
                                                 "mean_max_coverage_ci95")}
        res["variants"][v].update(train_seconds=train["train_seconds"], steps=train["steps"],
                                  action_mse=off["action_mse"])
        print(v, json.dumps(res["variants"][v]), flush=True)
    res["date_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    res["loadavg"] = os.getloadavg()
    res["command"] = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + (argv or sys.argv[1:]))
    write_json_atomic(args.out, res)
    print("command:", res["command"])
    return res


if __name__ == "__main__":
    main()
