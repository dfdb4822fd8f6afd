"""End-to-end demo on the embedded push task: data -> fit -> closed-loop rollouts -> report with videos.

    python -m apps.robotics.demo --out outputs/demo/robotics          (about 3-4 minutes on 2 cores)

1. Scripted-expert demonstrations of the built-in 2-D push task (100 episodes with actions + 10
   video-only episodes, 32x32 images), written to and read back from the replay-zarr format.
2. A CPU-sized DUST policy (dual-stream: 16 action tokens | 4 future-vision tokens from an EMA target
   encoder) trained for a fixed wall-time budget (``--minutes``).
3. Closed-loop evaluation on fixed seeds at N_A = N_o = 4 and N_o = 8, next to the scripted expert
   and an idle agent for scale, with Wilson 95 % intervals and rollout videos.
4. ``report.html``, ``results.json``, ``policy.pt`` and the dataset in the output folder (atomic).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

NET = dict(action_dim=2, state_dim=4, horizon=16, n_obs=2, image_size=32, crop_size=0, dim=64, num_heads=4,
           depth_dual=2, depth_tail=1, enc_channels=16, grid=2, future_target="ema", ema_decay=0.99, variant="dust")
OBJ = dict(variant="dust", time_dist="gr00t_beta", lambda_wm=1.0)
COLUMNS = ["policy", "N_A", "N_o", "success_rate", "success_rate_ci95", "mean_max_coverage",
           "mean_max_coverage_ci95", "latency_ms_per_chunk"]


def pick_threads() -> int:
    """2 threads on a quiet 2-core machine; 1 when it is already busy (OpenMP barriers then stall a
    small model by up to 10x, measured on the shared CI host)."""
    import torch

    cpus = os.cpu_count() or 1
    n = 1 if os.getloadavg()[0] > max(1.0, cpus - 0.5) else min(2, cpus)
    torch.set_num_threads(n)
    return n


def run(out: str | Path, minutes: float = 2.5, episodes: int = 20, seed: int = 0) -> dict:
    """Run the whole demo into `out` (replaced atomically); returns the results dict."""
    from dualsci.io import atomic_dir, write_json_atomic

    from apps.robotics.data.builtin import generate_toy_push
    from apps.robotics.data.module import RoboticsDataModule
    from apps.robotics.data.zarr_io import write_replay_zarr
    from apps.robotics.metrics import offline_metrics
    from apps.robotics.report import loss_plot, write_report
    from apps.robotics.rollout import ScriptedPolicy, evaluate
    from apps.robotics.sampling import Policy
    from apps.robotics.train import build_module, fit, save_policy

    t_start = time.perf_counter()
    threads = pick_threads()
    with atomic_dir(out, overwrite=True) as tmp:
        eps = generate_toy_push(100, seed=seed, res=32, video_only=10)
        zpath = write_replay_zarr(eps, tmp / "data" / "toy_push.zarr")
        data_kw = dict(path=str(zpath), fmt="zarr", state_keys=["state"], use_image=True, batch_size=32,
                       val_episodes=5, seed=seed)
        data = RoboticsDataModule(**data_kw)
        module = build_module(NET, OBJ, lr=1e-3)
        train = fit(module, data, max_minutes=minutes, ema_decay=0.99, seed=seed, log_every=5)
        net = module.net.eval()
        save_policy(tmp / "policy.pt", module, NET, OBJ, {**data_kw, "path": "data/toy_push.zarr"}, {"train": train})
        offline = offline_metrics(net, data.val_set, n_samples=64, noise_levels=(0.0, 0.5, 1.0))
        rows, videos, evals = [], [], {}
        for name, pol, n_videos in (
            ("DUST N_o=4", Policy(net, ["state"], 4, 4, execute=8, seed=seed), 3),
            ("DUST N_o=8", Policy(net, ["state"], 4, 8, execute=8, seed=seed), 0),
            ("scripted expert", ScriptedPolicy("expert"), 1),
            ("idle agent", ScriptedPolicy("idle"), 0),
        ):
            vdir = tmp / "videos" / name.split()[0].lower()
            r = evaluate(pol, "toy_push", episodes, 100000, n_videos=n_videos, video_dir=vdir, video_scale=4)
            evals[name] = {k: v for k, v in r.items() if k != "videos"}
            rows.append({"policy": name, "N_A": pol.n_action_steps or "-", "N_o": pol.n_vision_steps or "-",
                         **{k: r[k] for k in COLUMNS[3:]}})
            for i, p in enumerate(r.get("videos", [])):
                videos.append((f"{name}, seed {100000 + i}", str(Path(p).relative_to(tmp))))
        plot = loss_plot(train["loss_history"], tmp / "loss.png")
        results = {"train": {k: v for k, v in train.items() if k != "loss_history"}, "offline": offline,
                   "closed_loop": evals, "threads": threads, "net": NET, "objective": OBJ,
                   "demo_seconds": time.perf_counter() - t_start}
        intro = (f"Built-in 2-D push task (scripted expert, 100 demonstrations + 10 video-only episodes, "
                 f"32x32 images). DUST policy ({sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters) "
                 f"trained for {train['steps']} steps in {train['train_seconds']:.0f} s on {threads} CPU thread(s); "
                 f"{episodes} closed-loop episodes per row (seeds 100000+). Success: block within 0.05 of the goal; "
                 f"coverage: progress toward the goal in [0, 1]. Intervals: Wilson 95 %.")
        results["demo_seconds"] = time.perf_counter() - t_start
        write_report(tmp, "dualsci robotics demo: DUST on the built-in push task", intro, rows, COLUMNS, videos,
                     "loss.png" if plot else None, results)
        write_json_atomic(tmp / "results.json", results)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m apps.robotics.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="outputs/demo/robotics")
    ap.add_argument("--minutes", type=float, default=2.5, help="training wall-time budget")
    ap.add_argument("--episodes", type=int, default=20, help="closed-loop episodes per policy")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    res = run(args.out, args.minutes, args.episodes, args.seed)
    dust = res["closed_loop"]["DUST N_o=4"]
    print(f"robotics demo: {res['train']['steps']} steps; DUST success {dust['success_rate']:.2f}, "
          f"mean max coverage {dust['mean_max_coverage']:.2f}; report {Path(args.out) / 'report.html'} "
          f"({res['demo_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
