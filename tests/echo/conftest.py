"""Small phantom datasets in every layout, written once per test session."""

from __future__ import annotations

import pytest

from apps.echo.writers import write_camus_2019, write_camus_2023, write_echonet

SHAPE = (96, 80)


@pytest.fixture(scope="session")
def camus2019(tmp_path_factory):
    return write_camus_2019(tmp_path_factory.mktemp("c19") / "CAMUS", n_patients=4, seed=1, shape=SHAPE, n_testing=1)


@pytest.fixture(scope="session")
def camus2023(tmp_path_factory):
    return write_camus_2023(tmp_path_factory.mktemp("c23") / "CAMUS_public", n_patients=10, seed=1, shape=SHAPE)


@pytest.fixture(scope="session")
def echonet_root(tmp_path_factory):
    return write_echonet(tmp_path_factory.mktemp("en") / "EchoNet-Dynamic", n_videos=3, seed=1)
