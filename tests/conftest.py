"""Shared pytest fixtures.

Real sample files live outside the repository, under ``DUALSCI_SHARED_DATA`` (default
``../shared/data`` next to the checkout). Tests that need one ask for it through ``shared_file`` and
are skipped, with the reason, when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from dualsci.io import shared_data_dir


@pytest.fixture(autouse=True)
def _two_threads_and_seed():
    """Every test starts from the same RNG state and the thread count of the CI machine."""
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture
def shared_file():
    """Return a function mapping a path relative to the shared data folder to an existing Path.

    Skips the test (with the missing path in the reason) when the file is not there.
    """

    def _get(relpath: str) -> Path:
        path = shared_data_dir() / relpath
        if not path.exists():
            pytest.skip(f"real sample file not found: {path} (set DUALSCI_SHARED_DATA)")
        return path

    return _get
