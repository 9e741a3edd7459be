"""The GUI reads and writes nothing outside its root, needs the token when it has one, and refuses cross-site changes."""

import os

from fastapi.testclient import TestClient

from tests.gui.conftest import HEADERS, make_client, run_values
from webui.app import create_app


def test_paths_outside_the_root_are_refused(gui_root, tmp_path):
    client, _ = make_client(gui_root)
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    os.symlink(tmp_path, gui_root / "link_out")
    for path in ("../secret.txt", str(outside), "link_out/secret.txt", "data/../../secret.txt", "/etc/passwd"):
        r = client.get("/api/file", params={"path": path})
        assert r.status_code == 403 and "root folder" in r.json()["error"], (path, r.text)
    assert "symlink" in client.get("/api/file", params={"path": "link_out/secret.txt"}).json()["error"]
    assert client.get("/api/fs/complete", params={"prefix": "../"}).status_code == 403
    assert all(e["path"] != "link_out/" for e in client.get("/api/fs/complete", params={"prefix": "l"}).json()["entries"])
    assert client.get("/api/dataset/captions", params={"folder": str(tmp_path)}).status_code == 403
    r = client.put("/api/dataset/caption", json={"image": "../secret.txt", "text": "x"})
    assert r.status_code == 403 and outside.read_text() == "secret"
    assert client.post("/api/config/save", json={"path": "../evil.toml", "values": run_values()}).status_code == 403
    assert not (tmp_path / "evil.toml").exists()
    r = client.post("/api/jobs", json={"values": run_values(output_dir=str(tmp_path / "out"))})
    assert r.status_code == 400 and r.json()["field"] == "output_dir" and "root folder" in r.json()["error"]
    r = client.post("/api/tools/resize_lora", json={"args": ["--model", "../x.safetensors"]})
    assert r.status_code == 403
    assert client.get("/help/../README.md").status_code == 404


def test_token_is_required_for_every_request(gui_root):
    app = create_app(gui_root, token="s3cret", state_dir=gui_root / ".gui", start_runner=False)
    client = TestClient(app)
    assert client.get("/api/jobs").status_code == 401
    assert client.get("/runs").status_code == 401
    assert client.get("/static/app.js").status_code == 401
    assert client.get("/api/jobs", headers={"X-Token": "wrong"}).status_code == 401
    assert client.get("/api/jobs", headers={"X-Token": "s3cret"}).status_code == 200
    assert client.get("/api/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/runs", params={"token": "s3cret"}).status_code == 200  # opening the page once
    # a change needs the header: a query token (a link on another site) is not enough
    r = client.post("/api/queue/order", params={"token": "s3cret"}, json={"ids": []})
    assert r.status_code == 401
    assert client.post("/api/queue/order", headers={"X-Token": "s3cret"}, json={"ids": []}).status_code == 200


def test_local_gui_refuses_cross_site_changes_and_foreign_hosts(gui_root):
    app = create_app(gui_root, state_dir=gui_root / ".gui", start_runner=False)
    local = TestClient(app, base_url="http://127.0.0.1:7860")
    assert local.get("/api/jobs").status_code == 200
    assert local.post("/api/queue/order", json={"ids": []}).status_code == 403  # no custom header: a form post from a site
    assert local.post("/api/queue/order", json={"ids": []}, headers=HEADERS).status_code == 200
    rebound = TestClient(app, base_url="http://evil.example:7860")
    assert rebound.get("/api/jobs").status_code == 403


def test_gui_py_listen_requires_and_prints_a_token(tmp_path):
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from pathlib import Path

    REPO = Path(__file__).resolve().parents[2]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(REPO / "gui.py"), "--root", str(tmp_path), "--port", str(port),
                             "--listen", "127.0.0.1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        token = next(line.split()[1] for line in lines if line.startswith("token: "))
        assert f"?token={token}" in lines[0]
        url = f"http://127.0.0.1:{port}/api/health"
        for _ in range(100):
            try:
                r = httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert r.status_code == 401
        assert httpx.get(url, headers={"X-Token": token}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
