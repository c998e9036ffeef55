#!/usr/bin/env bash
# Install what the browser test (tests/test_app_browser.py) needs: Debian's chromium and the
# Python playwright driver. Never downloads a browser through playwright; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
fi
if [ -x .venv/bin/python ] && ! .venv/bin/python -c "import playwright" 2>/dev/null; then
  if [ -x .venv/bin/uv ]; then
    .venv/bin/uv pip install --quiet --python .venv/bin/python "playwright>=1.45"
  else
    .venv/bin/python -m pip install --quiet "playwright>=1.45"
  fi
fi
echo "browser test: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium missing')"
