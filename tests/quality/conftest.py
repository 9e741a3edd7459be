"""The trained shapes base model, built once per source hash (shared cache) for the quality tests, and the
concept data made from it once per session (per xdist worker)."""

import pytest

from library.eval.concept_run import prepare_concept_data
from library.eval.shapes_model import cached_shapes_model
from library.models import load_base_model


@pytest.fixture(scope="session")
def shapes_model_path():
    # The builder picks its own thread count (one: two threads spin against other jobs on a shared machine).
    return str(cached_shapes_model(seed=0))


@pytest.fixture(scope="session")
def shapes_model(shapes_model_path):
    return load_base_model(shapes_model_path)


@pytest.fixture(scope="session")
def concept_data(shapes_model_path, tmp_path_factory):
    """The concept folder and the class images, made once (the class images come from the base)."""
    return prepare_concept_data(shapes_model_path, tmp_path_factory.mktemp("concept") / "data")
