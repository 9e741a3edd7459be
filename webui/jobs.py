"""The job queue: SQLite rows + training/tool processes that outlive the GUI.

Why SQLite and separate processes: an overnight queue must survive closing or restarting the GUI.
Each job is a process started from an argument list (never a shell string) in its own session, so
the GUI's Ctrl-C does not reach it; its pid and run folder are stored, and a restarted GUI re-attaches
to a job whose process is still alive (the run folder's status.json names the same pid) and reads
how a finished one ended from the same file. One job runs at a time; queued ones follow in order.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from library.train.run_folder import CONTROL_FILES, read_status

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = {"train_network": REPO / "train_network.py", "sdxl_train_network": REPO / "sdxl_train_network.py"}
TOOLS = {name: REPO / "tools" / f"{name}.py" for name in
         ("merge_lora", "resize_lora", "extract_lora", "convert_lora", "caption", "merge_models", "gen_img",
          "make_tiny_model")}
# the GUI's own job scripts (not on the Tools page): the Compare page's image grid
INTERNAL = {"compare_grid": REPO / "webui" / "compare_grid.py"}
ACTIVE, FINAL = ("queued", "running"), ("done", "failed", "interrupted", "cancelled")
# job kinds that run a training script (a memory check is a 2-step training: webui/memory_check.py)
TRAINING_KINDS = ("train", "memory_check")
EXIT_PHASES = {0: "done", 130: "interrupted"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,            -- 'train' or a tool name
    name TEXT NOT NULL,
    script TEXT NOT NULL,          -- train_network / sdxl_train_network / tool name
    options TEXT NOT NULL,         -- JSON: option values (train) or the tool's argument list
    run_dir TEXT,                  -- the run folder (train: --output_dir), absolute
    processes INTEGER NOT NULL DEFAULT 1,
    gpu_ids TEXT,
    status TEXT NOT NULL,
    position REAL NOT NULL,
    pid INTEGER,
    exit_code INTEGER,
    error TEXT,
    log TEXT,
    parent INTEGER,               -- the job this one resumes or extends
    created REAL NOT NULL,
    started REAL,
    ended REAL
)
"""


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as ended
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


def options_argv(values: dict) -> list[str]:
    """Option values -> command-line words: flags for true booleans, lists as several words, sizes as W,H."""
    from library.options import BY_NAME

    argv = []
    for name, value in values.items():
        if value is None or value is False or value == "" or value == []:
            continue
        argv.append(f"--{name}")
        if value is True:
            continue
        option = BY_NAME.get(name)
        if isinstance(value, (list, tuple)) and option is not None and option.type == "size" and not option.nargs:
            argv.append(",".join(str(v) for v in value))
        elif isinstance(value, (list, tuple)):
            argv += [str(v) for v in value]
        else:
            argv.append(str(value))
    return argv


def script_of(job: dict) -> Path:
    """The script a job runs: the training script, a tool, or one of the GUI's own job scripts."""
    if job["kind"] in TRAINING_KINDS:
        return SCRIPTS[job["script"]]
    return INTERNAL.get(job["script"]) or TOOLS[job["script"]]


