"""Tiny checkpoints and a small kohya-folder dataset for end-to-end training tests."""

import shutil
from pathlib import Path

import pytest

from tools.make_tiny_model import make_tiny_model

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo"


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """tiny_ckpt(family) -> path of a seeded tiny single-file checkpoint."""
    folder = tmp_path_factory.mktemp("train_models")
    made = {}

    def get(family):
        if family not in made:
            made[family] = str(make_tiny_model(family, folder / f"tiny_{family}.safetensors", seed=0))
        return made[family]

    return get


@pytest.fixture
def demo_data(tmp_path):
    """A private copy of the shipped demo dataset (caches may be written next to the images)."""
    dst = tmp_path / "data"
    shutil.copytree(DEMO, dst)
    return dst


def base_values(ckpt, data, out, **extra):
    """Options for a short, deterministic CPU run."""
    values = dict(
        pretrained_model_name_or_path=ckpt, train_data_dir=str(data / "img"), resolution=64, caption_extension=".txt",
        network_dim=8, network_alpha=8, learning_rate=5e-3, max_train_steps=8, train_batch_size=2, seed=7,
        output_dir=str(out), output_name="t", max_data_loader_n_workers=0, optimizer_type="AdamW",
    )
    values.update(extra)
    return values
