"""Shared fixtures for the tools' tests: tiny checkpoints from the suite-wide tiny_ckpt (tests/conftest.py)."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_path(tiny_ckpt):
    """tiny_path(family, v=False, seed=0) -> Path of a seeded tiny single-file checkpoint of that family."""

    def get(family, v=False, seed=0):
        return Path(tiny_ckpt(family, seed=seed, v=v))

    return get