class JobStore:
    """The SQLite table of jobs; every method opens its own connection (threads share nothing)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute(_SCHEMA)

    def _db(self):
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        return _Closing(db)

    def add(self, kind: str, name: str, script: str, options, run_dir: str | None, processes: int = 1,
            gpu_ids: str | None = None, parent: int | None = None) -> int:
        with self._db() as db:
            top = db.execute("SELECT COALESCE(MAX(position), 0) FROM jobs").fetchone()[0]
            cur = db.execute(
                "INSERT INTO jobs (kind, name, script, options, run_dir, processes, gpu_ids, status, position, parent, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                (kind, name, script, json.dumps(options), run_dir, processes, gpu_ids, top + 1, parent, time.time()))
            return int(cur.lastrowid)

    def get(self, job_id: int) -> dict | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _as_dict(row) if row else None

    def all(self) -> list[dict]:
        with self._db() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY CASE status WHEN 'running' THEN 0 WHEN 'queued' THEN 1 ELSE 2 END,"
                              " CASE status WHEN 'queued' THEN position ELSE -id END").fetchall()
        return [_as_dict(r) for r in rows]

    def update(self, job_id: int, **fields) -> None:
        if not fields:
            return
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self._db() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", (*fields.values(), job_id))

    def with_status(self, *statuses: str) -> list[dict]:
        marks = ",".join("?" * len(statuses))
        with self._db() as db:
            rows = db.execute(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY position", statuses).fetchall()
        return [_as_dict(r) for r in rows]

    def reorder(self, ids: list[int]) -> None:
        """Queued jobs take the order of ``ids`` (ids not given keep their place after them)."""
        queued = [j["id"] for j in self.with_status("queued")]
        order = [i for i in ids if i in queued] + [i for i in queued if i not in ids]
        with self._db() as db:
            for n, job_id in enumerate(order, 1):
                db.execute("UPDATE jobs SET position = ? WHERE id = ?", (float(n), job_id))


class _Closing:
    def __init__(self, db):
        self.db = db

    def __enter__(self):
        return self.db

    def __exit__(self, *exc):
        self.db.close()


def _as_dict(row) -> dict:
    d = dict(row)
    d["options"] = json.loads(d["options"])
    return d


class Runner:
    """Starts queued jobs one at a time, watches the running one, and re-attaches after a restart.

    ``tick()`` does one round of work (tests call it directly); ``start_thread()`` calls it every
    ``interval`` seconds in the background. ``on_finish`` callables get each job's row once it has ended
    (the memory check's settling, the ``--notify_command``); one that fails is logged, never stops the runner.
    """

    def __init__(self, store: JobStore, root: Path, log_dir: Path, python: str = sys.executable, interval: float = 0.5):
        self.store, self.root, self.log_dir, self.python, self.interval = store, Path(root), Path(log_dir), python, interval
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.children: dict[int, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self.on_finish: list = []

    # --- commands ----------------------------------------------------------------------------
    def command(self, job: dict) -> list[str]:
        """The argument list a job runs (never a shell string)."""
        if job["kind"] in TRAINING_KINDS:
            script = str(SCRIPTS[job["script"]])
            args = options_argv(job["options"])
            if job["processes"] > 1 or job["gpu_ids"]:
                launch = [self.python, "-m", "accelerate.commands.launch", "--num_processes", str(job["processes"])]
                if job["processes"] > 1:
                    launch.append("--multi_gpu")
                if job["gpu_ids"]:
                    launch += ["--gpu_ids", job["gpu_ids"]]
                return launch + [script, *args]
            return [self.python, script, *args]
        return [self.python, str(script_of(job)), *[str(a) for a in job["options"]]]

    # --- the loop ------------------------------------------------------------------------------
    def tick(self) -> None:
        with self.lock:
            running = self.store.with_status("running")
            for job in running:
                self._watch(job)
            if not self.store.with_status("running"):
                queued = self.store.with_status("queued")
                if queued:
                    self._start(queued[0])

    def _start(self, job: dict) -> None:
        if job["run_dir"]:
            os.makedirs(job["run_dir"], exist_ok=True)
            for name in CONTROL_FILES:  # a leftover request must not act on the new process
                try:
                    os.unlink(os.path.join(job["run_dir"], name))
                except FileNotFoundError:
                    pass
        log = self.log_dir / f"job-{job['id']}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
        with open(log, "ab") as out:
            proc = subprocess.Popen(self.command(job), cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.children[job["id"]] = proc
        self.store.update(job["id"], status="running", pid=proc.pid, started=time.time(), log=str(log),
                          exit_code=None, error=None)

    def _watch(self, job: dict) -> None:
        proc = self.children.get(job["id"])
        if proc is not None:
            code = proc.poll()
            if code is None:
                return
            self.children.pop(job["id"], None)
        elif _pid_alive(job["pid"]) and self._same_process(job):
            return  # re-attached after a GUI restart: still running
        else:
            code = None
        self._finish(job, code)

    def _same_process(self, job: dict) -> bool:
        """After a restart, a live pid is ours only if it still runs the job's script (pids get reused)."""
        script = str(script_of(job))
        try:
            with open(f"/proc/{job['pid']}/cmdline", "rb") as f:
                return script in f.read().decode(errors="replace").split("\0")
        except OSError:  # no /proc: the run folder names the pid the trainer runs in
            return not job["run_dir"] or read_status(job["run_dir"]).get("pid") == job["pid"]

    def _finish(self, job: dict, code: int | None) -> None:
        status = read_status(job["run_dir"]) if job["run_dir"] else {}
        if code is None:  # not our child (re-attached): the run folder says how it ended
            phase = status.get("phase")
            code = {"done": 0, "interrupted": 130}.get(phase, 1)
        outcome = EXIT_PHASES.get(code, "failed")
        error = status.get("error") if outcome == "failed" else None
        if outcome == "failed" and not error:
            error = self._last_error_line(job) or f"exited with code {code}"
        self.store.update(job["id"], status=outcome, exit_code=code, error=error, ended=time.time())
        self._ended(self.store.get(job["id"]))

    def _ended(self, job: dict) -> None:
        for hook in self.on_finish:
            try:
                hook(job)
            except Exception as e:  # a hook must not leave the job looking unfinished or stop the queue
                print(f"gui runner: after job {job['id']}: {type(e).__name__}: {e}", file=sys.stderr)

    def _last_error_line(self, job: dict) -> str | None:
        try:
            with open(self.log_dir / f"job-{job['id']}.log", encoding="utf-8", errors="replace") as f:
                lines = f.read()[-20000:].splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            if line.startswith("error: "):
                return line[len("error: "):]
        return lines[-1] if lines else None

    # --- actions ---------------------------------------------------------------------------------
    def control(self, job_id: int, name: str) -> None:
        """Ask a running training to stop / save now / sample now (a file it reads between steps)."""
        job = self.store.get(job_id)
        if not job or job["status"] != "running" or not job["run_dir"]:
            raise ValueError(f"job {job_id} is not a running training")
        Path(job["run_dir"], name).touch()

    def cancel(self, job_id: int) -> str:
        job = self.store.get(job_id)
        if job is None:
            raise ValueError(f"no job {job_id}")
        if job["status"] == "queued":
            self.store.update(job_id, status="cancelled", ended=time.time())
            self._ended(self.store.get(job_id))
            return "cancelled"
        if job["status"] == "running":
            if job["kind"] == "train":
                self.control(job_id, "stop")
                return "stopping"
            os.killpg(job["pid"], signal.SIGTERM)
            return "terminating"
        return job["status"]

    # --- background thread ---------------------------------------------------------------------
    def start_thread(self) -> None:
        def loop():
            while not self._stop.wait(self.interval):
                try:
                    self.tick()
                except Exception as e:  # keep serving the page; the job table shows what happened
                    print(f"gui runner: {e}", file=sys.stderr)

        self._thread = threading.Thread(target=loop, name="lorasmith-jobs", daemon=True)
        self._thread.start()

    def stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
