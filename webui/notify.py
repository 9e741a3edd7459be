"""``gui.py --notify_command``: a command the job runner runs when a job ends, so no browser tab needs to be open.

Why a command: a browser notification needs an open page, but an overnight queue is watched from a phone
or not at all. A command covers every channel without the GUI knowing them: ``notify-send`` on a desktop,
``curl`` to ntfy.sh / a Discord or Slack webhook for a phone, a mail script, a shutdown script. It is an
argument list (never run through a shell, so a run name cannot inject anything); in each argument the
placeholders ``{id} {name} {kind} {status} {exit_code} {error} {step} {total} {run_dir} {url}`` are
replaced, and the same values come as ``LORASMITH_JOB_*`` environment variables. It runs in the
background with a time limit (its output goes to the GUI's ``logs/notify.log``), for every job that ends
except memory checks and jobs cancelled before they started.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

from library.errors import UserError
from library.train.run_folder import read_status

FIELDS = ("id", "name", "kind", "status", "exit_code", "error", "step", "total", "run_dir", "url")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(FIELDS) + r")\}")
SKIPPED_KINDS = ("memory_check",)


def check_command(argv: list[str] | None) -> list[str] | None:
    """The command as given, or a UserError when it is empty or its program is not found."""
    if argv is None:
        return None
    if not argv or not argv[0].strip():
        raise UserError("--notify_command needs a program, e.g. --notify_command notify-send \"lorasmith {name}\" \"{status}\"")
    if shutil.which(argv[0]) is None:
        raise UserError(f"--notify_command: program {argv[0]!r} not found (give its full path or install it)")
    return list(argv)


def job_fields(job: dict, base_url: str = "") -> dict[str, str]:
    """The values a notification carries about an ended job (the run folder's step/total when it has one)."""
    status = read_status(job["run_dir"]) if job.get("run_dir") else {}
    value = lambda v: "" if v is None else str(v)  # noqa: E731
    return {"id": value(job["id"]), "name": value(job.get("name")), "kind": value(job.get("kind")),
            "status": value(job.get("status")), "exit_code": value(job.get("exit_code")),
            "error": value(job.get("error")).splitlines()[0] if job.get("error") else "",
            "step": value(status.get("step")), "total": value(status.get("total")), "run_dir": value(job.get("run_dir")),
            "url": f"{base_url.rstrip('/')}/runs/{job['id']}" if base_url else ""}


def expand(argv: list[str], fields: dict[str, str]) -> list[str]:
    """Each argument with its placeholders replaced (other braces, e.g. JSON, are left alone)."""
    return [_PLACEHOLDER.sub(lambda m: fields[m.group(1)], a) for a in argv]


class Notifier:
    """The runner's on_finish hook that runs the notify command for an ended job, in the background."""

    def __init__(self, argv: list[str], log_path: str | os.PathLike, base_url: str = "", timeout: float = 60.0):
        self.argv, self.log_path, self.base_url, self.timeout = list(argv), Path(log_path), base_url, timeout
        self.threads: list[threading.Thread] = []

    def __call__(self, job: dict) -> None:
        if job.get("kind") in SKIPPED_KINDS or (job.get("status") == "cancelled" and not job.get("started")):
            return
        fields = job_fields(job, self.base_url)
        env = {**os.environ, **{f"LORASMITH_JOB_{k.upper()}": v for k, v in fields.items()}}
        thread = threading.Thread(target=self._run, args=(expand(self.argv, fields), env), daemon=True,
                                  name=f"lorasmith-notify-{job['id']}")
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()

    def _run(self, argv: list[str], env: dict) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"--- {' '.join(argv)}\n")
            log.flush()
            try:
                subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                               timeout=self.timeout, start_new_session=True, check=False)
            except subprocess.TimeoutExpired:
                log.write(f"notify command still running after {self.timeout:.0f}s: stopped\n")
            except OSError as e:
                log.write(f"notify command could not start: {e}\n")

    def wait(self, timeout: float = 30.0) -> None:
        """Wait for the notifications under way (tests; a GUI shutting down)."""
        for thread in list(self.threads):
            thread.join(timeout)
