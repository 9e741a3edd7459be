"""The GUI's JSON API with FastAPI's TestClient on the tiny model: create, queue, stop, resume, extend, metrics, files."""

import pytest

from tests.gui.conftest import make_client, run_values, wait_final


@pytest.fixture(autouse=True)
def one_thread_children(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_create_stop_resume_extend_metrics_files(gui_root):
    client, app = make_client(gui_root)
    runner, store = app.state.runner, app.state.store
    r = client.post("/api/jobs", json={"values": run_values(), "name": "first", "gpu_ids": None})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["status"] == "queued" and job["run_dir_rel"] == "output/t"
    assert job["options"]["save_state_on_train_end"] is True

    runner.tick()  # starts it
    assert store.get(job["id"])["status"] == "running"
    assert client.post(f"/api/jobs/{job['id']}/stop").json() == {"result": "requested"}
    done = wait_final(runner, store, job["id"])
    assert done["status"] == "interrupted" and done["exit_code"] == 130, client.get(f"/api/jobs/{job['id']}/log").json()
    view = client.get(f"/api/jobs/{job['id']}").json()
    assert view["run"]["phase"] == "interrupted" and view["run"]["step"] == 1

    resumed = client.post(f"/api/jobs/{job['id']}/resume", json={}).json()
    assert resumed["options"]["resume"].endswith("output/t") and resumed["parent"] == job["id"]
    assert wait_final(runner, store, resumed["id"])["status"] == "done"
    assert client.get(f"/api/jobs/{resumed['id']}").json()["run"]["step"] == 4

    extended = client.post(f"/api/jobs/{resumed['id']}/resume", json={"extra_steps": 2}).json()
    assert extended["options"]["max_train_steps"] == 6
    assert wait_final(runner, store, extended["id"])["status"] == "done"
    status = client.get(f"/api/jobs/{extended['id']}").json()["run"]
    assert status["phase"] == "done" and status["step"] == 6 and status["total"] == 6

    metrics = client.get(f"/api/jobs/{extended['id']}/metrics").json()
    assert metrics["count"] == 6 and [m["step"] for m in metrics["rows"]] == [1, 2, 3, 4, 5, 6]
    assert all(m["loss"] > 0 and m["lr/unet"] == pytest.approx(1e-3) for m in metrics["rows"])
    small = client.get(f"/api/jobs/{extended['id']}/metrics", params={"max_points": 2}).json()["rows"]
    assert [m["step"] for m in small] == [3, 6]
    assert small[0]["loss"] == pytest.approx(sum(m["loss"] for m in metrics["rows"][:3]) / 3)

    names = {f["name"] for f in client.get(f"/api/jobs/{extended['id']}/files").json()["files"]}
    assert {"status.json", "metrics.jsonl", "t.safetensors"} <= names
    assert "LoRA written to" in client.get(f"/api/jobs/{extended['id']}/log").json()["log"]
    lora = client.get("/api/file", params={"path": "output/t/t.safetensors"})
    assert lora.status_code == 200 and len(lora.content) > 1000

    # the SSE stream of a finished job: its status, every metric row, then the end
    events = client.get(f"/api/jobs/{extended['id']}/events").text
    assert "event: job" in events and "event: metrics" in events and events.rstrip().endswith("data: {}")

    # a tool as a job, its form read from the tool's own parser
    form = client.get("/api/tools/resize_lora/schema").json()["fields"]
    assert {"flag": "--new_rank", "kind": "value", "required": False} == {k: f[k] for f in form if f["name"] == "new_rank"
                                                                           for k in ("flag", "kind", "required")}
    tool = client.post("/api/tools/resize_lora", json={"args": ["--model", "output/t/t.safetensors", "--save_to",
                                                                  "output/t/t-r2.safetensors", "--new_rank", "2"]}).json()
    assert wait_final(runner, store, tool["id"])["status"] == "done"
    assert (gui_root / "output" / "t" / "t-r2.safetensors").is_file()

    # a new run from the LoRA's own metadata gets the settings back
    settings = client.post("/api/lora-settings", json={"path": "output/t/t.safetensors"}).json()
    assert settings["values"]["network_dim"] == 4 and settings["values"]["max_train_steps"] == 6
    assert settings["values"]["learning_rate"] == pytest.approx(1e-3) and settings["values"]["seed"] == 3
    assert settings["values"]["resolution"] == "64" and settings["model_hint"] == "tiny.safetensors"


def test_a_failing_run_shows_the_one_line_error_with_help(gui_root):
    client, app = make_client(gui_root)
    (gui_root / "empty" / "img" / "5_x").mkdir(parents=True)
    job = client.post("/api/jobs", json={"values": run_values(train_data_dir="empty/img")}).json()
    done = wait_final(app.state.runner, app.state.store, job["id"])
    view = client.get(f"/api/jobs/{job['id']}").json()
    assert done["status"] == "failed" and done["exit_code"] == 2
    assert view["error"] and "\n" not in view["error"] and "Traceback" not in view["error"]
    # the deep link goes to the catalogue row of that message ("empty folder"), in the docs served as HTML
    page, anchor = view["help"].split("#")
    assert page == "/help/troubleshooting.md" and anchor.startswith("row-")
    html = client.get(page).text
    row = html.split(f'id="{anchor}"', 1)[1].split("</tr>", 1)[0]
    assert "holds no images" in row and "10_&lt;token&gt;" in row


def test_invalid_values_are_refused_at_the_field_before_a_run(gui_root):
    client, _ = make_client(gui_root)
    r = client.post("/api/jobs", json={"values": run_values(network_dim=-3)})
    assert r.status_code == 400 and r.json()["field"] == "network_dim" and "network_dim" in r.json()["error"]
    report = client.post("/api/validate", json={"values": run_values(lr_scheduler="cosin")}).json()
    assert report["ok"] is False and report["field"] == "lr_scheduler" and "cosine" in report["error"]
    good = client.post("/api/validate", json={"values": run_values()}).json()
    assert good["ok"] and "--network_dim 4" in good["cli"] and "network_dim = 4" in good["toml"]
    assert 'train_data_dir = "data/img"' in good["toml"]  # as typed: relative to the root, not resolved


def test_schema_presets_config_preflight_and_captions(gui_root):
    client, _ = make_client(gui_root)
    fields = {f["name"]: f for f in client.get("/api/schema").json()["fields"]}
    assert fields["network_dim"]["group"] == "network" and fields["network_dim"]["type"] == "int"
    assert "bf16" in fields["mixed_precision"]["choices"] and fields["learning_rate"]["help"]
    assert "demo" in client.get("/api/presets").json()["presets"]
    assert client.get("/api/presets/demo").json()["values"]["network_dim"] == 4

    saved = client.post("/api/config/save", json={"path": "my.toml", "values": run_values()})
    assert saved.status_code == 200 and (gui_root / "my.toml").is_file()
    assert client.post("/api/config/save", json={"path": "my.toml", "values": run_values()}).status_code == 400
    loaded = client.post("/api/config/load", json={"path": "my.toml"}).json()["values"]
    assert loaded["network_dim"] == 4 and loaded["max_train_steps"] == 4

    report = client.post("/api/dataset/preflight", json={"values": run_values(reg_data_dir="data/reg")}).json()
    assert report["num_train_images"] > 0 and report["plan"]["total_steps"] == 4 and not report["fatal"]
    assert "steps" in report["text"]

    items = client.get("/api/dataset/captions", params={"folder": "data/img"}).json()["items"]
    first = items[0]
    assert first["tokens"] == len(first["caption"].replace(",", " ,").split()) and len(first["sha1"]) == 40
    r = client.put("/api/dataset/caption", json={"image": first["image"], "text": "sks shape, edited"})
    assert r.status_code == 200
    caption = gui_root / r.json()["caption"]
    assert caption.read_text() == "sks shape, edited"
    assert not [p for p in caption.parent.iterdir() if p.name.startswith(".tmp")]

    entries = client.get("/api/fs/complete", params={"prefix": "data/i"}).json()["entries"]
    assert entries == [{"path": "data/img/", "dir": True}]


def test_queue_order_and_cancel(gui_root):
    client, app = make_client(gui_root)
    ids = [client.post("/api/jobs", json={"values": run_values(output_name=f"q{i}")}).json()["id"] for i in range(3)]
    assert client.post("/api/queue/order", json={"ids": [ids[2], ids[0]]}).json()["queue"] == [ids[2], ids[0], ids[1]]
    assert client.post(f"/api/jobs/{ids[0]}/cancel").json()["result"] == "cancelled"
    assert [j["id"] for j in client.get("/api/jobs").json()["jobs"] if j["status"] == "queued"] == [ids[2], ids[1]]
    r = client.post("/api/jobs", json={"values": run_values(output_name="q1", output_dir="output/q1")})
    assert r.status_code == 400 and "used by job" in r.json()["error"]


def test_processes_and_gpu_ids_become_an_accelerate_launch_of_the_same_script(gui_root):
    client, app = make_client(gui_root)
    job = client.post("/api/jobs", json={"values": run_values(), "processes": 2, "gpu_ids": "0,1"}).json()
    argv = app.state.runner.command(app.state.store.get(job["id"]))
    assert argv[1:4] == ["-m", "accelerate.commands.launch", "--num_processes"] and argv[4] == "2"
    assert "--multi_gpu" in argv and argv[argv.index("--gpu_ids") + 1] == "0,1"
    script = argv.index(next(a for a in argv if a.endswith("train_network.py")))
    assert argv[script + 1:script + 3] == ["--pretrained_model_name_or_path", str(gui_root / "tiny.safetensors")]
    single = client.post("/api/jobs", json={"values": run_values(output_name="one")}).json()
    assert app.state.runner.command(app.state.store.get(single["id"]))[1].endswith("train_network.py")


def test_kohya_folder_from_a_flat_folder(gui_root):
    client, _ = make_client(gui_root)
    flat = gui_root / "flat"
    flat.mkdir()
    for image in sorted((gui_root / "data" / "img").rglob("*.png"))[:3]:
        (flat / image.name).write_bytes(image.read_bytes())
        (flat / image.name).with_suffix(".txt").write_text("a caption")
    r = client.post("/api/dataset/kohya-folder", json={"source": "flat", "dest": "img2", "repeats": 5, "trigger": "zwx",
                                                       "class_name": "dog"})
    assert r.status_code == 200, r.text
    assert r.json() == {"folder": "img2/5_zwx dog", "train_data_dir": "img2"}
    made = gui_root / "img2" / "5_zwx dog"
    assert len(list(made.glob("*.png"))) == 3 and len(list(made.glob("*.txt"))) == 3
    report = client.post("/api/dataset/preflight", json={"values": {"train_data_dir": "img2", "resolution": "64",
                                                                    "min_bucket_reso": 32, "bucket_reso_steps": 16}}).json()
    assert report["num_train_images"] == 15 and not report["fatal"]  # kohya counts images x repeats
    again = client.post("/api/dataset/kohya-folder", json={"source": "flat", "dest": "img2", "repeats": 5, "trigger": "zwx",
                                                           "class_name": "dog"})
    assert again.status_code == 400 and "exists" in again.json()["error"]


def test_caption_job_from_the_dataset_page(gui_root):
    """The Dataset page's Caption button queues tools/caption.py on the folder (an argument list, paths in the root)."""
    client, app = make_client(gui_root)
    (gui_root / "models" / "blip").mkdir(parents=True)
    r = client.post("/api/dataset/caption-job", json={"folder": "data/img", "caption_weights": "models/blip",
                                                      "prefix": "sks, ", "overwrite": True})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["kind"] == "caption" and job["status"] == "queued"
    assert job["options"] == [str(gui_root / "data" / "img"), "--caption_weights", str(gui_root / "models" / "blip"),
                              "--caption_extension", ".txt", "--prefix=sks, ", "--recursive", "--overwrite"]
    assert app.state.runner.command(app.state.store.get(job["id"]))[1].endswith("tools/caption.py")
    missing = client.post("/api/dataset/caption-job", json={"folder": "data/img", "caption_weights": "models/none"})
    assert missing.status_code in (400, 403, 404) and "models/none" in missing.json()["error"]
    outside = client.post("/api/dataset/caption-job", json={"folder": "../", "caption_weights": "models/blip"})
    assert outside.status_code == 403
    not_folder = client.post("/api/dataset/caption-job", json={"folder": "tiny.safetensors", "caption_weights": "models/blip"})
    assert not_folder.status_code == 400 and "is not a folder" in not_folder.json()["error"]
