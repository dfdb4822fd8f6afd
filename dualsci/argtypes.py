"""argparse value types for the apps' verbs and benchmarks: a bad value is a usage error (exit 2) that names
the option, not a traceback deep inside a run or a silently different run (``--max-steps 0`` once meant the
default 300, ``--members 0`` wrote an empty store)."""

from __future__ import annotations

import argparse
import math


def _int_between(text: str, lo: int, hi: int | None = None) -> int:
    bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer {bounds}, got {text!r}") from None
    if value < lo or (hi is not None and value > hi):
        raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, step limits, sizes)."""
    return _int_between(text, 1)


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (seeds: numpy and gymnasium refuse negative ones deep inside a run; counts where 0 means
    none: ``--videos -1`` once sliced the episode list and recorded all but the last)."""
    return _int_between(text, 0)


def port_number(text: str) -> int:
    """A TCP port, 0..65535 (0 = any free port); a larger one was an OverflowError traceback."""
    return _int_between(text, 0, 65535)


def nonnegative_float(text: str) -> float:
    """A finite float >= 0 (NaN and inf are rejected: they make every weight NaN or zero)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def probability(text: str) -> float:
    """A float in [0, 1] (shares, probabilities; NaN is rejected)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # False for NaN too
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value
