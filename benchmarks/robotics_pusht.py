"""Claim: a DUST policy trained from scratch on the real PushT demonstrations reaches a useful closed-loop
coverage within a fixed budget, beats the action-only and joint-noise ablations at equal budget, and
runs a chunk within 30 ms at N_A = N_o = 4.

    python benchmarks/robotics_pusht.py --data ../shared/data/robotics/pusht_cchi_v7_replay.zarr \\
        --variant dust --obs state --minutes 60 --episodes 50 --out outputs/bench/robotics_dust.json
    python benchmarks/robotics_pusht.py --data ZARR --quick --out /tmp/q.json      (minutes-scale smoke)

Trains (time-bounded, EMA weights), then: offline metrics on held-out episodes, 50 fixed-seed gym-pusht
episodes (seeds 100000+, <= 300 steps) at N_A = N_o = 4, the test-time-scaling curve over N_o, and the
single-observation latency per chunk on CPU (``--latency-threads``, default ``--threads`` = 2) in fp32 and,
where the CPU computes bf16 natively, under bf16 autocast (``latency_bf16_autocast``). Training precision:
``--precision`` (fp32 by default; ``auto`` = bf16-mixed where native). With ``--obs image``,
``--vision-target state`` makes the vision stream imagine the whole future PushT state (agent and block
pose, learnt from the demonstrations' states) instead of DUST's image embedding. Writes one JSON and prints it.
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

STATE_KEYS = {"state": ["state[0:4]", "state[4:5]@sincos"], "image": ["state[0:2]"]}


def net_kwargs(obs: str, variant: str, quick: bool, encoder: str = "cnn", future_frames: int = 1,
               vision_target: str = "ema") -> dict:
    common = dict(action_dim=2, horizon=16, n_obs=2, num_heads=4, variant=variant,
                  dim=64 if quick else 128, depth_dual=2 if quick else 4, depth_tail=1)
    if obs == "state":
        return dict(common, state_dim=6, image_size=0, crop_size=0, future_target="state", future_frames=future_frames)
    if future_frames > 1:
        raise SystemExit("--future-frames > 1 needs --obs state (a trajectory of future states)")
    vit = dict(encoder="vit", vit_patch=12, vit_dim=32 if quick else 64, vit_depth=1 if quick else 2, vit_heads=4)
    # "state": the image policy's world model imagines the whole future PushT state (block pose
    # included), learnt from the demonstrations' states; "ema": DUST's image-embedding target.
    target = (dict(future_target="state", target_state_dim=6) if vision_target == "state"
              else dict(future_target="ema", ema_decay=0.995))
    return dict(common, state_dim=2, image_size=96, crop_size=84, enc_channels=16 if quick else 32,
                **target, **(vit if encoder == "vit" else {}))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="PushT replay zarr")
    ap.add_argument("--variant", default="dust", choices=["dust", "action_only", "joint_noise"])
    ap.add_argument("--obs", default="state", choices=["state", "image"])
    ap.add_argument("--encoder", default="cnn", choices=["cnn", "vit"], help="image encoder (--obs image)")
    ap.add_argument("--minutes", type=float, default=60.0, help="training wall-time budget")
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--curve", default="4,8,16", help="N_o values of the scaling curve (N_A = 4)")
    ap.add_argument("--curve-episodes", type=int, default=None, help="episodes per curve point (default --episodes)")
    ap.add_argument("--phase", default="end", choices=["end", "start"], help="asynchronous action-update phase")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--time-dist", default="gr00t_beta", choices=["gr00t_beta", "uniform", "logit_normal"])
    ap.add_argument("--lambda-wm", type=float, default=1.0)
    ap.add_argument("--future-frames", type=int, default=1,
                    help="state obs: future states t+16/K..t+16 as K vision tokens (1 = DUST's single t+16)")
    ap.add_argument("--vision-target", default="ema", choices=["ema", "state"],
                    help="--obs image: what the vision stream imagines at t + 16: the EMA encoder's image "
                         "embedding (DUST, default) or the whole PushT state (agent + block pose)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (training on CPU, evaluation)")
    ap.add_argument("--latency-threads", type=int, default=None, help="CPU threads for the latency figure (default --threads)")
    ap.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "auto"],
                    help="training precision; auto = bf16-mixed where the device computes bf16 natively, else fp32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny model, 20 episodes of data, short eval")
    ap.add_argument("--save-policy", default=None, help="also write the trained policy here")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.vision_target != "ema" and args.obs != "image":
        ap.error("--vision-target applies to --obs image (state policies always imagine the future state)")
    torch.set_num_threads(args.threads)
    from dualsci.io import write_json_atomic

    from apps.robotics.data.module import RoboticsDataModule
    from apps.robotics.metrics import offline_metrics
    from apps.robotics.rollout import chunk_latency, evaluate
    from apps.robotics.sampling import Policy
    from apps.robotics.train import build_module, fit, save_policy
    from dualsci.training import bf16_supported, resolve_precision

    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    episodes = 4 if args.quick else args.episodes
    curve_eps = episodes if args.curve_episodes is None else args.curve_episodes
    curve = [int(v) for v in args.curve.split(",") if v] if not args.quick else [4, 8]
    max_steps_eval = 60 if args.quick else 300
    data_kw = dict(path=args.data, fmt=None, state_keys=STATE_KEYS[args.obs], use_image=args.obs == "image",
                   batch_size=args.batch_size, val_episodes=6, max_episodes=20 if args.quick else None, seed=args.seed,
                   future_frames=args.future_frames,
                   target_keys=STATE_KEYS["state"] if args.vision_target == "state" else None)
    data = RoboticsDataModule(**data_kw)
    nk = net_kwargs(args.obs, args.variant, args.quick, args.encoder, args.future_frames, args.vision_target)
    ok = dict(variant=args.variant, time_dist=args.time_dist, lambda_wm=args.lambda_wm)
    module = build_module(nk, ok, lr=args.lr, warmup_steps=0)
    precision = resolve_precision(args.precision, "gpu" if device == "cuda" else "cpu")
    t0 = time.perf_counter()
    train = fit(module, data, max_steps=args.max_steps if not args.quick else max(args.max_steps, 30),
                max_minutes=args.minutes, accelerator="gpu" if device == "cuda" else "cpu", seed=args.seed,
                precision=precision)
    train["precision"] = precision
    net = module.net.to(device).eval()
    if args.save_policy:
        save_policy(args.save_policy, module, nk, ok, data_kw, {"train": train})
    offline = offline_metrics(net, data.val_set, n_samples=64 if args.quick else 256)
    res: dict = {"variant": args.variant, "obs": args.obs, "vision_target": nk["future_target"],
                 "data": str(args.data), "device": device,
                 "train": train, "net_kwargs": nk, "objective_kwargs": ok, "offline": offline,
                 "params": sum(p.numel() for p in net.parameters())}
    main_eval = None
    res["scaling_curve"] = []
    for n_o in sorted(set([4] + curve)):
        pol = Policy(net, STATE_KEYS[args.obs], n_action_steps=4, n_vision_steps=n_o, phase=args.phase, execute=8,
                     seed=args.seed)
        n_ep = episodes if n_o == 4 else curve_eps
        r = evaluate(pol, "pusht", n_ep, 100000, max_steps_eval)
        point = {k: r[k] for k in ("n_vision_steps", "n_episodes", "success_rate", "success_rate_ci95",
                                   "mean_max_coverage", "mean_max_coverage_ci95", "latency_ms_per_chunk",
                                   "nfe_per_chunk", "eval_seconds")}
        res["scaling_curve"].append(point)
        if n_o == 4:
            main_eval = r
        if args.variant == "action_only":
            break  # no vision stream: N_o does not exist for this baseline
    for k in ("success_rate", "success_rate_ci95", "mean_max_coverage", "mean_max_coverage_ci95", "n_episodes",
              "episode_max_coverage", "episode_success"):
        res[k] = main_eval[k]
    res["latency_ms_per_chunk_batched"] = main_eval["latency_ms_per_chunk"]
    # Latency: one observation, one chunk at N_A = N_o = 4, on CPU with --latency-threads threads, fp32;
    # also under bf16 autocast where the CPU computes bf16 natively (AMX / AVX512_BF16; emulated bf16 is slow).
    lat_threads = args.latency_threads or args.threads
    torch.set_num_threads(lat_threads)
    cpu_net = net.to("cpu")
    pol = Policy(cpu_net, STATE_KEYS[args.obs], n_action_steps=4, n_vision_steps=4)
    from apps.robotics.envs import PushTEnv

    env = PushTEnv(image=args.obs == "image")
    obs, _ = env.reset(seed=100000)
    lat = chunk_latency(pol, obs, repeats=5 if args.quick else 20)
    res["latency_ms_per_chunk"] = lat["latency_ms_per_chunk_b1"]
    res["latency"] = dict(lat, threads=lat_threads, n_action_steps=4, n_vision_steps=4, precision="fp32")
    if bf16_supported("cpu"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lat16 = chunk_latency(pol, obs, repeats=5 if args.quick else 20)
        res["latency_bf16_autocast"] = dict(lat16, threads=lat_threads, n_action_steps=4, n_vision_steps=4)
    torch.set_num_threads(args.threads)
    res["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                      "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
                      "loadavg": os.getloadavg()}
    res["total_seconds"] = time.perf_counter() - t0
    res["date_utc"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    res["command"] = "python " + " ".join(shlex.quote(a) for a in ([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])))
    write_json_atomic(args.out, res)
    short = {k: res[k] for k in ("variant", "obs", "success_rate", "success_rate_ci95", "mean_max_coverage",
                                 "mean_max_coverage_ci95", "latency_ms_per_chunk")}
    short["train_steps"] = train["steps"]
    short["scaling_curve"] = [(p["n_vision_steps"], p["success_rate"], round(p["mean_max_coverage"], 3))
                              for p in res["scaling_curve"]]
    print(json.dumps(short))
    print("command:", res["command"])
    return res


if __name__ == "__main__":
    main()
