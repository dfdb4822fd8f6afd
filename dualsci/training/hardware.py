"""What the machine can do: bf16 support and a measured matmul peak (the MFU denominator).

CPU vendors publish no per-core peak that matches what torch reaches on a shared 2-thread runner,
so MFU here is measured against the best square GEMM torch itself achieves on this machine, at
this thread count, just now. That makes MFU a statement about our model code, not about the chip.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

# CPU flags that give native bf16 dot products; without them bf16 autocast is emulated and usually
# slower than fp32 (guide core.md §9), so bf16 stays opt-in and hardware-checked.
_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=None)
def bf16_supported(device: str = "cpu") -> bool:
    """True when ``device`` computes bf16 natively (CPU: AMX or AVX512_BF16; CUDA: torch's check).

    Args:
        device: ``"cpu"`` or ``"cuda"``.
    """
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device != "cpu":
        raise ValueError(f"bf16_supported: device must be 'cpu' or 'cuda', got {device!r}")
    flags = _cpu_flags()
    if flags:
        return any(flag in flags for flag in _BF16_CPU_FLAGS)
    # No /proc/cpuinfo (macOS, containers that hide it): fall back to the ATen dispatch level.
    capability = torch.backends.cpu.get_cpu_capability().upper()
    return "AMX" in capability or "BF16" in capability


def resolve_precision(precision: str | int | None, accelerator: str = "cpu") -> str | int | None:
    """Lightning ``precision`` with ``"auto"`` replaced by the best choice for this machine.

    ``"auto"`` becomes ``"bf16-mixed"`` where the device computes bf16 natively (AMX/AVX512_BF16 CPUs,
    Ampere+ GPUs) and ``"32-true"`` elsewhere: on an AVX2-only CPU torch emulates bf16 GEMMs tens of
    times slower than fp32, so one YAML can say ``auto`` and stay fast on both kinds of machine.
    Any other value is returned unchanged (Lightning validates it).

    Args:
        precision: a Lightning precision value, or ``"auto"``.
        accelerator: the trainer's accelerator; ``"gpu"``/``"cuda"``, or ``"auto"`` with CUDA
            visible, resolve for CUDA, everything else for the CPU.
    """
    if precision != "auto":
        return precision
    on_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if bf16_supported("cuda" if on_cuda else "cpu") else "32-true"


def _cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return set()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def measure_gemm_peak(
    dtype: torch.dtype = torch.float32,
    n: int = 1024,
    reps: int = 5,
    device: str | torch.device = "cpu",
) -> float:
    """Best FLOP/s of an ``(n, n) @ (n, n)`` matmul over ``reps`` timed runs (after one warm-up).

    The maximum, not the mean: on a shared machine the slowest runs measure the neighbours.

    Args:
        dtype: ``torch.float32`` or ``torch.bfloat16`` (the latter: the AMX peak where present).
        n: matrix size; 1024 keeps one fp32 run near 10 ms on two threads.
        reps: number of timed runs.
        device: where to run.

    Returns:
        FLOP/s (``2·n³`` per matmul), a float.
    """
    if n < 1 or reps < 1:
        raise ValueError(f"measure_gemm_peak: n and reps must be >= 1, got n={n}, reps={reps}")
    device = torch.device(device)
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator).to(device=device, dtype=dtype)
    best = float("inf")
    for rep in range(reps + 1):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        elapsed = time.perf_counter() - start
        if rep > 0:  # the first run pays for allocation and kernel selection
            best = min(best, elapsed)
    return 2.0 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
