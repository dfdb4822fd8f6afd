"""ThroughputMFU logs finite throughput and MFU; the hardware probes return sane values."""

from __future__ import annotations

import math

import pytest
import torch
from test_training_module import TinyData, TinyDualNet, tiny_module, tiny_trainer

from dualsci.training import ThroughputMFU, bf16_supported, measure_gemm_peak


def test_gemm_peak_is_positive_and_finite():
    peak = measure_gemm_peak(torch.float32, n=128, reps=2)
    assert math.isfinite(peak) and peak > 1e6


def test_gemm_peak_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n and reps must be >= 1"):
        measure_gemm_peak(n=0)


def test_bf16_supported_answers_for_cpu_and_rejects_unknown_devices():
    assert isinstance(bf16_supported("cpu"), bool)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        bf16_supported("tpu")


def test_throughput_mfu_counts_net_calls_and_logs_finite_numbers():
    meter = ThroughputMFU(peak_flops=1e9)
    trainer = tiny_trainer(max_steps=3, limit_val_batches=0, callbacks=[meter])
    trainer.fit(tiny_module(), datamodule=TinyData(batch_size=16))
    assert len(meter.history) == 3
    for record in meter.history:
        assert all(math.isfinite(v) and v > 0 for v in record.values())
    # One gradient-carrying net call per step on (16, 4) + (16, 4) tokens, costed ×3.
    expected = 3 * TinyDualNet().flops_per_forward(16, 4, 4)
    step = meter.history[-1]
    assert step["flops_per_s"] / step["samples_per_s"] * 16 == pytest.approx(expected, rel=1e-6)
    assert step["mfu"] == pytest.approx(step["flops_per_s"] / 1e9)
    assert {"perf/samples_per_s", "perf/flops_per_s", "perf/mfu"} <= set(trainer.logged_metrics)


def test_throughput_mfu_with_given_flops_and_measured_peak():
    meter = ThroughputMFU(flops_per_sample=1000.0)
    trainer = tiny_trainer(max_steps=2, limit_val_batches=0, callbacks=[meter])
    trainer.fit(tiny_module(), datamodule=TinyData(batch_size=8))
    assert meter.peak_flops > 0
    step = meter.history[-1]
    assert step["flops_per_s"] == pytest.approx(1000.0 * step["samples_per_s"])
    assert 0 < step["mfu"] < 1


def test_throughput_mfu_rejects_nonpositive_values():
    with pytest.raises(ValueError, match="flops_per_sample must be > 0"):
        ThroughputMFU(flops_per_sample=0)
