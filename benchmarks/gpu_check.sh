#!/usr/bin/env bash
# One prepared GPU session: the correctness checks that need CUDA and the measurements of
# docs/performance.md, within 8 minutes on one GPU; stops by itself.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]
#
# Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md (OUT_DIR: the argument, else $OUT, else
# ./gpu_check_out), both rewritten after every section, so a stopped run keeps what it measured.
# --dry-run: the same sections on the CPU with the tiny model and small sizes (CI runs it).
# Python: .venv/bin/python when there is one; else $PYTHON (default python3) with src/ on PYTHONPATH,
# after installing any wheels found in $LANGSEG_WHEELS (default .whl/) into a temporary folder, for
# a machine that has torch but lacks, e.g., open_clip_torch (see docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_check_out}
flags=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) flags+=(--dry-run) ;;
    -h | --help) sed -n 2,13p "$0"; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg" >&2; exit 2 ;;
    *) out=$arg ;;
  esac
done
if [ -x .venv/bin/python ]; then
  python=.venv/bin/python
else
  python=${PYTHON:-python3}
  wheels=${LANGSEG_WHEELS:-.whl}
  if compgen -G "$wheels/*.whl" > /dev/null; then
    site=$(mktemp -d)
    "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$site:${PYTHONPATH:-}"
  fi
  export PYTHONPATH="src:${PYTHONPATH:-}"
fi
export PYTHONUNBUFFERED=1
# 8 minutes in all: the sections share a 420 s budget (a section that would not fit is skipped);
# the timeout stops anything that overruns it
exec timeout --kill-after=10 470 "$python" benchmarks/gpu_check.py --out "$out" --budget 420 "${flags[@]}"
