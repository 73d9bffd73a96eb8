#!/usr/bin/env bash
# Build the Slimscope app as a PyInstaller one-folder bundle from this checkout.
#
#   packaging/build.sh [OUT_DIR]      -> OUT_DIR/slimscope/slimscope (default OUT_DIR: dist/ in the checkout)
#
# Needs the test set-up of README.md (a .venv with the test extra, which brings PyInstaller); without it,
# set PYTHON to an interpreter that has Slimscope's dependencies and PyInstaller installed.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-$repo/dist}" && cd "${1:-$repo/dist}" && pwd)"

if [ -x "$repo/.venv/bin/pyinstaller" ] && [ -z "${PYTHON:-}" ]; then
  pyinstaller=("$repo/.venv/bin/pyinstaller")
else
  pyinstaller=("${PYTHON:-python3}" -m PyInstaller)
fi

# PyInstaller's intermediate files go to a private folder removed afterwards, never into the checkout.
work="$(mktemp -d "${TMPDIR:-/tmp}/slimscope-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

started=$SECONDS
"${pyinstaller[@]}" --noconfirm --clean --log-level "${PYINSTALLER_LOG_LEVEL:-WARN}" \
  --workpath "$work" --distpath "$out" "$repo/packaging/slimscope.spec"
# The desktop launcher, its icon and the installer travel with the bundle (see install_desktop.sh).
mkdir -p "$out/slimscope/desktop"
cp "$repo/packaging/slimscope.desktop" "$repo/packaging/slimscope-mime.xml" "$repo/packaging/install_desktop.sh" \
  "$repo/resources/icons/slimscope.svg" "$repo/resources/icons/slimscope.png" "$out/slimscope/desktop/"
echo "Built $out/slimscope in $((SECONDS - started)) s ($(du -sh "$out/slimscope" | cut -f1))."
