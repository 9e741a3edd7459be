#!/usr/bin/env bash
# Try the newest versions the ranges in requirements*.txt allow, in a scratch venv, run the whole suite
# there, and rewrite requirements.lock only when it is green. Otherwise print what changed and what broke,
# and leave the lock alone. Usage: bash scripts/upgrade_deps.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"$PY" -m venv "$scratch/venv"
vpy="$scratch/venv/bin/python"
extra=()
[ -f requirements-gui.txt ] && extra=(-r requirements-gui.txt)
"$vpy" -m pip install -q --disable-pip-version-check --upgrade -r requirements-test.txt "${extra[@]}"
"$vpy" -m pip install -q --disable-pip-version-check --no-deps -e .
"$vpy" -m pip check --disable-pip-version-check
"$vpy" -m pip freeze --exclude-editable | grep -v '^lorasmith' | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/' \
  > "$scratch/new.lock"
echo "Versions that would change:"
diff <(grep -v '^#' requirements.lock | sort) <(sort "$scratch/new.lock") || true
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DIFFUSERS_OFFLINE=1 LORASMITH_LOCK_CHECK=0
if "$vpy" -m pytest -q -p no:cacheprovider "$@" tests; then
  { sed -n '/^#/p' requirements.lock; cat "$scratch/new.lock"; } > requirements.lock.tmp
  mv requirements.lock.tmp requirements.lock
  "$vpy" tools/gen_node_constraints.py  # the ComfyUI pack's tested versions follow the lock
  echo "Suite green on the newest versions: requirements.lock rewritten (review and commit it)."
else
  echo "Suite failed on the newest versions above: requirements.lock left as it was." >&2
  echo "Cap the package that broke in requirements*.txt, with a comment saying why." >&2
  exit 1
fi
