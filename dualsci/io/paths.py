"""Where the real sample files are."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path:
    """The folder of real sample files: ``$DUALSCI_SHARED_DATA`` or ``../shared/data`` beside the repo."""
    env = os.environ.get("DUALSCI_SHARED_DATA")
    if env:
        return Path(env).expanduser().resolve()
    repo_root = Path(__file__).resolve().parents[2]
    return (repo_root.parent / "shared" / "data").resolve()
