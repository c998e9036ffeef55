#!/usr/bin/env bash
# Create .venv in the checkout and install langseg with everything (training, web demo, tests).
# Safe to run again: an existing .venv is reused and only missing packages are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check uv
fi
# uv resolves and installs ~6 GB (CUDA build of torch; it runs fine on CPU) in well under a minute.
# The constraints pin the tested torch/torchvision pair inside pyproject's range.
.venv/bin/uv pip install --quiet --python .venv/bin/python -c scripts/constraints.txt -e ".[all,dev]"
echo "langseg installed in $(pwd)/.venv ($(.venv/bin/langseg --version))"
