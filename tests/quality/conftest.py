"""The trained shapes base model, built once per source hash (shared cache) for the quality tests."""

import pytest

from library.eval.shapes_model import cached_shapes_model


@pytest.fixture(scope="session")
def shapes_model_path():
    # The builder picks its own thread count (one: two threads spin against other jobs on a shared machine).
    return str(cached_shapes_model(seed=0))
