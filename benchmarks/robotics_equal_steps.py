"""Claim: at equal optimizer steps on the real PushT demonstrations (state observations), DUST's action
pathway is not worse than the action-only baseline's, and the EMA decay warm-up removes the averaged
policy's lag on short budgets (held-out metrics only; no closed loop, so it fits a few CPU minutes).

    python benchmarks/robotics_equal_steps.py --data ../shared/data/robotics/pusht_cchi_v7_replay.zarr \\
        --steps 400 --variant dust --ema-warmup 0.75 --out X.json        (one variant per process, 1 thread)

Small net (d = 64, 2 MMDiT blocks + 1 tail, batch 64, lr 3e-4, EMA 0.999). Prints, per variant: steps,
train seconds, held-out action MSE (policy sampling, N_A = N_o = 4, normalised units), DUST's
corrupted-future test at noise 0 / 1, and the held-out velocity loss at fixed t_a with the vision stream
at noise (t_b = 1), at the same level (t_b = t_a) and clean (t_b = 0, the true future).
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

import torch  # noqa: E402


def velocity_losses(net, dataset, variant: str, n: int = 256, seed: int = 1) -> dict:
    """Held-out flow-matching loss of the action stream at fixed (t_a, t_b) pairs."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[:n]
    items = [dataset[int(i)] for i in idx]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    n = len(items)
    out = {}
    with torch.no_grad():
        tok, cond = net.encode_obs(batch["obs_state"])
        x0 = net.normalize_action(batch["action"])
        eps = torch.randn(x0.shape, generator=g)
        fut = net.future_tokens(batch["future_state"]) if variant != "action_only" else None
        for ta in (0.25, 0.5, 0.75, 1.0):
            for name in ("1", "eq", "0"):
                if variant == "action_only" and name != "1":
                    continue
                tb = {"1": 1.0, "eq": ta, "0": 0.0}[name]
                xa = (1 - ta) * x0 + ta * eps
                xb = None if fut is None else (1 - tb) * fut + tb * torch.randn(fut.shape, generator=g)
                ua, _ = net(tok, cond, xa, torch.full((n,), ta), xb, torch.full((n,), tb))
                out[f"ta{ta}_tb{name}"] = round(float(((ua - (eps - x0)) ** 2).mean()), 4)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--variant", default="dust", choices=["dust", "action_only", "joint_noise"])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--ema-warmup", type=float, default=0.75, help="WarmupEMA power; 0 = fixed decay")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from dualsci.io import write_json_atomic

    from apps.robotics.data.module import RoboticsDataModule
    from apps.robotics.metrics import offline_metrics
    from apps.robotics.train import build_module, fit

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from robotics_pusht import STATE_KEYS, net_kwargs

    data = RoboticsDataModule(path=args.data, fmt=None, state_keys=STATE_KEYS["state"], use_image=False,
                              batch_size=64, val_episodes=6, seed=0)
    nk = dict(net_kwargs("state", args.variant, False), dim=64, depth_dual=2)
    module = build_module(nk, dict(variant=args.variant, time_dist="gr00t_beta", lambda_wm=1.0), lr=3e-4)
    t0 = time.time()
    train = fit(module, data, max_steps=args.steps, seed=0, ema_warmup=args.ema_warmup or None)
    seconds = time.time() - t0
    net = module.net.eval()
    off = offline_metrics(net, data.val_set, n_samples=256, noise_levels=(0.0, 1.0))
    res = {"variant": args.variant, "steps": train["steps"], "train_seconds": round(seconds, 1),
           "ema_warmup": args.ema_warmup, "params": sum(p.numel() for p in net.parameters()),
           "action_mse": round(off["action_mse"], 4), "corrupted_future_action_mse": off.get("corrupted_future_action_mse"),
           "velocity_loss": velocity_losses(net, data.val_set, args.variant),
           "last_train_losses": train["loss_history"][-3:], "loadavg": os.getloadavg(),
           "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    res["command"] = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + (argv or sys.argv[1:]))
    write_json_atomic(args.out, res)
    print(json.dumps({k: v for k, v in res.items() if k != "last_train_losses"}))
    print("command:", res["command"])
    return res


if __name__ == "__main__":
    main()
