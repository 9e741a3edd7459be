"""The Compare page's API with TestClient on the tiny model: a finished run's checkpoints, a grid of
checkpoint x strength x prompt made by a job, the chosen checkpoint (recorded, copied, never overwritten),
the run history and the settings diff between two runs."""

import json

import pytest

from tests.gui.conftest import make_client, run_values, wait_final

PROMPT = "sks shape, red circle --w 64 --h 64 --s 2"


@pytest.fixture(autouse=True)
def one_thread_children(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _train(client, app, **extra):
    job = client.post("/api/jobs", json={"values": run_values(**extra)})
    assert job.status_code == 200, job.text
    done = wait_final(app.state.runner, app.state.store, job.json()["id"])
    assert done["status"] == "done", client.get(f"/api/jobs/{done['id']}/log").json()["log"][-3000:]
    return done


def test_grid_best_history_and_diff(gui_root):
    client, app = make_client(gui_root)
    run = _train(client, app, max_train_steps=4, save_every_n_steps=3)
    # per-image loss: the trainer logs each image's loss; their mean per step is the step's logged loss
    folder = gui_root / "output" / "t"
    lines = [json.loads(line) for line in (folder / "item_losses.jsonl").read_text().splitlines()]
    metrics = {m["step"]: m["loss"] for m in client.get(f"/api/jobs/{run['id']}/metrics").json()["rows"]}
    assert [line["step"] for line in lines] == [1, 2, 3, 4] and all(len(line["items"]) == 2 for line in lines)
    for line in lines:
        assert sum(loss for _, loss in line["items"]) / 2 == pytest.approx(metrics[line["step"]], rel=1e-4)
        assert all(key.startswith(str(gui_root / "data" / "img")) for key, _ in line["items"])
    losses = client.get(f"/api/jobs/{run['id']}/image-losses", params={"top": 3}).json()
    assert losses["count"] == len({k for line in lines for k, _ in line["items"]}) and len(losses["images"]) == 3
    zs = [i["z"] for i in losses["images"]]
    assert zs == sorted(zs, reverse=True) and all(i["path"].startswith("data/img/") for i in losses["images"])
    top = losses["images"][0]
    seen = [loss for line in lines for key, loss in line["items"] if key == top["key"]]
    assert top["n"] == len(seen) and top["mean"] == pytest.approx(sum(seen) / len(seen), rel=1e-4)

    info = client.get(f"/api/jobs/{run['id']}/compare").json()
    assert [c["file"] for c in info["checkpoints"]] == ["t-step00000003.safetensors", "t.safetensors"]
    assert [c["label"] for c in info["checkpoints"]] == ["step 3", "final"]
    assert info["grids"] == [] and info["best"] is None

    # bad requests are refused before a job is queued, naming the field
    bad = client.post(f"/api/jobs/{run['id']}/grid", json={"checkpoints": ["nope.safetensors"], "prompts": [PROMPT]})
    assert bad.status_code == 400 and "checkpoints: nope.safetensors is not a LoRA file" in bad.json()["error"]
    bad = client.post(f"/api/jobs/{run['id']}/grid", json={"checkpoints": ["t.safetensors"], "strengths": [9],
                                                          "prompts": [PROMPT]})
    assert bad.status_code == 400 and bad.json()["error"].startswith("strengths: 9 is outside")
    bad = client.post(f"/api/jobs/{run['id']}/grid", json={"checkpoints": ["t.safetensors"], "prompts": ["x --w abc"]})
    assert bad.status_code == 400 and "prompt 1" in bad.json()["error"]
    assert client.get(f"/api/jobs/{run['id']}/compare").json()["grids"] == []

    r = client.post(f"/api/jobs/{run['id']}/grid", json={
        "checkpoints": ["t-step00000003.safetensors", "t.safetensors"], "strengths": [0, 1.0],
        "prompts": [PROMPT], "steps": 2, "seed": 5})
    assert r.status_code == 200, r.text
    grid_job = r.json()["job"]
    assert grid_job["kind"] == "compare_grid" and grid_job["parent"] == run["id"]
    ended = wait_final(app.state.runner, app.state.store, grid_job["id"])
    assert ended["status"] == "done", client.get(f"/api/jobs/{grid_job['id']}/log").json()["log"][-3000:]

    (grid,) = client.get(f"/api/jobs/{run['id']}/compare").json()["grids"]
    assert {i["prompt"] for i in grid["images"]} == {PROMPT}  # the prompt line as asked for (the page's row key)
    cells = {(i["checkpoint"], i["strength"]): i["file"] for i in grid["images"]}
    assert len(grid["images"]) == 4 and set(cells) == {(c, s) for c in ("t-step00000003.safetensors", "t.safetensors")
                                                       for s in (0, 1.0)}
    # strength 0 is the base model: made once, the same image for every checkpoint
    assert cells[("t-step00000003.safetensors", 0)] == cells[("t.safetensors", 0)]
    images = {f: client.get("/api/file", params={"path": f"output/t/{f}"}) for f in cells.values()}
    assert all(r.status_code == 200 and r.content[:4] == b"\x89PNG" for r in images.values())
    # at strength 1 the two checkpoints differ from each other and from the base model
    at1 = [images[cells[(c, 1.0)]].content for c in ("t-step00000003.safetensors", "t.safetensors")]
    assert len({*at1, images[cells[("t.safetensors", 0)]].content}) == 3

    # pick the best: recorded; a copy goes to best/ under a free name, never over a file
    best = client.post(f"/api/jobs/{run['id']}/best", json={"file": "t-step00000003.safetensors", "keep_copy": True}).json()
    assert best["file"] == "t-step00000003.safetensors" and best["copy"] == "best/t-step00000003.safetensors"
    again = client.post(f"/api/jobs/{run['id']}/best", json={"file": "t-step00000003.safetensors", "keep_copy": True}).json()
    assert again["copy"] == "best/t-step00000003-2.safetensors"
    assert (folder / "best" / "t-step00000003.safetensors").read_bytes() == (folder / "t-step00000003.safetensors").read_bytes()
    assert json.loads((folder / "best.json").read_text())["file"] == "t-step00000003.safetensors"
    assert client.post(f"/api/jobs/{run['id']}/best", json={"file": "../x.safetensors"}).status_code == 400

    # a second run with another learning rate: the history lists both, the diff names what changed
    other = _train(client, app, max_train_steps=2, learning_rate=5e-4, output_name="u")
    history = client.get("/api/history").json()["runs"]
    assert [h["id"] for h in history] == [other["id"], run["id"]]
    assert history[1]["best"]["file"] == "t-step00000003.safetensors" and history[1]["step"] == 4
    diff = {d["name"]: (d["a"], d["b"]) for d in client.get("/api/diff", params={"a": run["id"], "b": other["id"]}).json()["diff"]}
    assert diff["learning_rate"] == (pytest.approx(1e-3), pytest.approx(5e-4))
    assert diff["max_train_steps"] == (4, 2) and diff["output_name"] == ("t", "u")
    assert diff["save_every_n_steps"] == (3, None)
    assert "network_dim" not in diff and "seed" not in diff
