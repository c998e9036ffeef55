#!/usr/bin/env bash
# Set up .venv (if needed) and run the whole test suite, offline, on few threads.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -f scripts/setup_browser.sh ]; then bash scripts/setup_browser.sh; fi
bash scripts/setup_fonts.sh
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} MKL_NUM_THREADS=${MKL_NUM_THREADS:-2}
# lint and format are part of the suite: a tree that fails them fails CI
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# the README's first command, as written, from a wheel installed into a clean virtual environment outside
# the checkout (bundled weights and the example come from the wheel; uv's cache makes this take seconds)
bash scripts/wheel_check.sh
exec .venv/bin/python -m pytest -q "$@"
