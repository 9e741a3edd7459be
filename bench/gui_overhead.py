"""GUI overhead: what a GUI with an open run page costs a training step.

Training is a separate process; the GUI process only reads the run folder. Two figures:
1. the CPU time the GUI process (server + job runner + one page's SSE stream and polling, as the run
   page does it) uses per training step, as a fraction of the step's wall time — the robust number;
2. the mean step time of the same tiny run without and with the GUI watching, interleaved — noisy on a
   busy machine, shown for completeness.

    .venv/bin/python bench/gui_overhead.py [--steps 60] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_values(steps: int, name: str) -> dict:
    return {"pretrained_model_name_or_path": "tiny.safetensors", "train_data_dir": "data/img", "resolution": "64",
            "caption_extension": ".txt", "network_dim": 4, "network_alpha": 4, "learning_rate": 1e-3,
            "max_train_steps": steps, "train_batch_size": 2, "seed": 3, "output_name": name, "output_dir": f"output/{name}",
            "max_data_loader_n_workers": 0, "min_bucket_reso": 32, "max_bucket_reso": 128,
            "bucket_reso_steps": 16, "enable_bucket": True}


def step_times(folder: Path) -> list[float]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    times = [r["time"] for r in rows]
    return [b - a for a, b in zip(times[5:], times[6:])]  # skip the warm-up steps


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plain_run(root: Path, steps: int, name: str) -> list[float]:
    from webui.jobs import options_argv

    subprocess.run([sys.executable, str(REPO / "train_network.py"), *options_argv(run_values(steps, name))],
                   cwd=root, env=ENV, check=True, capture_output=True)
    return step_times(root / "output" / name)


def watched_run(root: Path, steps: int, name: str) -> tuple[list[float], float, float]:
    """(step times, GUI CPU seconds, run wall seconds) with gui.py serving and a page-like client watching."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gui = subprocess.Popen([sys.executable, str(REPO / "gui.py"), "--root", str(root), "--port", str(port)],
                           cwd=root, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    h = {"x-lorasmith": "1"}
    try:
        for _ in range(300):
            try:
                httpx.get(base + "/api/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        job = httpx.post(base + "/api/jobs", json={"values": run_values(steps, name)}, headers=h, timeout=60).json()
        jid = job["id"]
        done = threading.Event()

        def sse():  # the run page's event stream
            with httpx.stream("GET", f"{base}/api/jobs/{jid}/events", timeout=None) as r:
                for _ in r.iter_lines():
                    if done.is_set():
                        return

        threading.Thread(target=sse, daemon=True).start()
        cpu0, t0 = cpu_seconds(gui.pid), time.perf_counter()
        while True:  # the run page's polling: samples, files, log every 3 s; the runs list every 2 s
            for path in ("samples", "files", "log?lines=60"):
                httpx.get(f"{base}/api/jobs/{jid}/{path}", timeout=30)
            status = httpx.get(f"{base}/api/jobs/{jid}", timeout=30).json()["status"]
            if status not in ("queued", "running"):
                break
            time.sleep(2.5)
        cpu1, t1 = cpu_seconds(gui.pid), time.perf_counter()
        done.set()
        if status != "done":
            raise SystemExit(f"the watched run ended {status}; see {root}/.lorasmith-gui/logs")
        return step_times(root / "output" / name), cpu1 - cpu0, t1 - t0
    finally:
        gui.terminate()
        gui.wait(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from tools.make_tiny_model import make_tiny_model

    root = Path(tempfile.mkdtemp(prefix="gui_bench_"))
    try:
        make_tiny_model("sd1", root / "tiny.safetensors")
        shutil.copytree(REPO / "examples" / "demo", root / "data")
        plain, watched, fractions = [], [], []
        for r in range(args.rounds):  # interleaved: machine load drifts alike for both
            plain += plain_run(root, args.steps, f"plain{r}")
            times, gui_cpu, wall = watched_run(root, args.steps, f"watched{r}")
            watched += times
            fractions.append(gui_cpu / wall)
            print(f"round {r + 1}: GUI process CPU {gui_cpu:.2f} s over {wall:.1f} s of run "
                  f"({100 * gui_cpu / wall:.2f} % of one core)", flush=True)
        p, w = statistics.median(plain), statistics.median(watched)
        frac = statistics.median(fractions)
        print(f"step time, median: without GUI {p * 1000:.1f} ms, with GUI watching {w * 1000:.1f} ms "
              f"(ratio {w / p:.3f}; noisy on a shared machine)")
        print(f"GUI CPU per step: {frac * w * 1000:.2f} ms = {100 * frac:.2f} % of a step's wall time "
              f"(the GUI's whole cost if it competed with training for a core)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
