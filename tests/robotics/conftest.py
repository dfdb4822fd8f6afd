"""Fixtures for the robotics tests: a tiny deterministic built-in dataset and the real PushT path."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

PUSHT = "robotics/pusht_cchi_v7_replay.zarr"


@pytest.fixture(scope="session")
def toy_eps():
    from apps.robotics.data.builtin import generate_toy_push

    return generate_toy_push(6, seed=0, res=16, video_only=2)
