"""The GUI in a real browser: headless Chromium (Debian's package) driven by Playwright, against ``python gui.py``.

Set up the demo dataset, configure a run on the tiny model, start it, watch progress, the loss chart
and a sample image, stop it, resume it, see it finish, and fill a new run from the LoRA's metadata.
Screenshots of each page go to artifacts/gui/. Without chromium these tests skip, except under CI=true
where they fail (.ci/run installs chromium).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "gui"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.browser


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return "Debian's chromium is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements-gui.txt)"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run in CI: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def gui(tmp_path):
    """``python gui.py`` serving tmp_path on a free port; yields the base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = open(tmp_path / "gui.log", "w")
    proc = subprocess.Popen([sys.executable, str(REPO / "gui.py"), "--root", str(tmp_path), "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(200):
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        for job_log in (tmp_path / ".lorasmith-gui" / "logs").glob("*.log"):
            print(job_log.name, job_log.read_text()[-3000:])


def _shot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# records the page's notifications (headless Chromium shows none): window.__notes
NOTIFICATION_STUB = """
window.__notes = [];
window.Notification = class { constructor(title, opts) { window.__notes.push(title); } };
window.Notification.permission = "granted";
window.Notification.requestPermission = async () => "granted";
"""


def test_demo_run_in_the_browser(browser, gui, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.add_init_script(NOTIFICATION_STUB)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # Dataset: the demo folder, its preflight report
    page.goto(gui + "/dataset")
    page.click("#demo")
    page.wait_for_function("document.querySelector('#train-dir').value === 'demo/img'")
    page.click("#check")
    page.wait_for_selector("#report h2")
    assert "dataset ready" in page.inner_text("#report h2")
    page.click("#load-captions")
    page.wait_for_selector(".cap img")
    _shot(page, "dataset")

    # Configure: values handed over, fast settings, valid once the tiny model (a job) exists
    page.click("#to-configure")
    page.wait_for_selector("#opt-network_dim")
    # long enough that Stop lands mid-run even on a quiet machine (the tiny model runs ~6 steps/s)
    page.fill("#opt-max_train_steps", "120")
    page.fill("#opt-sample_every_n_steps", "40")
    page.fill("#opt-save_every_n_steps", "")
    page.fill("#opt-output_name", "demo_lora")
    for _ in range(240):  # the tiny model is being made by a queued job
        page.dispatch_event("#opt-seed", "input")
        page.wait_for_timeout(500)
        if "valid" in page.inner_text("#verdict") and "✓" in page.inner_text("#verdict"):
            break
    assert "✓" in page.inner_text("#verdict"), page.inner_text("#verdict")
    assert "--max_train_steps 120" in page.inner_text("#cli") and "max_train_steps = 120" in page.inner_text("#toml")
    page.fill("#opt-network_dim", "-1")
    page.wait_for_selector('.field.bad[data-name="network_dim"]')  # the CLI's own check, shown at the field
    page.fill("#opt-network_dim", "4")
    page.wait_for_selector(".verdict.ok")
    page.click("#plan-btn")
    page.wait_for_selector(".plan-table")
    assert "120" in page.inner_text(".plan-table")
    # the memory estimate, checked by a 2-step dry run of the same options (a job; its folder deleted afterwards)
    page.click("#memory-btn")
    page.wait_for_selector("#memory .plan-table")
    page.click("#memory-check-btn")
    page.wait_for_selector("#memory-check-result[data-state='done']", timeout=240_000)
    check = page.inner_text("#memory-check-result")
    assert "resident set growth" in check and "measured / estimated" in check, check
    assert not list((tmp_path / ".lorasmith-gui" / "memory-checks").glob("run-*"))
    _shot(page, "configure")

    # Runs: start, watch progress, loss chart and a sample image, stop
    page.click("#queue")
    page.wait_for_url("**/runs/*")
    page.wait_for_function("Number(document.querySelector('#step').textContent) >= 2", timeout=240_000)
    page.wait_for_function("Number(document.querySelector('#loss-chart').dataset.points || 0) >= 2")
    page.wait_for_selector("#samples img", timeout=120_000)
    page.click("#stop")
    page.wait_for_function("document.querySelector('#job-status').textContent === 'interrupted'", timeout=240_000)
    stopped_at = int(page.inner_text("#step"))
    page.wait_for_function("window.__notes.some(t => t.endsWith('demo_lora interrupted'))")  # the run-ended notification
    assert 0 < stopped_at < 120
    _shot(page, "run-stopped")

    # resume from the newest state and see it finish
    page.click("#resume")
    page.wait_for_function("document.querySelector('#job-status').textContent === 'done'", timeout=300_000)
    assert page.inner_text("#step") == "120" and page.inner_text("#total") == "120"
    page.wait_for_function("document.querySelectorAll('#samples tbody tr').length >= 3")
    page.wait_for_function("Number(document.querySelector('#loss-chart').dataset.points || 0) >= 12")
    # per-image loss: every demo image (its regularization images too), each linked to the caption editor
    page.wait_for_selector("#image-losses table.image-losses tbody tr a[href*='/dataset?folder=demo']")
    images = len(list((tmp_path / "demo").rglob("*.png")))  # training and regularization images
    assert page.inner_text("#image-losses p.hint").startswith(f"{images} images,")
    _shot(page, "run-done")

    page.goto(gui + "/runs")
    page.wait_for_selector("#jobs tbody tr[data-status='done']")
    _shot(page, "runs")

    # a new run from the LoRA's own metadata
    page.goto(gui + "/configure")
    page.wait_for_selector("#opt-network_dim")
    page.fill("#lora-path", "output/demo_lora/demo_lora.safetensors")
    page.click("#from-lora")
    page.wait_for_function("document.querySelector('#opt-max_train_steps').value === '120'")
    assert page.input_value("#opt-network_dim") == "4" and page.input_value("#opt-resolution") == "64"

    page.goto(gui + "/tools")
    page.select_option("#tool", "resize_lora")
    page.wait_for_selector("#tool-dynamic_method", timeout=120_000)  # the form comes from resize_lora's own parser
    page.wait_for_timeout(1000)
    assert page.query_selector("#tool-models") is None  # not merge_lora's form, loaded first
    _shot(page, "tools")
    assert not errors, errors


def test_compare_page_grid_and_phone_layout(browser, gui, tmp_path, tiny_ckpt, demo_data):
    """A finished tiny run: the Compare page makes a checkpoint x strength x prompt grid and shows its
    images, a checkpoint is chosen; the run page on a phone-sized screen has no sideways scrolling."""
    import httpx

    shutil.copy(tiny_ckpt("sd1"), tmp_path / "tiny.safetensors")  # demo_data is tmp_path/data already
    headers = {"x-lorasmith": "1"}
    values = {"pretrained_model_name_or_path": "tiny.safetensors", "train_data_dir": "data/img", "resolution": "64",
              "caption_extension": ".txt", "network_dim": 4, "network_alpha": 4, "learning_rate": 1e-3,
              "max_train_steps": 4, "save_every_n_steps": 3, "train_batch_size": 2, "seed": 3, "output_name": "c",
              "max_data_loader_n_workers": 0, "optimizer_type": "AdamW"}
    job = httpx.post(gui + "/api/jobs", json={"values": values}, headers=headers, timeout=60).json()
    for _ in range(600):
        status = httpx.get(f"{gui}/api/jobs/{job['id']}", timeout=10).json()["status"]
        if status not in ("queued", "running"):
            break
        time.sleep(0.5)
    assert status == "done", httpx.get(f"{gui}/api/jobs/{job['id']}/log", timeout=10).json()["log"][-2000:]

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: d.accept())  # "also copy it to best/?": yes
    page.goto(f"{gui}/compare?job={job['id']}")
    page.wait_for_selector("#checkpoints input[value='c-step00000003.safetensors']")
    assert page.is_checked("#checkpoints input[value='c.safetensors']")
    page.fill("#strengths", "0 1")
    page.fill("#steps", "2")
    page.fill("#prompts", "sks shape, red circle --w 64 --h 64\nsks shape, green background --w 64 --h 64")
    page.click("#make-grid")
    # 2 checkpoints x 2 strengths x 2 prompts, filled in as the job writes them
    page.wait_for_function("document.querySelectorAll('#grids table.compare td img').length === 8", timeout=240_000)
    page.wait_for_function("[...document.querySelectorAll('#grids table.compare td img')].every(i => i.complete && i.naturalWidth === 64)")
    assert page.inner_text("#grids table.compare caption") == "sks shape, red circle --w 64 --h 64"
    page.click("#grids table.compare button.choose[data-file='c-step00000003.safetensors']")
    page.wait_for_function("document.querySelector('#best').textContent.includes('c-step00000003.safetensors')")
    assert "best/c-step00000003.safetensors" in page.inner_text("#best")
    assert (tmp_path / "output" / "c" / "best" / "c-step00000003.safetensors").is_file()
    assert "★" in page.inner_text("#grids table.compare tr.best th")
    _shot(page, "compare")

    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    phone.on("pageerror", lambda e: errors.append(str(e)))
    phone.goto(f"{gui}/runs/{job['id']}")
    phone.wait_for_function("document.querySelector('#job-status').textContent === 'done'")
    phone.wait_for_function("Number(document.querySelector('#loss-chart').dataset.points || 0) >= 2")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(phone, "run-phone")
    assert not errors, errors
