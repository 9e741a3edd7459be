"""The memory check (webui/memory_check.py): a real 2-step dry run of the form's options, queued through the API,
that measures the trainer's peak memory and compares it with the estimate, in a temporary folder it deletes.

Without a GPU the figure is the resident set's growth (peak minus the size before the model loaded); the CUDA
path (torch.cuda.max_memory_allocated / reserved) runs only where a GPU is present."""

import json

import pytest
import torch

from tests.gui.conftest import make_client, run_values, wait_final


@pytest.fixture(autouse=True)
def one_thread_children(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _check(client, app, values, **body):
    r = client.post("/api/memory/check", json={"values": values, **body})
    assert r.status_code == 200, r.text
    record = r.json()
    job = wait_final(app.state.runner, app.state.store, record["job"])
    result = client.get(f"/api/memory/check/{record['job']}").json()
    return record, job, result


def test_dry_run_measures_the_peak_in_a_folder_it_deletes(gui_root):
    client, app = make_client(gui_root)
    mine = gui_root / "output" / "mine"
    mine.mkdir(parents=True)
    (mine / "keep.txt").write_text("the user's run folder")
    (gui_root / "prompts.txt").write_text("sks shape --w 64 --h 64 --s 2\n")
    queued = client.post("/api/jobs", json={"values": run_values(output_name="later")}).json()
    values = run_values(output_dir="output/mine", sample_prompts="prompts.txt", sample_every_n_steps=1,
                        save_every_n_steps=1, save_state=True, max_train_epochs=5, logging_dir="logs")
    r = client.post("/api/memory/check", json={"values": values})
    assert r.status_code == 200, r.text
    record = r.json()
    assert record["state"] == "queued" and record["estimate"]["family"] == "sd1" and record["measured"] is None
    store, runner = app.state.store, app.state.runner
    assert [j["id"] for j in store.with_status("queued")] == [record["job"], queued["id"]]  # the check goes first
    job = store.get(record["job"])
    opts, folder = job["options"], job["run_dir"]
    assert opts["max_train_steps"] == 2 and opts["output_dir"] == folder and folder.startswith(str(gui_root / ".gui" / "memory-checks" / "run-"))
    assert not {"sample_prompts", "save_every_n_steps", "save_state", "max_train_epochs", "logging_dir"} & set(opts)
    assert job["kind"] == "memory_check" and runner.command(job)[1].endswith("train_network.py")

    runner.tick()  # starts the check (not the queued run)
    assert store.get(record["job"])["status"] == "running" and store.get(queued["id"])["status"] == "queued"
    done = wait_final(runner, store, record["job"])
    assert done["status"] == "done", client.get(f"/api/jobs/{done['id']}/log").json()["log"][-3000:]
    result = client.get(f"/api/memory/check/{record['job']}").json()
    measured = result["measured"]
    assert result["state"] == "done" and result["error"] is None and measured["device"] == "cpu"
    assert measured["peak_rss_bytes"] > measured["start_rss_bytes"] > 50 * 2**20  # python + torch before the model
    comparison = result["comparison"]
    assert comparison["measured_bytes"] == measured["peak_rss_bytes"] - measured["start_rss_bytes"]
    assert comparison["estimated_bytes"] == record["estimate"]["total_bytes"] - record["estimate"]["parts"]["CUDA context"]
    assert comparison["ratio"] == pytest.approx(comparison["measured_bytes"] / comparison["estimated_bytes"], rel=1e-2)
    # nothing left behind: the temporary folder is gone, the user's folder untouched, only the record remains
    checks = gui_root / ".gui" / "memory-checks"
    assert sorted(p.name for p in checks.iterdir()) == [f"check-{record['job']}.json"]
    assert sorted(p.name for p in mine.iterdir()) == ["keep.txt"] and not (gui_root / "logs").exists()
    assert json.loads((checks / f"check-{record['job']}.json").read_text())["measured"] == measured


def test_refused_options_leave_nothing_and_a_failed_dry_run_says_why(gui_root):
    client, app = make_client(gui_root)
    bad = client.post("/api/memory/check", json={"values": run_values(network_dim=-1)})
    assert bad.status_code == 400 and bad.json()["field"] == "network_dim"
    outside = client.post("/api/memory/check", json={"values": run_values(pretrained_model_name_or_path="/etc/passwd")})
    assert outside.status_code == 400 and outside.json()["error"].startswith("pretrained_model_name_or_path: ")
    checks = gui_root / ".gui" / "memory-checks"
    assert not any(checks.iterdir())  # their temporary folders removed again
    assert app.state.store.all() == []  # nothing queued
    cancelled = client.post("/api/memory/check", json={"values": run_values()}).json()
    assert client.post(f"/api/jobs/{cancelled['job']}/cancel").json()["result"] == "cancelled"
    record = client.get(f"/api/memory/check/{cancelled['job']}").json()
    assert record["state"] == "cancelled" and record["measured"] is None and "cancelled" in record["error"]
    assert [p.name for p in checks.iterdir()] == [f"check-{cancelled['job']}.json"]  # its folder deleted

    (gui_root / "empty" / "img" / "5_x").mkdir(parents=True)
    record, job, result = _check(client, app, run_values(train_data_dir="empty/img"))
    assert job["status"] == "failed" and result["state"] == "failed" and result["measured"] is None
    assert "no training images found" in result["error"] and result["comparison"] is None
    assert sorted(p.name for p in checks.iterdir()) == sorted([f"check-{record['job']}.json", f"check-{cancelled['job']}.json"])
    assert client.get(f"/api/memory/check/{record['job'] + 99}").status_code == 404


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA path of the memory check needs a GPU")
def test_on_a_gpu_the_allocator_peak_is_compared_with_the_estimate(gui_root):  # pragma: no cover - GPU only
    client, app = make_client(gui_root)
    record, job, result = _check(client, app, run_values(mixed_precision="fp16", resolution="128"))
    assert job["status"] == "done", client.get(f"/api/jobs/{job['id']}/log").json()["log"][-3000:]
    measured = result["measured"]
    assert measured["device"] == "cuda" and measured["max_reserved_bytes"] >= measured["max_allocated_bytes"] > 0
    assert result["comparison"]["measured_bytes"] == measured["max_allocated_bytes"] and result["comparison"]["ratio"] > 0
