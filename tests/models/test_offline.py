"""Nothing reaches for the network: HF_HUB_OFFLINE=1 and sockets that refuse to connect."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from library.models import load_base_model

from .test_diffusers_folder import _save_folder

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = """
import runpy, socket, sys
def refuse(*args, **kwargs):
    raise OSError("network disabled by the test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
out = sys.argv[1]
sys.argv = ["make_tiny_model.py", "--family", "sdxl", "--out", out]
try:
    runpy.run_path("tools/make_tiny_model.py", run_name="__main__")
except SystemExit as e:
    assert e.code == 0, e.code
from library.models import load_base_model
m = load_base_model(out)
ids = [t("a photo of a cat").input_ids for t in m.tokenizers]
assert ids[0] == ids[1] == [49406, 320, 1125, 539, 320, 2368, 49407], ids
print("OK", m.family)
"""


def test_cli_and_loading_in_a_fresh_offline_process(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DIFFUSERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO)}
    out = tmp_path / "tiny.safetensors"
    run = subprocess.run([sys.executable, "-c", _SCRIPT, str(out)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "wrote" in run.stdout and "OK sdxl" in run.stdout


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    for name in ("create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_single_file_and_folder_load_without_network(tiny_path, tmp_path, no_network):
    model = load_base_model(tiny_path("sd2"))
    folder = load_base_model(_save_folder(model, tmp_path, with_tokenizers=False))
    assert folder.family == "sd2" and folder.tokenizers[0].pad_token == "!"
