"""``dualsci-robotics``: LightningCLI ``fit | validate | test | predict`` plus app verbs.

  dualsci-robotics fit --config apps/robotics/configs/demo.yaml
  dualsci-robotics rollout --ckpt CKPT --env pusht --episodes 50 --out DIR
  dualsci-robotics convert SRC DST --to lerobot_v3
  dualsci-robotics make-toy OUT.zarr --episodes 100
  dualsci-robotics serve --ckpt CKPT --port 8765
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from apps.robotics.data.convert import check_destination, convert_main
from apps.robotics.data.episodes import DataError
from dualsci.argtypes import nonnegative_float, nonnegative_int, port_number, positive_int


def rollout_main(argv: list[str]) -> int:
    """Closed-loop evaluation of a checkpoint (success, coverage with Wilson CIs, latency, videos)."""
    from dualsci.io import atomic_dir, write_json_atomic

    from apps.robotics.planning import SCORES, make_score
    from apps.robotics.rollout import evaluate
    from apps.robotics.sampling import Policy
    from apps.robotics.train import load_policy_net

    ap = argparse.ArgumentParser(prog="dualsci-robotics rollout", description=rollout_main.__doc__)
    ap.add_argument("--ckpt", required=True, help="policy.pt (save_policy) or a Lightning .ckpt")
    ap.add_argument("--env", default="pusht", choices=["pusht", "toy_push"])
    ap.add_argument("--episodes", type=positive_int, default=50)
    ap.add_argument("--seed0", type=nonnegative_int, default=100000)
    ap.add_argument("--max-steps", type=positive_int, default=None, help="default: 300 for pusht, 80 for toy_push")
    ap.add_argument("--n-a", type=int, default=4, help="action denoising steps N_A")
    ap.add_argument("--n-o", type=int, default=4, help="vision denoising steps N_o = q * N_A")
    ap.add_argument("--phase", default="end", choices=["end", "start"])
    ap.add_argument("--mode", default="policy", choices=["policy", "marginal"])
    ap.add_argument("--execute", type=int, default=8, help="actions executed per chunk (receding horizon)")
    ap.add_argument("--temporal-ensemble", type=nonnegative_float, default=None, metavar="M",
                    help="ACT temporal ensembling with weight exp(-M*i) (re-plans every step)")
    ap.add_argument("--plan-samples", type=positive_int, default=1, metavar="N",
                    help="world-model planning: sample N chunks, execute the one whose imagined future scores best")
    ap.add_argument("--plan-score", default="pusht_coverage", choices=list(SCORES),
                    help="score of an imagined future state (with --plan-samples > 1)")
    ap.add_argument("--videos", type=nonnegative_int, default=4)
    ap.add_argument("--show-imagined", action="store_true",
                    help="draw the future the policy imagines with each chunk into the videos (state-target DUST policies)")
    ap.add_argument("--res", type=positive_int, default=32, help="toy_push image size")
    ap.add_argument("--out", required=True)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        check_destination(args.out)
        net, info = load_policy_net(args.ckpt)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        print(f"error: {exc}")
        return 2
    try:
        score = make_score(args.plan_score, info["state_keys"]) if args.plan_samples > 1 else None
        policy = Policy(net, info["state_keys"], n_action_steps=args.n_a, n_vision_steps=args.n_o, phase=args.phase,
                        mode=args.mode, execute=args.execute, temporal_ensemble=args.temporal_ensemble,
                        plan_samples=args.plan_samples, plan_score=score)
        if args.show_imagined:
            from apps.robotics.imagined import check_drawable

            check_drawable(net, info["state_keys"], args.env)
    except ValueError as exc:
        print(f"error: {args.ckpt}: {exc}")
        return 2
    try:
        with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
            res = evaluate(policy, args.env, args.episodes, args.seed0, args.max_steps, n_videos=args.videos,
                           video_dir=tmp / "videos", res=args.res, show_imagined=args.show_imagined)
            res["videos"] = [str(Path(args.out) / "videos" / Path(p).name) for p in res.get("videos", [])]
            res["checkpoint"] = str(args.ckpt)
            write_json_atomic(tmp / "eval.json", res)
    except FileExistsError as exc:
        print(f"error: {exc} (pass --overwrite to replace it)")
        return 2
    except NotADirectoryError:  # --overwrite does not turn a file into the output folder
        print(f"error: {args.out}: is a file, not an output folder")
        return 2
    except ValueError as exc:  # raised before the first step (policy/env mismatch): nothing written
        print(f"error: {args.ckpt} on env {args.env}: {exc}")
        return 2
    print(json.dumps({k: res[k] for k in ("success_rate", "success_rate_ci95", "mean_max_coverage",
                                          "mean_max_coverage_ci95", "latency_ms_per_chunk")}))
    return 0


def make_toy_main(argv: list[str]) -> int:
    """Write the built-in push task's scripted demonstrations as a replay zarr."""
    from apps.robotics.data.builtin import generate_toy_push
    from apps.robotics.data.zarr_io import write_replay_zarr

    ap = argparse.ArgumentParser(prog="dualsci-robotics make-toy", description=make_toy_main.__doc__)
    ap.add_argument("out")
    ap.add_argument("--episodes", type=positive_int, default=100)
    ap.add_argument("--video-only", type=nonnegative_int, default=0, help="extra episodes stored without actions")
    ap.add_argument("--res", type=positive_int, default=32)
    ap.add_argument("--seed", type=nonnegative_int, default=0)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        check_destination(args.out)
        eps = generate_toy_push(args.episodes, seed=args.seed, res=args.res, video_only=args.video_only)
        write_replay_zarr(eps, args.out, overwrite=args.overwrite)
    except (OSError, ValueError) as exc:  # existing output (without --overwrite), a file in the way
        print(f"error: {exc}")
        return 2
    print(f"wrote {args.out}: {eps.n_episodes} episodes, {eps.n_frames} frames")
    return 0


def serve_main(argv: list[str]) -> int:
    """Serve a policy over HTTP on 127.0.0.1 (POST /act with JSON observations; POST /reset)."""
    from apps.robotics.server import serve

    ap = argparse.ArgumentParser(prog="dualsci-robotics serve", description=serve_main.__doc__)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--port", type=port_number, default=8765)
    ap.add_argument("--n-a", type=int, default=4)
    ap.add_argument("--n-o", type=int, default=4)
    ap.add_argument("--execute", type=int, default=8)
    args = ap.parse_args(argv)
    try:
        serve(args.ckpt, port=args.port, n_action_steps=args.n_a, n_vision_steps=args.n_o, execute=args.execute)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # checkpoint, settings or port (named)
        print(f"error: {exc}")
        return 2
    return 0


def main(args: list[str] | None = None):
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    from dualsci.training import DiffusionModule, build_cli, console_main

    from apps.robotics.data.module import RoboticsDataModule

    verbs = {"rollout": rollout_main, "convert": convert_main, "make-toy": make_toy_main, "serve": serve_main}
    # a DataError names the file, episode and key
    return console_main(lambda: build_cli(DiffusionModule, RoboticsDataModule, extra_subcommands=verbs, args=args,
                                          prog="dualsci-robotics"), args, (DataError,))


if __name__ == "__main__":
    main()
