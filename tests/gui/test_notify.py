"""``gui.py --notify_command``: the runner runs it (an argument list, no shell) when a job ends, with the job's
id, name, status, error and run-page URL as placeholders and LORASMITH_JOB_* variables; the GUI started through
gui.py's own main (uvicorn replaced by a stand-in that hands back the app)."""

import json
import sys

import pytest
from fastapi.testclient import TestClient

import gui
from tests.gui.conftest import HEADERS, run_values, wait_final

RECORDER = """import json, os, sys
folder = sys.argv[1]
env = {k: v for k, v in os.environ.items() if k.startswith("LORASMITH_JOB_")}
with open(os.path.join(folder, "job-" + env["LORASMITH_JOB_ID"] + ".json"), "w") as f:
    json.dump({"argv": sys.argv[2:], "env": env}, f)
"""


@pytest.fixture(autouse=True)
def one_thread_children(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _start_gui(monkeypatch, argv):
    """gui.main with uvicorn.run replaced: returns the app it would have served."""
    import uvicorn

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    assert gui.main(argv) == 0
    return served["app"]


def test_a_job_ending_runs_the_notify_command(gui_root, tmp_path, monkeypatch):
    script, seen = tmp_path / "record.py", tmp_path / "seen"
    script.write_text(RECORDER)
    seen.mkdir()
    app = _start_gui(monkeypatch, ["--root", str(gui_root), "--port", "7999", "--notify_command", sys.executable,
                                   str(script), str(seen), "{name} {status}", "-e", "{error}", "{url}", '{"json": 1}'])
    client = TestClient(app, base_url="http://127.0.0.1:7999", headers=HEADERS)
    runner, store = app.state.runner, app.state.store

    (gui_root / "empty" / "img" / "5_x").mkdir(parents=True)
    failed = client.post("/api/jobs", json={"values": run_values(train_data_dir="empty/img", output_name="bad run")}).json()
    tool = client.post("/api/tools/resize_lora", json={"args": ["--help"]}).json()
    cancelled = client.post("/api/jobs", json={"values": run_values(output_name="never")}).json()
    assert client.post(f"/api/jobs/{cancelled['id']}/cancel").json()["result"] == "cancelled"
    assert wait_final(runner, store, failed["id"])["status"] == "failed"
    assert wait_final(runner, store, tool["id"])["status"] == "done"
    app.state.notifier.wait()

    got = json.loads((seen / f"job-{failed['id']}.json").read_text())
    error = store.get(failed["id"])["error"]
    assert "no training images found" in error
    assert got["argv"] == ["bad run failed", "-e", error, f"http://127.0.0.1:7999/runs/{failed['id']}", '{"json": 1}']
    env = got["env"]
    assert env["LORASMITH_JOB_STATUS"] == "failed" and env["LORASMITH_JOB_EXIT_CODE"] == "2"
    assert env["LORASMITH_JOB_NAME"] == "bad run" and env["LORASMITH_JOB_KIND"] == "train"
    assert env["LORASMITH_JOB_RUN_DIR"] == str(gui_root / "output" / "bad run")
    done = json.loads((seen / f"job-{tool['id']}.json").read_text())
    assert done["argv"][0] == "resize_lora done" and done["env"]["LORASMITH_JOB_ERROR"] == ""
    assert not (seen / f"job-{cancelled['id']}.json").exists()  # cancelled before it started: nothing to tell
    log = (gui_root / ".lorasmith-gui" / "logs" / "notify.log").read_text()
    assert log.count("--- ") == 2


def test_a_missing_program_is_refused_before_serving(gui_root, capsys, monkeypatch):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("served despite a bad --notify_command"))
    assert gui.main(["--root", str(gui_root), "--notify_command", "no-such-notifier-xyz", "{status}"]) == 2
    assert "--notify_command: program 'no-such-notifier-xyz' not found" in capsys.readouterr().err
    assert gui.main(["--root", str(gui_root), "--notify_command"]) == 2
    assert "--notify_command needs a program" in capsys.readouterr().err
