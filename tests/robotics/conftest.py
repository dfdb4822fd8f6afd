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


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_models():
    """Tiny models gain nothing from a second thread, and on a shared, loaded 2-core runner OpenMP
    barriers made them 10x slower with two (measured); behaviour does not depend on it."""
    import torch

    torch.set_num_threads(1)
    yield


def tiny_net(**kw):
    from apps.robotics.model import DustPolicyNet

    args = dict(action_dim=2, state_dim=4, horizon=8, n_obs=2, image_size=16, crop_size=12, dim=32, num_heads=2,
                depth_dual=1, depth_tail=1, enc_channels=8, grid=2, future_target="ema")
    args.update(kw)
    return DustPolicyNet(**args)


def toy_batch(eps, n=8, horizon=8, use_image=True, keys=("state",)):
    from apps.robotics.data.windows import WindowDataset

    ds = WindowDataset(eps, list(keys), n_obs=2, horizon=horizon, use_image=use_image)
    return ds, ds.__getitems__(list(range(0, len(ds), max(1, len(ds) // n)))[:n])
