"""Fixtures for the GUI tests: a root folder holding the tiny model and the demo data, and an app on it."""

import shutil
import time

import pytest
from fastapi.testclient import TestClient

from webui.app import create_app
from webui.security import CHANGE_HEADER

HEADERS = {CHANGE_HEADER: "1"}


@pytest.fixture
def gui_root(tmp_path, tiny_ckpt, demo_data):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(tiny_ckpt("sd1"), root / "tiny.safetensors")
    shutil.copytree(demo_data, root / "data")
    return root


def make_client(root, **kw):
    app = create_app(root, state_dir=root / ".gui", allowed_hosts=("testserver",), start_runner=False, **kw)
    return TestClient(app, headers=HEADERS), app


def run_values(**extra):
    values = {"pretrained_model_name_or_path": "tiny.safetensors", "train_data_dir": "data/img", "resolution": "64",
              "caption_extension": ".txt", "network_dim": 4, "network_alpha": 4, "learning_rate": 1e-3,
              "max_train_steps": 4, "train_batch_size": 2, "seed": 3, "output_name": "t",
              "max_data_loader_n_workers": 0, "optimizer_type": "AdamW"}
    values.update(extra)
    return values


def wait_final(runner, store, job_id, timeout=240):
    """Drive the runner until the job has ended; returns the job row."""
    end = time.time() + timeout
    while time.time() < end:
        runner.tick()
        job = store.get(job_id)
        if job["status"] in ("done", "failed", "interrupted", "cancelled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not end in {timeout}s: {store.get(job_id)}")
