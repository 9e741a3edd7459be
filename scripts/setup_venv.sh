#!/usr/bin/env bash
# Create .venv (once) and install what the given requirements file lists, at the exact versions of
# requirements.lock (a registry release tomorrow cannot change what the demo and the tests run on).
# Re-running is cheap: a stamp records what was installed. Usage: scripts/setup_venv.sh requirements-test.txt
set -euo pipefail
cd "$(dirname "$0")/.."
req="${1:-requirements.txt}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(basename "$req")-$(cat requirements*.txt requirements.lock setup.py | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req" -c requirements.lock 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, diffusers, transformers, accelerate, safetensors"
  .venv/bin/python -m pip check --disable-pip-version-check
  rm -f .venv/.installed-"$(basename "$req")"-*
  touch "$stamp"
fi
