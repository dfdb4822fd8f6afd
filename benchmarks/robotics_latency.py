"""Claim: one PushT action chunk at N_A = N_o = 4 for a single observation takes <= 30 ms on the CPU.

    python benchmarks/robotics_latency.py --ckpt policy.pt --threads 1,2 --out X.json
    python benchmarks/robotics_latency.py --variant dust --obs state --threads 1,2 --out X.json   (untrained net)

Latency does not depend on the weights, only on the network's shape, so an untrained net of the
benchmark's size (`robotics_pusht.net_kwargs`) gives the same figure as a trained one. Measures the
median (and min) wall time of `Policy.select_action` after `reset` (a fresh chunk every call), for each
thread count, in fp32 and -- where the CPU computes bf16 natively (`bf16_supported`) -- under bf16
autocast. Records the load average before and after: on a shared machine the figure follows the load.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import torch  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", default=None, help="policy.pt from robotics_pusht.py --save-policy (else untrained)")
    ap.add_argument("--variant", default="dust", choices=["dust", "action_only", "joint_noise"])
    ap.add_argument("--obs", default="state", choices=["state", "image"])
    ap.add_argument("--encoder", default="cnn", choices=["cnn", "vit"])
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--n-a", type=int, default=4)
    ap.add_argument("--n-o", type=int, default=4)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    from dualsci.io import write_json_atomic
    from dualsci.training import bf16_supported

    from apps.robotics.envs import PushTEnv
    from apps.robotics.model import DustPolicyNet
    from apps.robotics.rollout import chunk_latency
    from apps.robotics.sampling import Policy
    from apps.robotics.train import load_policy_net
    from robotics_pusht import STATE_KEYS, net_kwargs

    if args.ckpt:
        net, info = load_policy_net(args.ckpt)
        state_keys = info["state_keys"]
    else:
        torch.manual_seed(0)
        net = DustPolicyNet(**net_kwargs(args.obs, args.variant, False, args.encoder)).eval()
        state_keys = STATE_KEYS[args.obs]
    env = PushTEnv(image=net.use_image)
    obs, _ = env.reset(seed=100000)
    pol = Policy(net, state_keys, n_action_steps=args.n_a, n_vision_steps=args.n_o)
    precisions = ["fp32"] + (["bf16_autocast"] if bf16_supported("cpu") else [])
    load0 = os.getloadavg()
    rows = []
    for threads in [int(t) for t in args.threads.split(",") if t]:
        torch.set_num_threads(threads)
        for prec in precisions:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec != "fp32"):
                lat = chunk_latency(pol, obs, repeats=args.repeats)
            rows.append({"threads": threads, "precision": prec, "median_ms": lat["latency_ms_per_chunk_b1"],
                         "min_ms": lat["latency_ms_per_chunk_b1_min"], "repeats": args.repeats})
    res = {"ckpt": args.ckpt, "variant": net.variant, "use_image": bool(net.use_image),
           "params": sum(p.numel() for p in net.parameters()), "n_action_steps": args.n_a,
           "n_vision_steps": args.n_o, "nfe_per_chunk": pol.nfe_per_chunk, "rows": rows,
           "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                       "bf16_supported": bf16_supported("cpu"), "loadavg_before": load0,
                       "loadavg_after": os.getloadavg()},
           "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
           "command": "python " + " ".join(shlex.quote(a) for a in
                                           ([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])))}
    write_json_atomic(args.out, res)
    for r in rows:
        print(f"threads {r['threads']} {r['precision']:>13}: median {r['median_ms']:.1f} ms, min {r['min_ms']:.1f} ms")
    print(json.dumps(res["machine"]))
    print("command:", res["command"])
    return res


if __name__ == "__main__":
    main()
