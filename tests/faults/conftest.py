"""Fixtures of the fault drills: tiny models, a private demo dataset, one fork server per session."""

import shutil

import pytest

from tests.faults.harness import REPO, ForkServer
from tools.make_tiny_model import make_tiny_model

DEMO = REPO / "examples" / "demo"


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """tiny_ckpt(family, seed=0) -> path of a seeded tiny single-file checkpoint."""
    folder = tmp_path_factory.mktemp("fault_models")
    made = {}

    def get(family, seed=0):
        if (family, seed) not in made:
            made[(family, seed)] = str(make_tiny_model(family, folder / f"tiny_{family}_{seed}.safetensors", seed=seed))
        return made[(family, seed)]

    return get


@pytest.fixture(scope="session")
def session_data(tmp_path_factory):
    """A copy of the demo dataset shared by runs that write no caches next to the images."""
    dst = tmp_path_factory.mktemp("fault_data") / "data"
    shutil.copytree(DEMO, dst)
    return dst


@pytest.fixture
def demo_data(tmp_path):
    """A private copy of the demo dataset (caches may be written next to the images)."""
    dst = tmp_path / "data"
    shutil.copytree(DEMO, dst)
    return dst


@pytest.fixture(scope="session")
def fork_server(tmp_path_factory):
    server = ForkServer(tmp_path_factory.mktemp("fork_logs"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def reference(fork_server, tiny_ckpt, session_data, tmp_path_factory):
    """The uninterrupted run the drills must reproduce: (options builder, final LoRA tensors)."""
    from safetensors.torch import load_file

    from tests.faults.harness import cli_args

    def options(out, **extra):
        return cli_args(tiny_ckpt("sd1"), session_data, out, **extra)

    out = tmp_path_factory.mktemp("reference") / "out"
    status, log = fork_server.run(options(out))
    assert status == 0, log[-3000:]
    return options, load_file(out / "t.safetensors")
