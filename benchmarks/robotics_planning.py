"""Claim: world-model best-of-N planning (score each sampled chunk by the PushT coverage of the block pose the
policy imagines at t + 16, execute the best) raises closed-loop coverage over plain sampling of the same
trained DUST policy (state trajectory target, ``--future-frames``). Measured 2026-12-06 on two K = 4 policies:
no reliable gain (docs/robotics.md); ``--score pusht_pose`` scores minus the T-vertex distance instead.

    python benchmarks/robotics_planning.py --policy outputs/ckpt/robotics_dust_ff4_pair58_seed3.pt \\
        --candidates 1,4,8,16 --episodes 50 --threads 1 --out outputs/bench/robotics_planning_seed3.json

N is chosen on validation seeds (``--val-seed0``, default 200000, disjoint from the standard evaluation
seeds) by mean max coverage; then plain sampling (N = 1) and the chosen N run on the standard seeds
(``--seed0`` 100000, <= 300 steps), paired by episode seed. Also reported: the single-observation
latency per chunk at the chosen N (N_A = N_o = 4). Writes one JSON and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from apps.robotics.planning import SCORES, make_score  # noqa: E402

KEEP = ("n_episodes", "success_rate", "success_rate_ci95", "mean_max_coverage", "mean_max_coverage_ci95",
        "latency_ms_per_chunk", "plan_samples", "plan_score_mean", "eval_seconds", "episode_max_coverage")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True, help="policy.pt written by robotics_pusht.py --save-policy")
    ap.add_argument("--candidates", default="1,4,8,16", help="N values tried on the validation seeds")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--val-seed0", type=int, default=200000)
    ap.add_argument("--seed0", type=int, default=100000)
    ap.add_argument("--score", default="pusht_coverage", choices=list(SCORES),
                    help="score of the imagined block pose at t + 16 (goal coverage, or minus the T-vertex distance)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sampler-seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from dualsci.io import write_json_atomic

    from apps.robotics.envs import PushTEnv
    from apps.robotics.rollout import chunk_latency, evaluate
    from apps.robotics.sampling import Policy
    from apps.robotics.train import load_policy_net

    net, info = load_policy_net(args.policy)
    keys = info["state_keys"]
    score = make_score(args.score, keys)

    def run(n: int, seed0: int) -> dict:
        pol = Policy(net, keys, n_action_steps=4, n_vision_steps=4, execute=8, seed=args.sampler_seed,
                     plan_samples=n, plan_score=score if n > 1 else None)
        r = evaluate(pol, "pusht", args.episodes, seed0, 300)
        return {k: r[k] for k in KEEP}

    t0 = time.perf_counter()
    candidates = sorted({int(v) for v in args.candidates.split(",") if v})
    val = {n: run(n, args.val_seed0) for n in candidates}
    for n, r in val.items():
        print(f"validation N={n}: coverage {r['mean_max_coverage']:.3f} success {r['success_rate']:.2f}", flush=True)
    chosen = max(candidates, key=lambda n: (val[n]["mean_max_coverage"], -n))  # ties -> the cheaper N
    test = {1: run(1, args.seed0)}
    if chosen != 1:
        test[chosen] = run(chosen, args.seed0)
    diff = np.asarray(test[chosen]["episode_max_coverage"]) - np.asarray(test[1]["episode_max_coverage"])
    env = PushTEnv(image=False)
    obs, _ = env.reset(seed=args.seed0)
    pol = Policy(net, keys, n_action_steps=4, n_vision_steps=4, plan_samples=chosen,
                 plan_score=score if chosen > 1 else None)
    lat = chunk_latency(pol, obs, repeats=20)
    res = {
        "policy": str(args.policy), "score": args.score, "state_keys": keys, "candidates": candidates, "chosen_n": chosen,
        "validation": {str(n): r for n, r in val.items()}, "test": {str(n): r for n, r in test.items()},
        "plain_mean_max_coverage": test[1]["mean_max_coverage"],
        "planned_mean_max_coverage": test[chosen]["mean_max_coverage"],
        "planned_minus_plain": float(diff.mean()),
        "planned_minus_plain_paired_se": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None,
        "latency_ms_per_chunk_b1_chosen_n": lat["latency_ms_per_chunk_b1"], "latency_threads": args.threads,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "loadavg": os.getloadavg()},
        "total_seconds": time.perf_counter() - t0, "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "command": "python " + " ".join(shlex.quote(a) for a in
                                        ([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))),
    }
    write_json_atomic(args.out, res)
    print(json.dumps({k: res[k] for k in ("chosen_n", "plain_mean_max_coverage", "planned_mean_max_coverage",
                                          "planned_minus_plain", "planned_minus_plain_paired_se",
                                          "latency_ms_per_chunk_b1_chosen_n")}))
    print("command:", res["command"])
    return res


if __name__ == "__main__":
    main()
