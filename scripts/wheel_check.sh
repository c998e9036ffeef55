#!/usr/bin/env bash
# Build the wheel, install it into a fresh .venv in an empty folder outside the checkout, and run the
# README's first command there exactly as written (after 'langseg data example', which writes the example
# image that a checkout has in examples/); check its three outputs. Needs scripts/setup.sh's .venv (uv).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/langseg-wheel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
uv="$repo/.venv/bin/uv"
# sdist first, then the wheel from the unpacked sdist: nothing is built inside the checkout (no stale
# build/ folder can leak removed modules into the wheel) and the sdist is checked to be complete
"$uv" build --quiet --out-dir "$tmp/dist" "$repo"
"$uv" venv --quiet --python "$repo/.venv/bin/python" "$tmp/run/.venv"
"$uv" pip install --quiet --python "$tmp/run/.venv/bin/python" -c "$repo/scripts/constraints.txt" "$tmp"/dist/langseg-*.whl
# README: '```bash' block, first command: 'bash scripts/setup.sh && .venv/bin/langseg segment ...'
command=$(sed -n '/^```bash$/,/^```$/p' README.md | grep -m1 '^bash scripts/setup.sh && ' | sed 's/^bash scripts\/setup.sh && //')
case "$command" in .venv/bin/langseg\ segment\ *) ;; *) echo "README's first command changed: $command" >&2; exit 1 ;; esac
cd "$tmp/run"
.venv/bin/python -c "import langseg, pathlib; assert (pathlib.Path(langseg.__file__).parent / 'py.typed').is_file()"
case "$(.venv/bin/python -c 'import langseg; print(langseg.__file__)')" in "$repo"/*) echo "langseg imported from the checkout" >&2; exit 1 ;; esac
.venv/bin/langseg data example > /dev/null
eval "$command"
for f in toy_scene.mask.png toy_scene.overlay.png toy_scene.json; do
  test -s "langseg-out/$f" || { echo "wheel check: langseg-out/$f missing" >&2; exit 1; }
done
echo "wheel check: $(basename "$tmp"/dist/langseg-*.whl) installed outside the checkout runs the README's first command"
