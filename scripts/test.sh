#!/usr/bin/env bash
# The README's test command: sets up .venv with the test requirements, then runs the whole suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh requirements-test.txt
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DIFFUSERS_OFFLINE=1
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
# Second invocation: the quality suite (builds the trained shapes model once per source hash, then
# trains LoRAs on it and scores what they draw; docs/quality.md). Skipped when arguments are given
# (they select a subset of the default suite); run it alone with: scripts/test.sh -m quality
if [ $# -eq 0 ]; then
  exec .venv/bin/python -m pytest -q -p no:cacheprovider -m quality tests
fi
