#!/usr/bin/env bash
# The README's third command: set up .venv (with the GUI's requirements) and start the web GUI on
# http://127.0.0.1:7860 for the current folder. Extra arguments go to gui.py (--port, --root, --listen, --token).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
(cd "$here" && bash scripts/setup_venv.sh requirements-gui.txt)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DIFFUSERS_OFFLINE=1
exec "$here/.venv/bin/python" "$here/gui.py" "$@"
