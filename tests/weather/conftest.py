"""Weather tests run single-threaded: the tiny models here gain nothing from a second thread, and on
a shared 2-core runner two OpenMP threads per process were measured 5-10x slower than one."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def load_benchmark():
    """Import ``benchmarks/<name>.py`` as a module (benchmarks are scripts, not a package)."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, root / "benchmarks" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
