"""Fixtures of the fault drills: a shared demo dataset and one fork server per session (tiny_ckpt and
demo_data come from tests/conftest.py)."""

import shutil

import pytest

from tests.faults.harness import REPO, ForkServer

DEMO = REPO / "examples" / "demo"


@pytest.fixture(scope="session")
def session_data(tmp_path_factory):
    """A copy of the demo dataset shared by runs that write no caches next to the images."""
    dst = tmp_path_factory.mktemp("fault_data") / "data"
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
