"""Shared fixtures for the tools' tests: one thread per test and tiny checkpoints made once per session."""

import pytest

from tools.make_tiny_model import make_tiny_model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def tiny_path(tiny_dir):
    """tiny_path(family, seed=0) -> path of a seeded tiny single-file checkpoint of that family."""
    made = {}

    def get(family, v=False, seed=0):
        if (family, v, seed) not in made:
            name = f"tiny_{family}{'_v' if v else ''}_s{seed}.safetensors"
            made[(family, v, seed)] = make_tiny_model(family, tiny_dir / name, seed=seed, v_parameterization=v)
        return made[(family, v, seed)]

    return get
