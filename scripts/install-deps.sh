#!/usr/bin/env bash
# Installs every build and test dependency from Debian's packages.
# Idempotent: does nothing when all are present. Uses sudo when not root.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libdnnl-dev nlohmann-json3-dev libopenblas-openmp-dev
  libgtest-dev libbenchmark-dev
  libpcre2-dev libicu-dev libsentencepiece-dev
  python3 python3-venv python3-numpy python3-torch
)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "install-deps: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
