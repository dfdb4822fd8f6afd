"""Core benchmark: dual-stream stack speed vs diffusers' SD3 block, MFU, bf16, compile, samplers.

    python benchmarks/core.py --quick --out outputs/bench/core.json     # eager fp32 (+ bf16 where native)
    python benchmarks/core.py --out outputs/bench/core.json             # + torch.compile variants

App-sized config: width D = 256, 4 heads, 4 dual blocks, 2 × 256 tokens, batch 8.

* Training step = forward + backward of a mean-square loss (no optimizer update), timed for
  - ``ours``: 4 ``dualsci.nn.DualStreamBlock`` (joint attention, RMS QK-norm),
  - ``diffusers``: 4 ``diffusers.JointTransformerBlock`` (``context_pre_only=False``,
    ``qk_norm="rms_norm"``), same width/heads/MLP ratio, same inputs,
  - ``model``: the full ``DualStreamTransformer`` (embedders, time embeddings, heads) — its
    analytic ``flops_per_forward`` (attention included) ×3 gives MFU.
  Each in fp32 and, where the CPU has native bf16 (``--bf16 auto``), bf16 autocast; compiled
  variants (``nn.Module.compile``) unless ``--quick``.
* Sampling throughput: samples/s of a 10-NFE sampler with the full model (10 forward passes,
  no grad), fp32 (and bf16 as above).
* MFU against ``measure_gemm_peak`` (best square matmul FLOP/s, same threads, same run).
* Samplers on the exact Gaussian toy: DPM-Solver++(2M) at 10 steps vs Euler at 100 steps.

Timings interleave the variants round-robin and keep the median, so that load from other
processes on a shared machine hits every variant alike; the ratios are what count.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from dualsci.diffusion import gaussian_toy_error
from dualsci.io import write_json_atomic
from dualsci.nn import DualStreamBlock, DualStreamConfig, DualStreamTransformer
from dualsci.training.hardware import bf16_supported, measure_gemm_peak

D, HEADS, DEPTH, L_A, L_B, BATCH, IN_DIM = 256, 4, 4, 256, 256, 8, 64


class OursStack(nn.Module):
    """``DEPTH`` dual-stream blocks with one shared condition vector (as SD3's ``temb``)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(DualStreamBlock(D, HEADS, 4.0, "joint", qk_norm=True) for _ in range(DEPTH))

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            x_a, x_b = block(x_a, x_b, c, c)
        return x_a, x_b


class DiffusersStack(nn.Module):
    """``DEPTH`` diffusers SD3 ``JointTransformerBlock``s; a = image tokens, b = context tokens."""

    def __init__(self) -> None:
        super().__init__()
        from diffusers.models.attention import JointTransformerBlock

        self.blocks = nn.ModuleList(
            JointTransformerBlock(D, HEADS, D // HEADS, context_pre_only=False, qk_norm="rms_norm")
            for _ in range(DEPTH)
        )

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            x_b, x_a = block(hidden_states=x_a, encoder_hidden_states=x_b, temb=c)
        return x_a, x_b


def full_model() -> DualStreamTransformer:
    return DualStreamTransformer(
        DualStreamConfig(in_dim_a=IN_DIM, in_dim_b=IN_DIM, dim=D, num_heads=HEADS, depth_dual=DEPTH)
    )


def randomise(module: nn.Module) -> nn.Module:
    """Small random weights everywhere: zero-initialised gates and heads would make the timing of
    the two stacks, and their gradients, unrepresentative of a trained model."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return module


def block_flops(batch: int) -> int:
    """Forward FLOPs of the block stack alone: the full model's count minus its non-block part."""
    deep = DualStreamTransformer(DualStreamConfig(in_dim_a=IN_DIM, in_dim_b=IN_DIM, dim=D, num_heads=HEADS,
                                                  depth_dual=2 * DEPTH))
    return deep.flops_per_forward(batch, L_A, L_B) - full_model().flops_per_forward(batch, L_A, L_B)


def autocast(dtype: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()


def make_case(name: str, net: nn.Module, inputs: tuple, dtype: str, train: bool) -> Callable[[], None]:
    """A closure running one training step (fwd + bwd) or one inference forward of ``net``."""

    def step() -> None:
        if train:
            with autocast(dtype):
                y_a, y_b = net(*inputs)
            loss = y_a.float().pow(2).mean() + y_b.float().pow(2).mean()
            loss.backward()
            for p in net.parameters():
                p.grad = None
        else:
            with torch.no_grad(), autocast(dtype):
                net(*inputs)

    step.__name__ = name
    return step


def time_cases(cases: dict[str, Callable[[], None]], reps: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each case, measured round-robin."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    for name, value in medians.items():
        print(f"  measured {name:<28} {1000 * value:9.1f} ms", flush=True)
    return medians


def per_time(amount: float, seconds: dict[str, float], case: str) -> float | None:
    """``amount / seconds[case]``, or None when the case was not timed (bf16 without native support)."""
    return amount / seconds[case] if case in seconds else None


def ratio(seconds: dict[str, float], num: str, den: str) -> float | None:
    """``seconds[num] / seconds[den]`` (a speed-up of ``den`` over ``num``), or None if either is missing."""
    return per_time(seconds[num], seconds, den) if num in seconds else None


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, no torch.compile")
    parser.add_argument("--compile", action="store_true", help="time compiled variants even with --quick")
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="time bf16 autocast cases: auto = only where the CPU has native bf16 (AMX/AVX512_BF16); "
        "without it torch falls back to a reference GEMM tens of times slower than fp32",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per case")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = args.reps or (3 if args.quick else 7)
    compiled = args.compile or not args.quick
    native_bf16 = bf16_supported()
    dtypes = ("fp32", "bf16") if args.bf16 == "on" or (args.bf16 == "auto" and native_bf16) else ("fp32",)
    torch.manual_seed(0)

    print(f"dualsci core benchmark: D={D}, heads={HEADS}, {DEPTH} dual blocks, tokens {L_A}+{L_B}, batch {BATCH}, "
          f"{torch.get_num_threads()} threads, {cpu_model()}", flush=True)
    peak_fp32 = measure_gemm_peak(torch.float32, n=1024, reps=5)
    # Without native bf16 a 1024³ bf16 matmul takes seconds: measure a smaller one.
    peak_bf16 = measure_gemm_peak(torch.bfloat16, n=1024 if native_bf16 else 256, reps=5 if native_bf16 else 2)

    x_a, x_b = torch.randn(BATCH, L_A, D), torch.randn(BATCH, L_B, D)
    c = torch.randn(BATCH, D)
    tok_a, tok_b = torch.randn(BATCH, L_A, IN_DIM), torch.randn(BATCH, L_B, IN_DIM)
    t = torch.rand(BATCH)
    stacks = {"ours": randomise(OursStack()), "diffusers": randomise(DiffusersStack())}
    model = randomise(full_model())
    cases = {}
    for dtype in dtypes:
        for name, net in stacks.items():
            cases[f"train_{name}_{dtype}"] = make_case(name, net, (x_a, x_b, c), dtype, True)
        cases[f"train_model_{dtype}"] = make_case("model", model, (tok_a, tok_b, t, t), dtype, True)
        cases[f"infer_model_{dtype}"] = make_case("model", model, (tok_a, tok_b, t, t), dtype, False)
    seconds = time_cases(cases, reps)

    if compiled:
        compiled_stack, compiled_model = randomise(OursStack()), randomise(full_model())
        compiled_stack.compile()
        compiled_model.compile()
        ccases = {}
        for dtype in dtypes:
            ccases[f"train_ours_compiled_{dtype}"] = make_case("ours", compiled_stack, (x_a, x_b, c), dtype, True)
            ccases[f"infer_model_compiled_{dtype}"] = make_case(
                "model", compiled_model, (tok_a, tok_b, t, t), dtype, False
            )
        start = time.perf_counter()
        for fn in ccases.values():
            fn()  # compile (cold start) outside the timed loop
        compile_seconds = time.perf_counter() - start
        seconds.update(time_cases(ccases, reps))

    stack_train_flops = 3 * block_flops(BATCH)
    model_train_flops = 3 * model.flops_per_forward(BATCH, L_A, L_B)
    model_fwd_flops = model.flops_per_forward(BATCH, L_A, L_B)
    nfe = 10
    results = {
        "config": {"dim": D, "heads": HEADS, "dual_blocks": DEPTH, "L_a": L_A, "L_b": L_B, "batch": BATCH,
                   "in_dim": IN_DIM, "threads": torch.get_num_threads(), "reps": reps},
        "machine": {"cpu": cpu_model(), "bf16_native": bf16_supported(), "torch": torch.__version__,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "gemm_peak_fp32_flops": peak_fp32,
        "gemm_peak_bf16_flops": peak_bf16,
        "seconds": seconds,
        "speedup_vs_diffusers_fp32": seconds["train_diffusers_fp32"] / seconds["train_ours_fp32"],
        "speedup_vs_diffusers_bf16": ratio(seconds, "train_diffusers_bf16", "train_ours_bf16"),
        "mfu_fp32": model_train_flops / seconds["train_model_fp32"] / peak_fp32,
        "mfu_fp32_stack": stack_train_flops / seconds["train_ours_fp32"] / peak_fp32,
        "mfu_fp32_diffusers_stack": stack_train_flops / seconds["train_diffusers_fp32"] / peak_fp32,
        "mfu_bf16": per_time(model_train_flops / peak_bf16, seconds, "train_model_bf16"),
        "bf16_speedup": ratio(seconds, "train_model_fp32", "train_model_bf16"),
        "bf16_speedup_stack": ratio(seconds, "train_ours_fp32", "train_ours_bf16"),
        "bf16_timed": "bf16" in dtypes,
        "train_samples_per_s_fp32": BATCH / seconds["train_model_fp32"],
        "sampling_samples_per_s_fp32_10nfe": BATCH / (nfe * seconds["infer_model_fp32"]),
        "sampling_samples_per_s_bf16_10nfe": per_time(BATCH / nfe, seconds, "infer_model_bf16"),
        "model_forward_flops": model_fwd_flops,
        "dpm2m_10nfe_err": gaussian_toy_error("dpmpp_2m", 10),
        "euler_100nfe_err": gaussian_toy_error("euler", 100),
        "command": "python benchmarks/core.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    if compiled:
        results["compile_cold_seconds"] = compile_seconds
        results["compile_speedup_train_fp32"] = seconds["train_ours_fp32"] / seconds["train_ours_compiled_fp32"]
        results["compile_speedup_train_bf16"] = ratio(seconds, "train_ours_bf16", "train_ours_compiled_bf16")
        results["compile_speedup_infer_fp32"] = seconds["infer_model_fp32"] / seconds["infer_model_compiled_fp32"]
    report(results)
    if args.out:
        write_json_atomic(args.out, results)
        print(f"wrote {args.out}")
    return results


def report(r: dict) -> None:
    s = r["seconds"]
    print(f"GEMM peak: fp32 {r['gemm_peak_fp32_flops'] / 1e9:.0f} GFLOP/s, bf16 {r['gemm_peak_bf16_flops'] / 1e9:.0f} "
          f"GFLOP/s (native bf16: {r['machine']['bf16_native']})")
    print("training step (fwd+bwd), median ms:")
    for name in sorted(k for k in s if k.startswith("train")):
        print(f"  {name:<28} {1000 * s[name]:8.1f}")
    print("inference forward, median ms:")
    for name in sorted(k for k in s if k.startswith("infer")):
        print(f"  {name:<28} {1000 * s[name]:8.1f}")
    checks = [
        ("speedup vs diffusers, fp32", r["speedup_vs_diffusers_fp32"], 1.2, "x"),
        ("speedup vs diffusers, bf16", r["speedup_vs_diffusers_bf16"], 1.2, "x"),
        ("MFU fp32 (full model)", r["mfu_fp32"], 0.40, ""),
        ("bf16 speedup (full model)", r["bf16_speedup"], 1.5, "x"),
    ]
    for label, value, target, unit in checks:
        if value is None:
            print(f"  {label:<30}    n/a  (bf16 not timed: no native bf16 on this CPU; --bf16 on forces it)")
            continue
        status = "met" if value >= target else "NOT met"
        print(f"  {label:<30} {value:6.2f}{unit}  (target >= {target}{unit}: {status})")
    print(f"  MFU fp32 stacks: ours {r['mfu_fp32_stack']:.2f}, diffusers {r['mfu_fp32_diffusers_stack']:.2f}")
    bf16 = r["sampling_samples_per_s_bf16_10nfe"]
    print(f"  sampling, 10 NFE: {r['sampling_samples_per_s_fp32_10nfe']:.2f} samples/s fp32, "
          f"{'n/a' if bf16 is None else f'{bf16:.2f}'} bf16")
    ok = r["dpm2m_10nfe_err"] <= r["euler_100nfe_err"]
    print(f"  Gaussian toy: DPM++(2M) 10 NFE err {r['dpm2m_10nfe_err']:.2e} vs Euler 100 NFE {r['euler_100nfe_err']:.2e} "
          f"({'met' if ok else 'NOT met'})")
    if "compile_cold_seconds" in r:
        bf16 = r["compile_speedup_train_bf16"]
        print(f"  compile: cold {r['compile_cold_seconds']:.0f} s; speedup train fp32 {r['compile_speedup_train_fp32']:.2f}x, "
              f"bf16 {'n/a' if bf16 is None else f'{bf16:.2f}x'}, infer fp32 {r['compile_speedup_infer_fp32']:.2f}x")
    print(f"reproduce: {r['command']}")


if __name__ == "__main__":
    main()
