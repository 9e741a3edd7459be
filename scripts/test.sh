#!/usr/bin/env bash
# The README's test command: sets up .venv with the test requirements, then runs the whole suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh requirements-test.txt
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DIFFUSERS_OFFLINE=1
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
