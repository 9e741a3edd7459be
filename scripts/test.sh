#!/usr/bin/env bash
# The README's test command: sets up .venv with the test requirements, then runs the whole suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh requirements-test.txt
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DIFFUSERS_OFFLINE=1
# The tests run side by side, one pytest-xdist worker per core (at most 4) and one thread each: tiny models are
# small-kernel work that a second thread barely speeds up. Tests that share a base model stay in one worker
# (--dist loadgroup, xdist_group marks). Add -n 0 to run in one process (e.g. with --pdb).
workers=$(nproc); [ "$workers" -gt 4 ] && workers=4
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
run_tests() { .venv/bin/python -m pytest -q -p no:cacheprovider -n "$workers" --dist loadgroup "$@" tests; }
run_tests "$@"
# Second invocation: the quality suite (builds the trained shapes model once per source hash, then
# trains LoRAs on it and scores what they draw; docs/quality.md). Skipped when arguments are given
# (they select a subset of the default suite); run it alone with: scripts/test.sh -m quality
if [ $# -eq 0 ]; then
  run_tests -m quality
fi
