#!/usr/bin/env bash
# Overlay legends draw labels in any script with the system's fonts (fontconfig). DejaVu covers
# Latin, Greek and Cyrillic; install a small CJK font (Droid Sans Fallback, ~4 MB) when no font on
# the machine has CJK glyphs, so that the legend tests find one. Needs apt (Debian/Ubuntu) and root;
# elsewhere it only says what is missing.
set -euo pipefail
if ! command -v fc-list >/dev/null 2>&1 || [ -z "$(fc-list ':charset=4e2d' file 2>/dev/null)" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q fontconfig fonts-dejavu-core fonts-droid-fallback >/dev/null 2>&1 || {
      apt-get update -q >/dev/null && apt-get install -y -q fontconfig fonts-dejavu-core fonts-droid-fallback >/dev/null
    }
  else
    echo "setup_fonts: no CJK font found; install one (e.g. fonts-noto-cjk) for CJK labels in legends" >&2
  fi
fi
