"""Lightning wiring: the thin module, the objective protocol, EMA, throughput/MFU, the CLI factory."""

from dualsci.training.callbacks import EMA, ThroughputMFU, make_ema
from dualsci.training.checkpoint import FinalCheckpoint
from dualsci.training.cli import ConfigError, DualsciTrainer, build_cli, console_exit, console_main, max_time_arg
from dualsci.training.hardware import bf16_supported, measure_gemm_peak, resolve_precision
from dualsci.training.module import DiffusionModule, Objective
from dualsci.training.outputs import run_output_problem

__all__ = [
    "DiffusionModule",
    "DualsciTrainer",
    "Objective",
    "EMA",
    "FinalCheckpoint",
    "ThroughputMFU",
    "bf16_supported",
    "build_cli",
    "ConfigError",
    "console_exit",
    "console_main",
    "make_ema",
    "max_time_arg",
    "run_output_problem",
    "measure_gemm_peak",
    "resolve_precision",
]
