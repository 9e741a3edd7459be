"""The job runner survives a GUI restart: a new runner re-attaches to the running process and records how it ended."""

from tests.gui.conftest import make_client, run_values, wait_final
from webui.jobs import JobStore, Runner


def test_restart_reattaches_to_a_running_job_and_shows_finished_ones(gui_root, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client, app = make_client(gui_root)
    first = client.post("/api/jobs", json={"values": run_values(max_train_steps=3)}).json()
    second = client.post("/api/jobs", json={"values": run_values(max_train_steps=2, output_name="u")}).json()
    app.state.runner.tick()
    pid = app.state.store.get(first["id"])["pid"]
    assert app.state.store.get(first["id"])["status"] == "running" and pid

    # "restart": a fresh store + runner on the same state folder; the old runner (and its Popen) is gone
    store = JobStore(gui_root / ".gui" / "jobs.sqlite")
    runner = Runner(store, gui_root, gui_root / ".gui" / "logs")
    del app
    runner.tick()
    assert store.get(first["id"])["status"] == "running" and store.get(first["id"])["pid"] == pid
    assert store.get(second["id"])["status"] == "queued"  # one job at a time, also after the restart
    assert runner.cancel(second["id"]) == "cancelled"  # the queue is still editable after the restart
    done = wait_final(runner, store, first["id"])
    assert done["status"] == "done" and done["exit_code"] == 0  # read from the run folder's status.json

    # a third start of the GUI lists both as finished
    client2, _ = make_client(gui_root)
    jobs = {j["id"]: j for j in client2.get("/api/jobs").json()["jobs"]}
    assert jobs[first["id"]]["run"]["step"] == 3 and jobs[first["id"]]["status"] == "done"
    assert jobs[second["id"]]["status"] == "cancelled"
