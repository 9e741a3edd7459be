"""The trained shapes base model, built once per source hash (shared cache) for the quality tests."""

import pytest
import torch

from library.eval.shapes_model import cached_shapes_model


@pytest.fixture(scope="session")
def shapes_model_path():
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))  # building is the one place threads pay off
    try:
        return str(cached_shapes_model(seed=0))
    finally:
        torch.set_num_threads(before)
