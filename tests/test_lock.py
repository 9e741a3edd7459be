"""The venv the tests run in is the one requirements.lock describes, and pip sees no broken requirement.

Why: the README's commands install from the lock so that a registry release cannot turn them red; if the
venv drifted from the lock, a green suite would prove nothing about what a fresh machine installs.
"""

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(os.environ.get("LORASMITH_LOCK_CHECK") == "0",
                                reason="scripts/upgrade_deps.sh tests newer versions than the lock on purpose")


def _lock():
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert m, f"requirements.lock: not an exact pin: {line!r}"
        pins[canonicalize_name(m[1])] = m[2]
    return pins


def _requirements(name):
    reqs = []
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            reqs += _requirements(line[3:].strip())
        else:
            reqs.append(Requirement(line))
    return reqs


def _installed(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_every_requirement_is_pinned_in_the_lock_within_its_range():
    pins = _lock()
    for req in _requirements("requirements-test.txt"):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is required but not pinned in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name]}, outside the range {req.specifier}")


def test_installed_versions_equal_the_lock():
    wrong = []
    for name, pinned in _lock().items():
        have = _installed(name)
        if have is None:
            continue  # an extra of another command (e.g. the GUI) not installed in this venv
        if have.split("+", 1)[0] != pinned.split("+", 1)[0]:
            wrong.append(f"{name}: installed {have}, lock {pinned}")
    assert not wrong, "venv differs from requirements.lock (run bash scripts/setup_venv.sh requirements-test.txt):\n" + "\n".join(wrong)


def test_pip_check_is_clean():
    out = subprocess.run([sys.executable, "-m", "pip", "check", "--disable-pip-version-check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
