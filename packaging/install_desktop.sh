#!/usr/bin/env bash
# Add Slimscope to this user's application menu (Linux desktops following freedesktop.org): the launcher,
# its icon, and the application/x-onnx file type for *.onnx files, all under ~/.local/share.
#
#   packaging/install_desktop.sh [EXECUTABLE]   the launcher starts EXECUTABLE (e.g. dist/slimscope/slimscope);
#                                               default: the bundle this script sits in, else `slimscope`
#                                               on PATH (the pip-installed command)
#   packaging/install_desktop.sh --uninstall    remove what it installed
#
# It works from the checkout (packaging/) and from a built bundle (DIST/slimscope/desktop/, where build.sh
# copies it with the files it needs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
installed=(
  "$data/applications/slimscope.desktop"
  "$data/icons/hicolor/256x256/apps/slimscope.png"
  "$data/icons/hicolor/scalable/apps/slimscope.svg"
  "$data/mime/packages/slimscope-onnx.xml"
)

refresh_caches() {
  # Desktops read these caches; the tools are optional (a desktop rescans the folders on login anyway).
  if command -v update-mime-database >/dev/null; then update-mime-database "$data/mime" >/dev/null || true; fi
  if command -v update-desktop-database >/dev/null; then update-desktop-database "$data/applications" || true; fi
  if command -v gtk-update-icon-cache >/dev/null; then gtk-update-icon-cache -q -t "$data/icons/hicolor" || true; fi
}

if [ "${1:-}" = "--uninstall" ]; then
  rm -f "${installed[@]}"
  refresh_caches
  echo "Removed Slimscope's launcher, icon and file type from $data."
  exit 0
fi

# The icons: resources/icons/ in the checkout, beside this script in a bundle.
icons="$here/../resources/icons"
[ -f "$icons/slimscope.svg" ] || icons="$here"

if [ $# -ge 1 ]; then
  executable="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
elif [ -x "$here/../slimscope" ] && [ -d "$here/../_internal" ]; then
  executable="$(cd "$here/.." && pwd)/slimscope"
else
  executable="$(command -v slimscope || true)"
  [ -n "$executable" ] || { echo "install_desktop.sh: no 'slimscope' on PATH; give the executable to start" >&2; exit 2; }
fi
[ -x "$executable" ] || { echo "install_desktop.sh: '$executable' is not an executable file" >&2; exit 2; }
case "$executable" in
  # The Exec key quotes paths with spaces; these characters would need escaping there too.
  *\"* | *\`* | *\$* | *\\* | *%*) echo "install_desktop.sh: the path '$executable' has characters a launcher cannot hold" >&2; exit 2 ;;
esac

install -D -m 644 "$icons/slimscope.png" "$data/icons/hicolor/256x256/apps/slimscope.png"
install -D -m 644 "$icons/slimscope.svg" "$data/icons/hicolor/scalable/apps/slimscope.svg"
install -D -m 644 "$here/slimscope-mime.xml" "$data/mime/packages/slimscope-onnx.xml"
mkdir -p "$data/applications"
sed -e "s|^Exec=slimscope |Exec=\"$executable\" |" -e "s|^TryExec=.*|TryExec=$executable|" \
  "$here/slimscope.desktop" > "$data/applications/slimscope.desktop"
chmod 644 "$data/applications/slimscope.desktop"
refresh_caches
echo "Installed the Slimscope launcher (starting $executable) into $data."
