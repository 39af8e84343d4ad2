#!/bin/bash
# Installs uv, which builds every node's venv (cluster.yaml's setup_commands), at one release:
# PyPI's wheel of uv $UV_VERSION, checked against its SHA-256 before anything in it is used,
# its binary unpacked to ~/.local/bin/uv. Nothing downloaded is run unchecked (no installer
# script piped into sh). A uv of that release already there is kept.
set -euo pipefail
UV_VERSION=0.13.8
WHEEL=uv-${UV_VERSION}-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
URL=https://files.pythonhosted.org/packages/c5/32/52ee34636aea1ab3f8baeeae1c3599461b8cddfb379862cc72ac61b8d91c/$WHEEL
SHA256=e18a57b8b352eb7c8feb317b9f6f533c8f0ad9673fd6cf34bbe3cf1a9f6a8984
DEST=~/.local/bin

if [[ "$("$DEST/uv" --version 2>/dev/null || true)" == "uv $UV_VERSION "* ]]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/$WHEEL" "$URL"
echo "$SHA256  $tmp/$WHEEL" | sha256sum --check --quiet -
mkdir -p "$DEST"
# a wheel is a zip file; the system python3 unpacks it (no unzip on the stock images)
python3 - "$tmp/$WHEEL" "uv-${UV_VERSION}.data/scripts/uv" "$DEST/uv" <<'EOF'
import os, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, open(dest + ".new", "wb") as out:
    out.write(z.read(member))
os.chmod(dest + ".new", 0o755)
os.replace(dest + ".new", dest)
EOF
"$DEST/uv" --version
