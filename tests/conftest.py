"""Suite-wide fixtures."""

import shutil
from pathlib import Path

import pytest
import torch

from tools.make_tiny_model import make_tiny_model

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo"


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir():
    """lorasmith's cache (remembered hashes, the built shapes model) goes to output/test-cache in this
    checkout, never the user's ~/.cache; it persists between runs (subprocesses inherit it)."""
    import os

    old = os.environ.get("LORASMITH_CACHE_DIR")
    os.environ["LORASMITH_CACHE_DIR"] = str(Path(__file__).resolve().parents[1] / "output" / "test-cache")
    yield
    if old is None:
        os.environ.pop("LORASMITH_CACHE_DIR", None)
    else:
        os.environ["LORASMITH_CACHE_DIR"] = old


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    spin-waits make them several times slower; restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """tiny_ckpt(family, seed=0, v=False) -> path of a seeded tiny single-file checkpoint (``v``: a
    v-prediction one), made once per session. The suite's one source of tiny checkpoints: the tools',
    models' and ComfyUI tests ask it too, so each model is built once. Never write into its folder."""
    folder = tmp_path_factory.mktemp("tiny_ckpts")
    made = {}

    def get(family, seed=0, v=False):
        if (family, seed, v) not in made:
            name = f"tiny_{family}{'_v' if v else ''}_{seed}.safetensors"
            made[(family, seed, v)] = str(make_tiny_model(family, folder / name, seed=seed, v_parameterization=v))
        return made[(family, seed, v)]

    return get


@pytest.fixture
def demo_data(tmp_path):
    """A private copy of the shipped demo dataset (caches may be written next to the images)."""
    dst = tmp_path / "data"
    shutil.copytree(DEMO, dst)
    return dst
